"""Files a cell keeps next to its record on request, and evaluation of saved models without retraining.

* ``run --save-models``: the selected weights (the ``state_dict`` of the best validation epoch, the one the
  test metrics were computed with), ``<key>.model.<sha256[:16]>.pt`` beside ``<key>.json``; the record's
  ``artifacts.model`` gives the file name and its full sha256, which :func:`load_model` checks before
  unpickling anything (``torch.load(weights_only=True)``).
* ``run --log-samples``: the test predictions, ``<key>.samples.npz``: per test sample its ``index`` (position
  in the test split), ``label``, ``predicted`` and ``confidence`` (the fused softmax's largest probability)
  and, where the method splits its model per modality, ``predicted.<modality>`` and ``confidence.<modality>``;
  with test-time noise, the same per level under ``noise.<level>.`` (``noise.10.predicted``...). The record's
  ``artifacts.samples`` has its name and sha256.
* ``bench eval``: a saved model scored at other test-time missing rates or noise, without training; the new
  record names its source (``evaluated_from``), see :func:`evaluate_saved`.

None of this changes a record made without these options. docs/records.md describes the fields.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import UsageError
from bench.record import Record
from bench.spec import CellSpec
from bench.store import atomic_write_bytes, new_record, record_path

__all__ = ["CellOutputs", "evaluate_saved", "has_outputs", "load_model", "model_state_bytes", "sample_arrays"]


@dataclass(frozen=True)
class CellOutputs:
    """What ``run`` keeps beside each record besides the record itself (picklable: sent to ``--jobs`` workers)."""

    save_model: bool = False
    log_samples: bool = False
    loggers: tuple[str, ...] = ()  # names in the bench.loggers entry-point group (bench.loggers)

    def __bool__(self) -> bool:
        return self.save_model or self.log_samples or bool(self.loggers)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_state_bytes(model: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({name: value.detach().cpu() for name, value in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def _write(results_dir: Path, spec: CellSpec, suffix: str, data: bytes, *, content_addressed: bool) -> dict[str, str]:
    digest = _sha256(data)
    folder = record_path(results_dir, spec).parent
    name = f"{spec.key}.{suffix}.{digest[:16]}.pt" if content_addressed else f"{spec.key}.{suffix}"
    atomic_write_bytes(folder / name, data)
    return {"file": name, "sha256": digest}


def _verified_bytes(results_dir: Path, record: Mapping[str, Any], what: str) -> bytes:
    entry = (record.get("artifacts") or {}).get(what)
    if not entry:
        raise UsageError(
            f"record {record['key']} has no saved {what}; re-run its cell with "
            f"run --{'save-models' if what == 'model' else 'log-samples'} --overwrite"
        )
    spec = CellSpec.from_dict(record["spec"])
    path = record_path(results_dir, spec).parent / entry["file"]
    try:
        data = path.read_bytes()
    except OSError:
        raise UsageError(
            f"{path} (the saved {what} of record {record['key']}) is missing; re-run the cell with "
            f"run --{'save-models' if what == 'model' else 'log-samples'} --overwrite"
        ) from None
    if _sha256(data) != entry["sha256"]:
        raise UsageError(
            f"{path} does not match the sha256 its record names (damaged or replaced); re-run the "
            "cell with --overwrite to save it again"
        )
    return data


def has_outputs(results_dir: Path, record: Mapping[str, Any], outputs: CellOutputs) -> bool:
    """Whether a valid record already has the files ``outputs`` asks for (else the cell is run again)."""
    record = Record.of(record)
    if not record.ok:
        return True  # a failed cell has nothing to save; it is not retried for that
    wanted = [name for name, on in (("model", outputs.save_model), ("samples", outputs.log_samples)) if on]
    for what in wanted:
        if what == "samples" and record.is_retrieval:
            continue  # retrieval methods predict embeddings, not classes: no per-sample file
        try:
            _verified_bytes(results_dir, record, what)
        except UsageError:
            return False
    return True


def load_model(results_dir: Path, record: Mapping[str, Any]) -> dict[str, Any]:
    """The saved ``state_dict`` of a record, after checking the file's sha256 against the record."""
    import torch

    data = _verified_bytes(results_dir, record, "model")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def sample_arrays(method: Any, model: Any, split: Any, autocast: Any) -> dict[str, np.ndarray]:
    """Per-sample predictions of ``model`` on a masked split: index, label, predicted class and confidence,
    fused and per modality (see the module docstring)."""
    import torch

    from bench.data import iterate_batches
    from bench.loop import EVAL_BATCH_SIZE

    model.eval()
    parts: dict[str, list[np.ndarray]] = {}

    def add(suffix: str, logits: torch.Tensor) -> None:
        probabilities = torch.softmax(logits.float(), dim=1)
        confidence, predicted = probabilities.max(dim=1)
        parts.setdefault(f"predicted{suffix}", []).append(predicted.cpu().numpy().astype(np.int64))
        parts.setdefault(f"confidence{suffix}", []).append(confidence.cpu().numpy().astype(np.float32))

    with torch.no_grad(), autocast():
        for batch in iterate_batches(split, EVAL_BATCH_SIZE):
            pred = method.predict(model, batch)
            parts.setdefault("index", []).append(batch.index.cpu().numpy().astype(np.int64))
            parts.setdefault("label", []).append(batch.label.cpu().numpy().astype(np.int64))
            add("", pred.logits)
            for name, logits in (pred.per_modality or {}).items():
                add(f".{name}", logits)
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def save_outputs(
    results_dir: Path,
    spec: CellSpec,
    outputs: CellOutputs,
    method: Any,
    model: Any,
    data: Any,
    autocast: Any,
    whole_train: Any,
) -> dict[str, Any]:
    """Write what ``outputs`` asks for; returns the record's ``artifacts`` field (``whole_train``: the noise
    scale's source, as in bench.loop)."""
    from bench.loop import task_of

    artifacts: dict[str, Any] = {}
    if outputs.save_model:
        artifacts["model"] = _write(results_dir, spec, "model", model_state_bytes(model), content_addressed=True)
    if outputs.log_samples and task_of(method).selection_key == "best_val_accuracy":
        arrays = sample_arrays(method, model, data.test, autocast)
        for level, split in noisy_test_splits(data, spec, whole_train).items():
            arrays.update(
                {
                    f"noise.{level}.{k}": v
                    for k, v in sample_arrays(method, model, split, autocast).items()
                    if k not in ("index", "label")
                }
            )
        artifacts["samples"] = _write(results_dir, spec, "samples.npz", _npz(arrays), content_addressed=False)
    return artifacts


