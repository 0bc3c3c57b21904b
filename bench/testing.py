"""The conformance suite every registered method and dataset must pass; plugin authors can run it too.

Usage in a plugin's tests::

    import pytest
    from bench.testing import METHOD_CHECKS, check_method

    @pytest.mark.parametrize("check", METHOD_CHECKS, ids=lambda c: c.__name__)
    def test_my_method(check):
        check("my_method")

Each check raises ``AssertionError`` with a message naming the method and what broke. The checks that train
run on the tiny datasets (vectors and small images, two and three modalities) that the method's optional
``applicable(description)`` hook accepts; where it accepts none of a check's datasets, the check raises
``unittest.SkipTest`` with the method's reasons, which pytest reports as a skip.
"""

from __future__ import annotations

import dataclasses
import unittest
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data import cell_data, iterate_batches, load_dataset
from bench.errors import UsageError
from bench.hparams import field_names, resolve_hparams
from bench.loop import build_method, headline, run_cell, seed_everything, task_of
from bench.protocol import DatasetInfo, LoadedData, LossOut, ModalitySpec, SplitData, StepContext
from bench.registry import DATASETS, default_method, method_config
from bench.spec import CellSpec

__all__ = [
    "one_epoch_record",
    "DATASET_CHECKS",
    "METHOD_CHECKS",
    "TINY_DATASETS",
    "applicable_tiny_datasets",
    "check_dataset",
    "check_method",
    "tiny_spec",
]


