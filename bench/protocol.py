"""The two plugin contracts: what a method and a dataset adapter provide, and what the harness hands them.

A *method* is a frozen dataclass of hyperparameters, in practice a subclass of
:class:`bench.hparams.MethodConfig` (the shared optimisation fields and the defaults of the optional class
attributes). Its whole contract is declared here, once:

* :class:`Method`: the members every method has (``build``, ``loss``, ``predict``, ``search_space``, the
  optimiser fields and ``zero_fill_missing``). It is ``runtime_checkable``, so ``isinstance(m, Method)``
  tells whether ``m`` has them all.
* :class:`OptionalHooks`: every hook and class attribute the harness looks up with ``getattr`` (a method
  defines none, some or all of them), each with its signature, when the harness calls it and what it must
  return.
* :func:`method_contract_problems`: what the conformance suite (tests/test_conformance.py) reports for a
  method that misses a required member or defines an optional hook with the wrong arity.

Every hook is called by the one training loop, :mod:`bench.loop`, where a one-line comment names it at its
call site; ``applicable`` is also asked by the grid (:mod:`bench.grid`) and ``bench validate``, and
``pretrain``, ``adopt_pretrained`` and ``per_modality_trained_alone`` also by the record's assembly
(:mod:`bench.cells`, :mod:`bench.artifacts`). A method never sees the validation or test split; it sees
batches, :class:`StepContext` and, in the epoch hooks, :class:`EpochContext`.

A *dataset adapter* has an ``info`` (:class:`DatasetInfo`), ``available(data_root)`` and
``load(data_root) -> LoadedData``; adapters of media data may add ``status(data_root)`` (missing / raw
found / prepared, shown by ``bench data``) and ``prepare(data_root, progress)`` (decode once into the cache
of :mod:`bench.media`, run by ``bench data prepare``). Methods and datasets never import each other; they
meet in a cell through :class:`DataDescription`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = [
    "Batch",
    "DataDescription",
    "DatasetAdapter",
    "DatasetInfo",
    "EpochContext",
    "LoadedData",
    "LossOut",
    "Method",
    "ModalitySpec",
    "OptionalHooks",
    "Prediction",
    "SplitData",
    "StepContext",
    "method_contract_problems",
]


@dataclass(frozen=True)
class ModalitySpec:
    """One modality as the model sees it: a name, the shape of one sample and a kind.

    ``kind`` chooses the default encoder (``"vector"`` -> MLP); adapters of media data use
    ``"spectrogram"``, ``"frames"`` or ``"tokens"``.
    """

    name: str
    shape: tuple[int, ...]
    kind: str = "vector"


@dataclass(frozen=True)
class DataDescription:
    """What ``Method.build`` may know about the data of a cell."""

    modalities: tuple[ModalitySpec, ...]
    num_classes: int
    num_train: int

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)


@dataclass(frozen=True)
class Batch:
    """A mini-batch. ``inputs`` are ordered as the dataset's modalities.

    ``mask[i, m]`` is True when modality ``m`` of sample ``i`` is present. Missing inputs have already
    been zero-filled by the loop (unless the method sets ``zero_fill_missing = False``).
    ``index`` holds each sample's position in its split (QMF keeps per-sample training history).
    """

    inputs: Mapping[str, torch.Tensor]
    label: torch.Tensor
    index: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.label.shape[0])


@dataclass(frozen=True)
class StepContext:
    """Where in training a step happens."""

    epoch: int
    num_epochs: int
    batch_index: int
    batches_per_epoch: int
    global_step: int


@dataclass(frozen=True)
class EpochContext:
    """What ``start_epoch`` gets: the epoch about to train, and ``batches(name)``, unshuffled batches of
    ``"train"`` or, for methods with ``holdout_fraction``, of the held-out ``"holdout"`` part of train."""

    epoch: int
    num_epochs: int
    batches: Callable[[str], Iterator[Batch]]


@dataclass
class LossOut:
    """A loss to backpropagate, and anything the method's ``after_backward`` wants from the forward."""

    loss: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prediction:
    """Fused logits (B, C) and, where defined, per-modality logits of the same jointly trained model.

    Retrieval methods leave ``logits`` None and give ``embeddings``: per modality a (B, d) tensor,
    L2-normalised, row i of every modality being sample i of the batch."""

    logits: torch.Tensor | None
    per_modality: dict[str, torch.Tensor] | None = None
    embeddings: dict[str, torch.Tensor] | None = None