def noisy_test_splits(data: Any, spec: CellSpec, whole_train: Any) -> dict[str, Any]:
    """The corrupted test splits of a cell with noise, level -> split, drawn as bench.loop draws them."""
    from bench.data import MaskedSplit
    from bench.noise import corrupt, training_stats

    if spec.noise == "none":
        return {}
    kinds = {m.name: m.kind for m in data.description.modalities}
    stats = training_stats(whole_train, kinds)
    test = data.test.resident()
    return {
        f"{level:g}": MaskedSplit(
            corrupt(test.inputs, test.mask, kinds, stats, kind=spec.noise, level=level, seed=spec.seed, split="test"),
            test.labels,
            test.mask,
        )
        for level in spec.noise_levels
    }


# --------------------------------------------------------------------------------------------------
# bench eval


def evaluation_spec(
    source: Mapping[str, Any], missing_rate: float, noise: str, noise_levels: tuple[float, ...]
) -> CellSpec:
    """The spec of an evaluation record: the source cell's, with the test-time missing rate and noise asked
    for, and ``extra.evaluated_from`` = the source key (so it never shares a key with a trained cell)."""
    spec = CellSpec.from_dict(source["spec"])
    return dataclasses.replace(
        spec,
        missing_rate=float(missing_rate),
        noise=noise,
        noise_levels=tuple(noise_levels),
        extra={**spec.extra, "evaluated_from": source["key"]},
    )