@dataclass(frozen=True)
class _TinyDataset:
    """Small, fast, learnable: each modality shows the class through its own random prototypes."""

    info: DatasetInfo
    sizes: tuple[int, int, int] = (96, 40, 50)
    shape: tuple[int, ...] = (8,)  # (1, 8, 8) with kind "image": conv encoders, whose sequences have 2x2 positions
    kind: str = "vector"

    def available(self, data_root: Path | None) -> tuple[bool, str]:
        return True, ""

    def load(self, data_root: Path | None) -> LoadedData:
        rng = np.random.default_rng(7)
        n, c = sum(self.sizes), self.info.num_classes
        width = int(np.prod(self.shape))
        labels = rng.integers(0, c, size=n)
        inputs = {
            name: torch.from_numpy(
                (2 * rng.standard_normal((c, width))[labels] + rng.standard_normal((n, width))).astype(np.float32)
            ).reshape(n, *self.shape)
            for name in self.info.modalities
        }
        bounds = np.cumsum((0,) + self.sizes)
        y = torch.from_numpy(labels)
        splits = [SplitData({k: v[a:b] for k, v in inputs.items()}, y[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        specs = tuple(ModalitySpec(m, self.shape, self.kind) for m in self.info.modalities)
        return LoadedData(specs, splits[0], splits[2], splits[1])


def _tiny_info(name: str, modalities: tuple[str, ...]) -> DatasetInfo:
    return DatasetInfo(
        name=name,
        modalities=modalities,
        num_classes=3,
        version="1",
        license="CC0-1.0",
        citation="bench.testing",
        homepage="bench.testing",
        needs_data_root=False,
        default_epochs=2,
        default_batch_size=16,
    )


TINY_DATASETS = {
    "_tiny_2m": _TinyDataset(_tiny_info("_tiny_2m", ("a", "b"))),
    "_tiny_3m": _TinyDataset(_tiny_info("_tiny_3m", ("a", "b", "c"))),
    # Media-like modalities (conv encoders with sequences), so that methods such as cross-attention fusion,
    # which do not apply to vectors, are exercised too.
    "_tiny_2m_seq": _TinyDataset(_tiny_info("_tiny_2m_seq", ("a", "b")), shape=(1, 8, 8), kind="image"),
    "_tiny_3m_seq": _TinyDataset(_tiny_info("_tiny_3m_seq", ("a", "b", "c")), shape=(1, 8, 8), kind="image"),
}
_TWO_MODALITIES = ("_tiny_2m", "_tiny_2m_seq")
_THREE_MODALITIES = ("_tiny_3m", "_tiny_3m_seq")


def _ensure_tiny_registered() -> None:
    for name, adapter in TINY_DATASETS.items():
        if name not in DATASETS.names():
            DATASETS.register(name, adapter, origin="bench.testing")


def tiny_spec(
    method: str,
    *,
    dataset: str = "_tiny_2m",
    seed: int = 0,
    missing_rate: float = 0.0,
    epochs: int = 2,
    overrides: dict[str, Any] | None = None,
) -> CellSpec:
    """A cell on a registered tiny dataset, with the method's default (or overridden) hyperparameters."""
    _ensure_tiny_registered()
    config = method_config(method, overrides)
    return CellSpec(
        method=method,
        hparams=dataclasses.asdict(config),
        dataset=dataset,
        dataset_version="1",
        seed=seed,
        missing_rate=missing_rate,
        epochs=epochs,
        batch_size=16,
    )


def one_epoch_record(method: str, dataset: str, *, missing_rate: float = 0.25) -> dict[str, Any]:
    """The record of one default-hyperparameter epoch of ``method`` on a registered dataset (seed 0, batch 64),
    run through :func:`bench.cells.run_one` exactly as a grid cell would be."""
    import dataclasses

    from bench.cells import run_one
    from bench.registry import DATASETS, default_method

    spec = CellSpec(
        method=method,
        hparams=dataclasses.asdict(default_method(method)),
        dataset=dataset,
        dataset_version=DATASETS.get(dataset).info.version,
        seed=0,
        missing_rate=missing_rate,
        epochs=1,
        batch_size=64,
    )
    return run_one(spec, data_root=None)


def applicable_tiny_datasets(name: str, datasets: tuple[str, ...]) -> list[str]:
    """Those of ``datasets`` that method ``name`` (with its defaults) declares itself applicable to; raises
    ``unittest.SkipTest`` (a skip under pytest) with the method's reasons when there is none."""
    from bench.grid import not_applicable_reason

    _ensure_tiny_registered()
    method = default_method(name)
    reasons = {d: not_applicable_reason(method, d, None) for d in datasets}
    usable = [d for d, reason in reasons.items() if reason is None]
    if not usable:
        raise unittest.SkipTest(f"{name} does not apply to " + "; ".join(f"{d}: {r}" for d, r in reasons.items()))
    return usable


# --------------------------------------------------------------------------------------------------
# Method checks


def _adopt_untrained_stages(method: Any, model: Any, description: Any) -> None:
    """A method with ``pretrain`` stages (UMT's teachers) gets their freshly built, untrained models, so the
    checks run its real loss and prediction without training the stages first."""
    hook = getattr(method, "pretrain", None)  # optional pretrain / adopt_pretrained (bench.protocol.OptionalHooks)
    if hook is not None:
        method.adopt_pretrained(model, {name: stage.build(description) for name, stage in hook(description).items()})


def check_one_step_gives_finite_loss_and_gradients(name: str, dataset: str | None = None) -> None:
    """One training batch: every yielded loss is finite and every trainable parameter gets a gradient.

    On ``dataset``, or else on every two-modality tiny dataset the method applies to (vectors, images)."""
    for usable in applicable_tiny_datasets(name, (dataset,) if dataset else _TWO_MODALITIES):
        _check_one_step(name, usable)


def _check_one_step(name: str, dataset: str) -> None:
    spec = tiny_spec(name, dataset=dataset)
    method = build_method(spec)
    data = cell_data(spec, data_root=None, zero_fill=type(method).zero_fill_missing, device=torch.device("cpu"))
    seed_everything(0)
    model = method.build(data.description)
    _adopt_untrained_stages(method, model, data.description)
    model.train()
    batch = next(iterate_batches(data.train, 16, generator=torch.Generator().manual_seed(0)))
    ctx = StepContext(epoch=0, num_epochs=1, batch_index=0, batches_per_epoch=1, global_step=0)
    out = method.loss(model, batch, ctx)
    outs = out if not isinstance(out, LossOut) else iter([out])
    touched: set[str] = set()
    for stage in outs:
        assert isinstance(stage, LossOut), f"{name}: loss must give LossOut, got {type(stage).__name__}"
        assert torch.isfinite(stage.loss).all(), f"{name}: non-finite loss {stage.loss}"
        model.zero_grad(set_to_none=True)
        stage.loss.backward()
        if hasattr(method, "after_backward"):  # optional hook after_backward(model, out, ctx)
            method.after_backward(model, stage, ctx)
        touched |= {n for n, p in model.named_parameters() if p.grad is not None and torch.isfinite(p.grad).all()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(trainable - touched)
    assert not missing, f"{name}: no finite gradient reached {missing}"


def check_three_modalities(name: str) -> None:
    for usable in applicable_tiny_datasets(name, _THREE_MODALITIES):
        _check_one_step(name, usable)


def _check_classification_prediction(name: str, pred: Any, rows: int, num_classes: int) -> None:
    for label, logits in {"logits": pred.logits, **(pred.per_modality or {})}.items():
        assert logits is not None and tuple(logits.shape) == (rows, num_classes), (
            f"{name}: {label} must be ({rows}, {num_classes}), got {None if logits is None else tuple(logits.shape)}"
        )
        assert torch.isfinite(logits).all(), f"{name}: non-finite {label}"


def _check_retrieval_prediction(name: str, pred: Any, rows: int, num_classes: int) -> None:
    embeddings = pred.embeddings or {}
    assert len(embeddings) >= 2, (
        f"{name}: a retrieval method must embed at least two modalities, got {list(embeddings)}"
    )
    for modality, z in embeddings.items():
        assert z.dim() == 2 and z.shape[0] == rows, (
            f"{name}: {modality} embeddings must be ({rows}, d), got {tuple(z.shape)}"
        )
        assert torch.isfinite(z).all(), f"{name}: non-finite {modality} embeddings"
        norms = z.float().norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4), (
            f"{name}: {modality} embeddings are not L2-normalised"
        )


#: task kind (``MethodConfig.task``) -> what ``predict`` must give for a batch of ``rows`` samples.
_PREDICTION_CHECKS = {"classification": _check_classification_prediction, "retrieval": _check_retrieval_prediction}


def check_prediction_fits_task(name: str) -> None:
    """``predict`` on a whole batch gives what the method's task needs: finite (B, C) logits (fused and
    per modality) for classification; finite, L2-normalised (B, d) embeddings of two or more modalities for
    retrieval."""
    spec = tiny_spec(name, dataset=applicable_tiny_datasets(name, _TWO_MODALITIES)[0])
    method = build_method(spec)
    task_of(method)  # an unknown task kind fails here, with its one-line error
    kind = getattr(type(method), "task", "classification")  # optional class attribute task
    data = cell_data(spec, data_root=None, zero_fill=type(method).zero_fill_missing, device=torch.device("cpu"))
    seed_everything(0)
    model = method.build(data.description)
    _adopt_untrained_stages(method, model, data.description)
    model.eval()
    batch = next(iterate_batches(data.val, 16))
    with torch.no_grad():
        pred = method.predict(model, batch)
    _PREDICTION_CHECKS[kind](name, pred, len(batch), data.description.num_classes)


def check_same_seed_same_record(name: str) -> None:
    spec = tiny_spec(name, dataset=applicable_tiny_datasets(name, _TWO_MODALITIES)[0], missing_rate=0.3)
    first, second = run_cell(spec), run_cell(spec)
    assert first["metrics"] == second["metrics"], f"{name}: same seed gave {first['metrics']} then {second['metrics']}"


def check_high_missing_rate_runs(name: str) -> None:
    for dataset in applicable_tiny_datasets(name, tuple(TINY_DATASETS)):
        result = run_cell(tiny_spec(name, dataset=dataset, missing_rate=0.9, epochs=1))
        score_name, score = headline(result["metrics"])  # accuracy, or mean Recall@1 for retrieval methods
        assert 0.0 <= score <= 1.0, f"{name}: {score_name} {score}"


class _RecordingTrial:
    """Answers Optuna's suggest_* calls with the low end of each range and records the names."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        self.names.append(name)
        return low

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        self.names.append(name)
        return low

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        self.names.append(name)
        return list(choices)[0]


def check_search_space_suggests_fields(name: str) -> None:
    default = default_method(name)
    trial = _RecordingTrial()
    params = type(default).search_space(trial)
    unknown = sorted(set(params) - set(field_names(type(default))))
    assert not unknown, f"{name}: search_space suggests {unknown}, which are not fields of {type(default).__name__}"
    assert params, f"{name}: search_space suggests nothing"
    resolve_hparams(default, params)  # every suggested point must be a valid configuration


def check_bad_hparams_are_clear_errors(name: str) -> None:
    default = default_method(name)
    for bad in ({"lr": -1.0}, {"lr": "fast"}, {"no_such_field": 1}):
        try:
            resolve_hparams(default, bad)
        except UsageError as exc:
            message = str(exc)
            assert "\n" not in message and next(iter(bad)) in message, f"{name}: unclear error {message!r}"
        else:
            raise AssertionError(f"{name}: {bad} was accepted")


def check_config_round_trips(name: str) -> None:
    default = default_method(name)
    again = resolve_hparams(default, dataclasses.asdict(default))
    assert again == default, f"{name}: asdict/replace does not round-trip"
    hash(default)  # frozen


def check_follows_the_contract(name: str) -> None:
    """The method has every required member of :class:`bench.protocol.Method`, and each optional hook it
    defines has the declared arity (:func:`bench.protocol.method_contract_problems`)."""
    from bench.protocol import method_contract_problems

    problems = method_contract_problems(default_method(name))
    assert not problems, f"{name}: " + "; ".join(problems)


METHOD_CHECKS = (
    check_follows_the_contract,
    check_one_step_gives_finite_loss_and_gradients,
    check_three_modalities,
    check_prediction_fits_task,
    check_same_seed_same_record,
    check_high_missing_rate_runs,
    check_search_space_suggests_fields,
    check_bad_hparams_are_clear_errors,
    check_config_round_trips,
)


def check_method(name: str) -> None:
    """Run every method check on the registered method ``name``."""
    for check in METHOD_CHECKS:
        check(name)


# --------------------------------------------------------------------------------------------------
# Dataset checks


def check_dataset_metadata(name: str, data_root: Path | None = None) -> None:
    adapter = DATASETS.get(name)
    assert isinstance(adapter.info, DatasetInfo), f"{name}: info must be a DatasetInfo"
    assert adapter.info.name == name, f"{name}: registered as {name!r} but info.name is {adapter.info.name!r}"
    ok, why = adapter.available(data_root)
    assert isinstance(ok, bool) and (ok or why), f"{name}: unavailable without saying why"


def check_dataset_loads(name: str, data_root: Path | None = None) -> None:
    """Shapes, label range and modality order agree with the metadata (skipped when data is absent)."""
    adapter = DATASETS.get(name)
    ok, _ = adapter.available(data_root)
    if not ok:
        return
    data = load_dataset(name, data_root)
    info = adapter.info
    assert tuple(m.name for m in data.modalities) == info.modalities, f"{name}: modality order differs from info"
    for split_name, split in (("train", data.train), ("val", data.val), ("test", data.test)):
        if split is None:
            continue
        assert len(split) > 0, f"{name}: empty {split_name} split"
        assert split.labels.dtype == torch.int64, f"{name}: {split_name} labels must be int64"
        low, high = int(split.labels.min()), int(split.labels.max())
        assert 0 <= low and high < info.num_classes, f"{name}: {split_name} labels in {low}..{high}"
        for spec in data.modalities:
            shape = tuple(split.inputs[spec.name].shape[1:])
            assert shape == spec.shape, f"{name}: {spec.name} has shape {shape}, declared {spec.shape}"


def check_dataset_describes(name: str, data_root: Path | None = None) -> None:
    """An adapter's optional ``describe(data_root)`` (bench.protocol.DatasetAdapter) tells what ``load`` gives:
    the same modalities, training label counts and shipped validation split (skipped when data is absent, the
    adapter has no ``describe`` or it returns None)."""
    from bench.data import label_counts

    adapter = DATASETS.get(name)
    describe = getattr(adapter, "describe", None)
    if describe is None or not adapter.available(data_root)[0]:
        return
    summary = describe(data_root)
    if summary is None:
        return
    data = load_dataset(name, data_root)
    assert summary.modalities == data.modalities, f"{name}: describe() gives other modalities than load()"
    assert summary.shipped_val == (data.val is not None), f"{name}: describe() is wrong about the validation split"
    counts = label_counts(data.train.labels.numpy())
    assert summary.train_label_counts == counts, f"{name}: describe() gives other training label counts"


DATASET_CHECKS = (check_dataset_metadata, check_dataset_loads, check_dataset_describes)


def check_dataset(name: str, data_root: Path | None = None) -> None:
    for check in DATASET_CHECKS:
        check(name, data_root)