@runtime_checkable
class Method(Protocol):
    """The members every method has; :class:`bench.hparams.MethodConfig` supplies the data members.

    ``isinstance(method, Method)`` checks that each is present (not its signature: see
    :func:`method_contract_problems`). The optional hooks are :class:`OptionalHooks`.
    """

    #: Optimiser fields read by the loop when it makes the optimiser and the StepLR schedule (``bench.loop``):
    #: ``optimizer`` is ``"sgd"`` (with ``momentum``), ``"adam"`` or ``"adamw"``.
    lr: float
    weight_decay: float
    momentum: float
    optimizer: str
    lr_step: int
    lr_gamma: float
    #: Class attribute: True when the loop zero-fills the inputs of missing modalities before the method sees
    #: a batch (``Batch.mask`` says which are missing either way); False hands the inputs over as loaded.
    zero_fill_missing: ClassVar[bool]

    def build(self, description: DataDescription) -> nn.Module:
        """Once per cell (and once per ``pretrain`` stage), right after seeding with the cell seed: the model,
        from the dataset's description (modalities, shapes, classes, training-set size)."""
        ...

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut | Iterator[LossOut]:
        """Every training batch, in train mode, forward under the cell's autocast. A plain return is one
        optimiser step. A *generator* is one optimiser step per yielded ``LossOut``: the loop runs backward,
        ``after_backward`` and ``optimizer.step()`` before it resumes the generator, so the next loss sees
        the updated weights (MLA's alternating unimodal steps). A non-finite loss fails the cell."""
        ...

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        """Evaluation of every validation and test batch, in eval mode without gradients: fused logits
        plus, where the method can split its model per modality, one logit tensor per modality (the
        "audio/visual" columns of the papers). A method whose ``task`` is ``"retrieval"`` gives
        ``embeddings`` instead (one L2-normalised tensor per modality; :mod:`bench.retrieval`)."""
        ...

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Called on the class by ``bench tune``, once per Optuna trial: field -> suggested value, drawn
        with the trial's ``suggest_*`` calls (define-by-run) over the dataclass's own fields. A static
        method with one argument serves as well. :class:`bench.hparams.MethodConfig` gives lr and weight
        decay plus the fields of its ``searched`` class attribute."""
        ...


class OptionalHooks(Protocol):
    """Every optional member of a method, looked up by the harness with ``getattr`` (or with a default).

    A method defines only the ones it needs; without one, the harness behaves as the docstring of each says.
    Not ``runtime_checkable`` as a whole (no method has them all); :func:`method_contract_problems` checks the
    arity of each one a method defines against the signature declared here.
    """

    #: ``"classification"`` (``predict`` gives logits; accuracy selects the epoch) or ``"retrieval"``
    #: (``predict`` gives embeddings; mean Recall@1 selects it). Read by the loop (``bench.loop.TASKS``), the
    #: registry's task families and ``bench ls``. Default ``"classification"``.
    task: ClassVar[str]
    #: A field in (0, 1): the loop carves that fraction of the training split (stratified, seeded with the
    #: cell seed, masks kept) before training; the model trains on the rest and only ``batches("holdout")``
    #: of the epoch hooks sees it (G-Blending's overfitting-to-generalization ratio). Default 0: no hold-out.
    holdout_fraction: float
    #: Field -> value for fields added after records were made: a stored spec lists every field, so a field
    #: missing from it takes this value in ``bench.loop.build_method`` instead of its default (the behaviour
    #: of the records made before the field existed; ``bench verify`` re-runs them as they were made).
    legacy_hparams: ClassVar[Mapping[str, Any]]
    #: True when the per-modality columns are modalities *trained alone* (the unimodal baselines): the cell
    #: notes it in ``notes["per_modality_trained_alone"]`` and the tables use those columns as the reference
    #: for the same modality inside jointly trained models. Default False.
    per_modality_trained_alone: ClassVar[bool]

    def applicable(self, description: DataDescription) -> str | None:
        """When the grid plans cells (and ``bench validate``): None when the method, with these
        hyperparameters, can run on the described data, else a one-line reason (cross-attention fusion on
        modalities without sequences). The grid skips such cells with one note per (method, dataset), and
        the conformance suite skips such tiny datasets. Without the hook a method applies everywhere."""
        ...

    def after_backward(self, model: nn.Module, out: LossOut, ctx: StepContext) -> None:
        """After every ``loss.backward()`` and before ``optimizer.step()``: the place to rewrite gradients
        (OGM-GE's modulation, MLA's head-gradient projection). ``out`` is the ``LossOut`` just
        backpropagated, ``out.extras`` whatever ``loss`` put there."""
        ...

    def start_epoch(self, model: nn.Module, epoch: EpochContext) -> None:
        """Before each epoch's training, epoch 0 included, with the model in eval mode, no gradients and the
        cell's autocast: ``epoch.batches("train")`` iterates the training split unshuffled (PMR's class
        prototypes), ``epoch.batches("holdout")`` the held-out part where ``holdout_fraction`` > 0. State
        the method keeps goes on the model (the method is a frozen config)."""
        ...

    def resample(self, model: nn.Module, epoch: EpochContext) -> tuple[torch.Tensor, torch.Tensor] | None:
        """After ``start_epoch``, same arguments and mode: the samples this epoch trains on instead of the
        training split. ``rows`` (R,) int64 are positions in the training split (repeats allowed), ``keep``
        (R, M) bool says which modalities each keeps: a removed modality is treated as missing (mask False,
        input zero-filled unless ``zero_fill_missing`` is False). None trains on the training split
        unchanged. ``batch.index`` in such an epoch is the position in the resampled list (modality
        valuation's re-sampling of low-contribution modalities)."""
        ...

    def pretrain(self, description: DataDescription) -> Mapping[str, Method]:
        """Before the cell's own training (and when ``bench eval`` rebuilds a saved model): name -> method
        of the stages the loop trains first, one after the other, each exactly as a cell of its own on this
        cell's data and budget (same seed, epochs, batch size, patience, selection on validation, its own
        hooks). The record notes each stage's selected epoch and validation score under
        ``notes["pretrained"]``; their training time counts in ``train_seconds`` (UMT's uni-modal teachers).
        Needs ``adopt_pretrained``."""
        ...

    def adopt_pretrained(self, model: nn.Module, models: Mapping[str, nn.Module]) -> None:
        """Right after this method's ``build`` and before its optimiser is made, with the selected models
        of the ``pretrain`` stages by name: copy or attach them into ``model``. Parameters frozen here
        (``requires_grad = False``) stay out of the optimiser."""
        ...

    def no_weight_decay(self, model: nn.Module) -> Iterable[str]:
        """Once, when the optimiser is made: names (as in ``model.named_parameters()``) of trainable
        parameters that take no weight decay; the loop puts them in a parameter group with
        ``weight_decay=0`` (CLIP's and ImageBind's learnable temperatures, as open_clip does). No names (or
        no hook) builds the optimiser as one group; a name that is not a trainable parameter fails the
        cell."""
        ...


def _declared_members(protocol: type) -> dict[str, inspect.Signature | None]:
    """Name -> the declared signature without ``self``/``cls`` (None for a data member) of a Protocol here."""
    annotated = vars(protocol).get("__annotations__", {})
    members: dict[str, inspect.Signature | None] = {name: None for name in annotated}
    for name, value in vars(protocol).items():
        function = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        if name.startswith("_") or not inspect.isfunction(function):
            continue
        parameters = list(inspect.signature(function).parameters.values())
        if not isinstance(value, staticmethod):
            parameters = parameters[1:]
        members[name] = inspect.Signature(parameters)
    return members


#: Required members: name -> declared signature (None: a data member). From :class:`Method`.
REQUIRED_MEMBERS = _declared_members(Method)
#: Optional hooks and class attributes: name -> declared signature (None: a data member). From
#: :class:`OptionalHooks`.
OPTIONAL_HOOKS = _declared_members(OptionalHooks)
#: The hooks looked up on the method's class rather than on the instance (``bench tune``).
_CALLED_ON_THE_CLASS = ("search_space",)


def _arity_problem(method: Any, name: str, declared: inspect.Signature) -> str | None:
    """None when the method's ``name`` can be called with the declared positional arguments, else why not."""
    owner = type(method) if name in _CALLED_ON_THE_CLASS else method
    hook = getattr(owner, name)
    call = f"{name}({', '.join(declared.parameters)})"
    if not callable(hook):
        return f"{type(method).__name__}.{name} must be callable as {call}, got {type(hook).__name__}"
    try:
        signature = inspect.signature(hook)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return None
    try:
        signature.bind(*declared.parameters)
    except TypeError as exc:
        return f"{type(method).__name__}.{name}{signature} cannot be called as {call} ({exc})"
    return None


def method_contract_problems(method: Any) -> list[str]:
    """What breaks the method contract, one line each (empty when the method follows it): a required member
    of :class:`Method` missing; a required or optional hook of the wrong arity; ``pretrain`` without
    ``adopt_pretrained``; an optional class attribute of the wrong type."""
    problems = [
        f"{type(method).__name__} has no {name} (required by bench.protocol.Method)"
        for name in REQUIRED_MEMBERS
        if not hasattr(method, name)
    ]
    if not problems and not isinstance(method, Method):
        problems.append(f"{type(method).__name__} is not a bench.protocol.Method")
    declared = {**REQUIRED_MEMBERS, **OPTIONAL_HOOKS}
    for name, signature in declared.items():
        if signature is not None and hasattr(method, name):
            problems.append(_arity_problem(method, name, signature))
    if hasattr(method, "pretrain") and not hasattr(method, "adopt_pretrained"):
        problems.append(f"{type(method).__name__} has pretrain but no adopt_pretrained to receive the stages")
    problems.extend(_attribute_problems(method))
    return [problem for problem in problems if problem]


def _attribute_problems(method: Any) -> list[str]:
    cls, problems = type(method), []
    for name in ("zero_fill_missing", "per_modality_trained_alone"):
        if hasattr(cls, name) and not isinstance(getattr(cls, name), bool):
            problems.append(f"{cls.__name__}.{name} must be a bool, got {getattr(cls, name)!r}")
    if hasattr(cls, "task") and not isinstance(cls.task, str):
        problems.append(f"{cls.__name__}.task must be a task name, got {cls.task!r}")
    if hasattr(cls, "legacy_hparams") and not isinstance(cls.legacy_hparams, Mapping):
        problems.append(f"{cls.__name__}.legacy_hparams must be a mapping field -> value")
    fraction = getattr(method, "holdout_fraction", 0.0)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        problems.append(f"{cls.__name__}.holdout_fraction must be a number in [0, 1), got {fraction!r}")
    return problems


# --------------------------------------------------------------------------------------------------
# Datasets


_INFO_FIELDS_REQUIRED = ("name", "modalities", "num_classes", "version", "license", "citation", "homepage")


@dataclass(frozen=True)
class DatasetInfo:
    """Static metadata every adapter declares next to its code. Unknown fields are rejected."""

    name: str
    modalities: tuple[str, ...]
    num_classes: int
    version: str
    license: str
    citation: str
    homepage: str
    description: str = ""
    splits: str = ""
    layout: str = ""
    needs_data_root: bool = True
    default_epochs: int = 20
    default_batch_size: int = 64

    def __post_init__(self) -> None:
        for name in _INFO_FIELDS_REQUIRED:
            if getattr(self, name) in ("", None, ()):
                raise ValueError(f"DatasetInfo.{name} must be set (dataset {self.name!r})")
        if self.num_classes < 2:
            raise ValueError(f"DatasetInfo.num_classes must be >= 2, got {self.num_classes}")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"DatasetInfo.modalities must be unique, got {self.modalities}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DatasetInfo:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DatasetInfo fields {unknown}; allowed: {sorted(known)}")
        return cls(**values)