def evaluate_saved(
    results_dir: Path,
    source: Mapping[str, Any],
    missing_rate: float,
    noise: str,
    noise_levels: tuple[float, ...],
    *,
    data_root: Path | None,
    device: str | None = None,
    outputs: CellOutputs | None = None,
) -> Record:
    """Score the saved model of ``source`` on the test split masked at ``missing_rate`` (and corrupted with
    ``noise`` at each level) without training; returns the new record (not yet written).

    The model is rebuilt from the source spec exactly as the run built it (same data description, holdout
    carved for methods that have one) and the saved weights are loaded; the test split is masked with the
    masks every trained cell of that rate uses. The training split (and so the noise statistics) is the
    source cell's. At the source's own rate and noise the metrics equal the source record's.
    """
    import torch

    from bench.cells import dataset_notes, environment
    from bench.data import cell_data
    from bench.loop import (
        _carve_holdout,
        _noisy_test_scores,
        autocast_for,
        build_method,
        choose_device,
        seed_everything,
        task_of,
    )

    state = load_model(results_dir, source)
    trained = CellSpec.from_dict(source["spec"])
    spec = evaluation_spec(source, missing_rate, noise, noise_levels)
    method = build_method(trained)
    task = task_of(method)
    dev = choose_device(device)
    zero_fill = type(method).zero_fill_missing
    data = cell_data(trained, data_root=data_root, zero_fill=zero_fill, device=dev)
    whole_train = data.train
    data, _ = _carve_holdout(method, data, trained.seed)
    tested = cell_data(spec, data_root=data_root, zero_fill=zero_fill, device=dev)
    data = dataclasses.replace(data, test=tested.test)
    seed_everything(trained.seed)
    model = method.build(data.description).to(dev)
    stages = getattr(method, "pretrain", None)
    if stages is not None:  # the structure the run trained: the stages' models adopted, then the saved weights
        method.adopt_pretrained(
            model, {name: stage.build(data.description).to(dev) for name, stage in stages(data.description).items()}
        )
    model.load_state_dict(state)
    autocast = autocast_for(trained.precision, dev)
    started = time.perf_counter()
    scores = task.evaluate(method, model, data.test, data.description.num_classes, autocast)
    kept = {k: source["metrics"][k] for k in (task.selection_key, "selected_epoch", "epochs_run")}
    metrics = {**task.record_metrics(scores), **kept, "num_test_samples": scores.count}
    if spec.noise != "none":
        metrics["noise"] = _noisy_test_scores(method, model, data, spec, autocast, task, whole_train)
    timings = {"train_seconds": 0.0, "test_seconds": round(time.perf_counter() - started, 3)}
    notes = {
        **source["notes"],
        "missing_fraction_test": tested.notes["missing_fraction_test"],
        "device": str(dev),
        "threads": torch.get_num_threads(),
        **dataset_notes(spec),
    }
    artifacts = None
    if outputs is not None and outputs.log_samples:
        artifacts = save_outputs(
            results_dir, spec, CellOutputs(log_samples=True), method, model, data, autocast, whole_train
        )
    evaluated_from = {
        "key": source["key"],
        "missing_rate": trained.missing_rate,
        "noise": trained.noise,
        "noise_levels": list(trained.noise_levels),
        "model_sha256": source["artifacts"]["model"]["sha256"],
    }
    return new_record(
        spec,
        status="ok",
        metrics=metrics,
        timings=timings,
        notes=notes,
        history=[],
        evaluated_from=evaluated_from,
        artifacts=artifacts,
        environment=environment(),
    )
