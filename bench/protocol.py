"""The two plugin contracts: what a method and a dataset adapter provide, and what the loop hands them.

A *method* is a frozen dataclass of hyperparameters (see :class:`bench.hparams.MethodConfig`) with
these hooks, each called by the one training loop in :mod:`bench.loop`:

``build(description) -> nn.Module``
    Once per cell, from the dataset's description (modalities, shapes, classes, training-set size).
``loss(model, batch, ctx) -> LossOut | Iterator[LossOut]``
    Every training batch. A plain return is one optimizer step. A *generator* is one optimizer step per
    yielded ``LossOut``: the loop runs backward, ``after_backward`` and ``optimizer.step()`` before it
    resumes the generator, so the next loss sees the updated weights (MLA's alternating unimodal steps).
``after_backward(model, out, ctx) -> None`` (optional)
    After ``loss.backward()`` and before ``optimizer.step()``: the place to rewrite gradients
    (OGM-GE's modulation, MLA's head-gradient projection). ``out`` is the ``LossOut`` just backpropagated.
``start_epoch(model, epoch) -> None`` (optional)
    Before each epoch's training, epoch 0 included, with the model in eval mode and no gradients;
    ``epoch`` is an :class:`EpochContext` whose ``batches("train")`` iterates the training split unshuffled
    (PMR's class prototypes). A method with a field ``holdout_fraction`` > 0 trains on the rest of the
    training split: the loop carves that fraction of it (stratified, seeded with the cell seed, masks kept)
    and only ``batches("holdout")`` sees it (G-Blending's overfitting-to-generalization ratio). The
    validation and test splits are never handed to a hook.
``resample(model, epoch) -> (rows, keep) | None`` (optional)
    After ``start_epoch``, same arguments and mode: the samples this epoch trains on instead of the training
    split. ``rows`` (R,) int64 are positions in the training split (repeats allowed), ``keep`` (R, M) bool
    says which modalities each of them keeps: a removed modality is treated as missing (mask False, input
    zero-filled). None trains on the training split unchanged. ``batch.index`` of such an epoch is the
    position in the resampled list. (Modality valuation's re-sampling of low-contribution modalities.)
``pretrain(description) -> Mapping[str, Method]`` and ``adopt_pretrained(model, models)`` (optional, together)
    Methods the loop trains first, one after the other, each exactly as a cell of its own would be on this
    cell's data and budget (same seed, epochs, batch size, patience, selection on validation, its own
    hooks); their selected models, by name, go to ``adopt_pretrained`` right after this method's
    ``build`` and before its optimizer is made (UMT's uni-modal teachers). Parameters frozen there stay
    out of the optimizer. The record notes each stage's selected epoch and validation score under
    ``notes["pretrained"]``, and its training time counts in ``train_seconds``.
``no_weight_decay(model) -> Iterable[str]`` (optional)
    Once, when the optimizer is made: names (as in ``model.named_parameters()``) of trainable parameters
    that take no weight decay; the loop puts them in a parameter group with ``weight_decay=0`` (CLIP's and
    ImageBind's learnable temperatures, as open_clip does). Without the hook, or with no names, the
    optimizer is built exactly as before (one group); a name that is not a trainable parameter fails the cell.
``legacy_hparams`` (optional class attribute, a mapping field -> value)
    A stored spec lists every field, so a field missing from it was added later: ``build_method`` gives it
    this value instead of the default, the behaviour records made before the field existed had. A new
    default then reaches new cells while ``bench verify`` re-runs committed records as they were made.
``predict(model, batch) -> Prediction``
    Evaluation: fused logits plus, where the method can split its model per modality, one logit tensor
    per modality (the "audio/visual" columns of the papers). Methods whose class attribute ``task`` is
    ``"retrieval"`` give ``embeddings`` instead (one L2-normalised tensor per modality; :mod:`bench.retrieval`).
``search_space(trial) -> dict`` (static)
    Optuna define-by-run suggestions over the dataclass's own fields.
``applicable(description) -> str | None`` (optional)
    None when the method (with these hyperparameters) can run on the described data, else a one-line
    reason (e.g. cross-attention fusion on modalities without sequences). The grid skips such cells with
    one note per (method, dataset) instead of failing, ``bench validate`` reports them the same way, and
    the conformance suite skips those tiny datasets. Without the hook a method applies everywhere.

A *dataset adapter* has an ``info`` (:class:`DatasetInfo`), ``available(data_root)`` and
``load(data_root) -> LoadedData``; adapters of media data may add ``status(data_root)`` (missing / raw
found / prepared, shown by ``bench data``) and ``prepare(data_root, progress)`` (decode once into the cache
of :mod:`bench.cache`, run by ``bench data prepare``). Methods and datasets never import each other; they meet in a cell
through :class:`DataDescription`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

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
    "Prediction",
    "SplitData",
    "StepContext",
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
    """The required hooks (see the module docstring). Optional ones, looked up with ``getattr``:
    ``after_backward(model, out, ctx)`` and ``applicable(description) -> str | None`` (None = the method
    runs on this data; else a one-line reason, and the grid skips its cells there with a note)."""

    def build(self, description: DataDescription) -> nn.Module: ...

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut | Iterator[LossOut]: ...

    def predict(self, model: nn.Module, batch: Batch) -> Prediction: ...

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]: ...


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
    """

    info: DatasetInfo

    def available(self, data_root: Path | None) -> tuple[bool, str]:
        """(True, "") when ``load`` can run; otherwise (False, what is missing and where to get it)."""
        ...

    def load(self, data_root: Path | None) -> LoadedData: ...