@dataclass(frozen=True)
class SplitData:
    """One split held as tensors: ``inputs[modality]`` is (N, *shape), ``labels`` is (N,) int64."""

    inputs: Mapping[str, torch.Tensor]
    labels: torch.Tensor

    def __post_init__(self) -> None:
        n = int(self.labels.shape[0])
        for name, x in self.inputs.items():
            if int(x.shape[0]) != n:
                raise ValueError(f"modality {name!r} has {x.shape[0]} samples but there are {n} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, rows: torch.Tensor) -> SplitData:
        return SplitData({k: v[rows] for k, v in self.inputs.items()}, self.labels[rows])


@dataclass(frozen=True)
class LoadedData:
    """What an adapter's ``load`` returns. ``val`` is None when the dataset has no validation split;
    the harness then carves one from ``train`` (stratified, fixed seed) and records it."""

    modalities: tuple[ModalitySpec, ...]
    train: SplitData
    test: SplitData
    val: SplitData | None = None


@runtime_checkable
class DatasetAdapter(Protocol):
    """The required interface. Optional, looked up with ``getattr``:

    * ``options``: names of the adapter's dataclass fields a user may set per run with
      ``--set data.<name>=<value>`` (e.g. the imbalance knob). The grid builds the adapter with
      ``dataclasses.replace``; the adapter's ``info.version`` must then name the values, and the values go
      into each cell's spec (``extra["dataset_options"]``), so cells of two settings are never confused.
    * ``reference_notes(test, present) -> dict``: numbers known from the data's generator for the masked
      test split (``present``: (N, M) bool, modality order of ``info.modalities``), e.g.
      ``bayes_accuracy``; they go into the record's notes and the tables show them as reference rows.
    * ``describe(data_root) -> bench.data.DatasetSummary | None``: what ``load`` would give, without loading:
      the modalities (exactly ``LoadedData.modalities``), the ``{label: count}`` of the training split and
      whether a validation split is shipped (without one, the training rows left after the harness's
      carve depend on the per-class counts: :func:`bench.data.carved_train_size`). Called by
      :func:`bench.grid.dataset_description` (``bench validate`` and the methods' ``applicable`` checks)
      only after ``available`` said True; it must not decode media nor build a cache, and returns None when
      it cannot tell cheaply (the harness then loads). :class:`bench.media.PreparedDataset` provides it
      for cached adapters (from the cache's array headers, or from the split lists before preparation).
    * ``status(data_root) -> (state, detail)`` and ``prepare(data_root, progress)``: adapters with a
      prepared cache (see :class:`bench.media.PreparedDataset`); ``bench data`` and ``bench data prepare``.
    """

    info: DatasetInfo

    def available(self, data_root: Path | None) -> tuple[bool, str]:
        """(True, "") when ``load`` can run; otherwise (False, what is missing and where to get it)."""
        ...

    def load(self, data_root: Path | None) -> LoadedData: ...
