"""The one training loop. Every method of every table trains here; none has a loop of its own.

Per cell: seed everything, build the method's model, train for ``spec.epochs`` epochs with the method's
hooks, score the validation split after every epoch, keep the weights of the best *validation* epoch
(never test), then evaluate those weights once on the full test split and check the sample count.

The method's members are declared in :mod:`bench.protocol` (``Method``, the required ones, and
``OptionalHooks``); each optional hook is named by a one-line comment where it is looked up here.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import retrieval
from bench.data import CellData, MaskedSplit, batch_starts, cell_data, iterate_batches, stratified_rows
from bench.errors import CellFailure, UsageError
from bench.hparams import resolve_hparams
from bench.metrics import accuracy, macro_f1
from bench.noise import corrupt, training_stats
from bench.protocol import EpochContext, LossOut, Prediction, StepContext
from bench.registry import default_method
from bench.spec import CellSpec

__all__ = [
    "TASKS",
    "EpochCallback",
    "Task",
    "build_method",
    "choose_device",
    "evaluate",
    "headline",
    "run_cell",
    "seed_everything",
    "selection_score",
    "task_of",
]

#: Called after each epoch with (epoch, validation selection score: accuracy for classification);
#: raising stops the cell (Optuna pruning).
EpochCallback = Callable[[int, float], None]

EVAL_BATCH_SIZE = 512


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def choose_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_method(spec: CellSpec) -> Any:
    """The method's frozen config from the spec's resolved hyperparameters.

    A spec stores every field (``dataclasses.asdict``), so a field missing from it was added after the spec
    was written: it takes the value the method's ``legacy_hparams`` class attribute names for it (the
    behaviour of records made before the field existed, so that ``bench verify`` re-runs them as they were
    made), else its default."""
    default = default_method(spec.method)
    # Optional class attribute legacy_hparams: values of the fields newer than the spec.
    legacy = {k: v for k, v in getattr(type(default), "legacy_hparams", {}).items() if k not in spec.hparams}
    return resolve_hparams(default, {**legacy, **spec.hparams})


def _make_optimizer(method: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    # Optional hook no_weight_decay(model) -> names of trainable parameters that take weight_decay=0.
    no_decay = getattr(method, "no_weight_decay", None)
    excluded = set(no_decay(model)) if no_decay is not None else set()
    if excluded:  # two parameter groups; without the hook (or with no names) the optimizer is built as it always was
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        unknown = excluded - {n for n, _ in named}
        if unknown:
            raise CellFailure(
                f"{type(method).__name__}.no_weight_decay names {sorted(unknown)}, which are not "
                "trainable parameters of its model"
            )
        groups = [
            {"params": [p for n, p in named if n not in excluded]},
            {"params": [p for n, p in named if n in excluded], "weight_decay": 0.0},
        ]
        params = [g for g in groups if g["params"]]
    if method.optimizer == "sgd":
        return torch.optim.SGD(params, lr=method.lr, momentum=method.momentum, weight_decay=method.weight_decay)
    if method.optimizer == "adam":
        return torch.optim.Adam(params, lr=method.lr, weight_decay=method.weight_decay)
    return torch.optim.AdamW(params, lr=method.lr, weight_decay=method.weight_decay)


@dataclass
class SplitScores:
    accuracy: float
    macro_f1: float
    per_modality: dict[str, float] | None
    count: int


def evaluate(
    method: Any, model: torch.nn.Module, split: MaskedSplit, num_classes: int, autocast=contextlib.nullcontext
) -> SplitScores:
    """Predict every sample of ``split`` (no dropped batch) and score fused and per-modality logits."""
    model.eval()
    fused: list[torch.Tensor] = []
    per_mod: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad(), autocast():
        for batch in iterate_batches(split, EVAL_BATCH_SIZE):
            pred: Prediction = method.predict(model, batch)
            fused.append(pred.logits.argmax(1).cpu())
            for name, logits in (pred.per_modality or {}).items():
                per_mod.setdefault(name, []).append(logits.argmax(1).cpu())
    predicted = torch.cat(fused).numpy() if fused else np.array([], dtype=np.int64)
    labels = split.labels.cpu().numpy()
    if len(predicted) != len(labels):
        raise CellFailure(f"evaluation saw {len(predicted)} predictions for {len(labels)} samples")
    per_modality = {name: accuracy(torch.cat(p).numpy(), labels) for name, p in per_mod.items()} or None
    return SplitScores(accuracy(predicted, labels), macro_f1(predicted, labels, num_classes), per_modality, len(labels))


@dataclass(frozen=True)
class Task:
    """What a method's ``task`` kind (a class attribute of its config) means to the loop: how a split is
    scored, which number of the validation split selects the epoch (and is what tuning maximises, under
    ``selection_key`` in the metrics), what the record's test metrics are, and notes added to the record."""

    evaluate: Callable[..., Any]  # (method, model, split, num_classes, autocast) -> scores with a .count
    selection_score: Callable[[Any], float]
    selection_key: str
    record_metrics: Callable[[Any], dict[str, Any]]
    headline_name: str
    headline: Callable[[Mapping[str, Any]], float]  # the one test number a summary line shows
    notes: Mapping[str, Any] = field(default_factory=dict)


def _classification_metrics(scores: SplitScores) -> dict[str, Any]:
    return {"accuracy": scores.accuracy, "macro_f1": scores.macro_f1, "per_modality_accuracy": scores.per_modality}


def _evaluate_classification(*args: Any) -> SplitScores:
    return evaluate(*args)  # looked up when called, so a wrapped ``bench.loop.evaluate`` (tests) is the one used


TASKS: dict[str, Task] = {
    "classification": Task(
        _evaluate_classification,
        lambda s: s.accuracy,
        "best_val_accuracy",
        _classification_metrics,
        "accuracy",
        lambda m: m["accuracy"],
    ),
    "retrieval": Task(
        retrieval.evaluate_split,
        retrieval.selection_score,
        "best_val_mean_recall_at_1",
        retrieval.record_metrics,
        "mean R@1",
        retrieval.headline,
        retrieval.NOTES,
    ),
}


def task_of(method: Any) -> Task:
    # Optional class attribute task: "classification" (the default) or "retrieval", a key of TASKS.
    kind = getattr(type(method), "task", "classification")
    if kind not in TASKS:
        raise UsageError(f"{type(method).__name__} declares task {kind!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[kind]


def _task_of_metrics(metrics: Mapping[str, Any]) -> Task:
    for task in TASKS.values():
        if task.selection_key in metrics:
            return task
    raise KeyError(f"metrics hold no selection score (one of {[t.selection_key for t in TASKS.values()]})")


def selection_score(metrics: Mapping[str, Any]) -> float:
    """The validation score that selected the epoch of a cell (what tuning maximises), whatever its task."""
    return metrics[_task_of_metrics(metrics).selection_key]


def headline(metrics: Mapping[str, Any]) -> tuple[str, float]:
    """(name, value) of the one test number that summarises a record's metrics, whatever its task."""
    task = _task_of_metrics(metrics)
    return task.headline_name, task.headline(metrics)


def _noisy_test_scores(
    method: Any, model: torch.nn.Module, data: CellData, spec: CellSpec, autocast, task: Task, train: MaskedSplit
) -> dict:
    """The task's test metrics of the selected model on the test split corrupted at each noise level; the
    noise scale comes from ``train``, the whole training split (the same for every method of the cell)."""
    kinds = {m.name: m.kind for m in data.description.modalities}
    stats = training_stats(train, kinds)
    test = data.test.resident()
    scores = {}
    for level in spec.noise_levels:
        inputs = corrupt(
            test.inputs, test.mask, kinds, stats, kind=spec.noise, level=level, seed=spec.seed, split="test"
        )
        noisy = task.evaluate(
            method, model, MaskedSplit(inputs, test.labels, test.mask), data.description.num_classes, autocast
        )
        scores[f"{level:g}"] = task.record_metrics(noisy)  # classification: accuracy, macro_f1, per modality
    return scores


def autocast_for(precision: str, device: torch.device):
    """A context factory: bf16 autocast (CPU and CUDA) for forward passes, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _steps(method: Any, model: torch.nn.Module, batch: Any, ctx: StepContext, autocast):
    """The method's optimizer steps for one batch; forward passes run under ``autocast``, backward not."""
    with autocast():
        out = method.loss(model, batch, ctx)
    if not inspect.isgenerator(out):
        yield out
        return
    while True:
        with autocast():
            try:
                step = next(out)
            except StopIteration:
                return
        yield step


def _train_epoch(
    method: Any,
    model,
    optimizer,
    data: CellData,
    spec: CellSpec,
    epoch: int,
    gen,
    step: int,
    autocast=contextlib.nullcontext,
    train: MaskedSplit | None = None,
) -> tuple[int, float]:
    """One epoch of optimizer steps; returns the global step and the mean training loss over the epoch's steps.

    ``train`` replaces the cell's training split for this epoch (a method's ``resample`` hook)."""
    model.train()
    train = data.train if train is None else train
    # Optional hook after_backward(model, out, ctx): rewrites gradients between backward and the step.
    after_backward = getattr(method, "after_backward", None)
    batches_per_epoch = len(batch_starts(len(train), spec.batch_size, training=True))
    on_cpu = train.labels.device.type == "cpu"
    nonfinite = None  # accelerators: one device-side flag, read once per epoch, so no step waits on the device
    loss_sum, loss_steps = 0.0, 0  # on accelerators loss_sum becomes a device tensor, read once per epoch
    for b, batch in enumerate(iterate_batches(train, spec.batch_size, generator=gen)):
        ctx = StepContext(epoch, spec.epochs, b, batches_per_epoch, step)
        for out in _steps(method, model, batch, ctx, autocast):
            if not isinstance(out, LossOut):
                raise CellFailure(f"{spec.method}.loss must return LossOut, got {type(out).__name__}")
            if on_cpu:
                value = out.loss.item()
                if not math.isfinite(value):
                    raise CellFailure(f"non-finite loss ({value}) at epoch {epoch}, batch {b}")
                loss_sum += value
            else:
                flag = ~torch.isfinite(out.loss.detach())
                nonfinite = flag if nonfinite is None else nonfinite | flag
                loss_sum = loss_sum + out.loss.detach().float()
            loss_steps += 1
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if after_backward is not None:
                after_backward(model, out, ctx)
            optimizer.step()
        step += 1
    if nonfinite is not None and bool(nonfinite):
        raise CellFailure(f"non-finite loss during epoch {epoch}")
    return step, float(loss_sum) / max(1, loss_steps)


def _history_entry(epoch: int, train_loss: float, val_score: float, scores: Any) -> dict[str, Any]:
    """One epoch of the record's training dynamics: the mean training loss, the validation score that selects
    the epoch (fused accuracy for classification) and, where the method splits its model per modality, each
    modality's validation accuracy (the curves the OGM-GE and MLA papers draw to show modality laziness)."""
    entry = {"epoch": epoch, "train_loss": train_loss, "val_score": val_score}
    per_modality = getattr(scores, "per_modality", None)
    if per_modality:
        entry["val_per_modality"] = dict(per_modality)
    return entry


def _holdout_rows(labels: torch.Tensor, fraction: float, seed: int) -> np.ndarray:
    """The held-out rows of ``holdout_fraction``: bench's one stratified cut (:func:`bench.data.stratified_rows`)."""
    return stratified_rows(labels.cpu().numpy(), fraction, seed)


def _carve_holdout(method: Any, data: CellData, seed: int) -> tuple[CellData, MaskedSplit | None]:
    """A method with ``holdout_fraction`` > 0 trains on the rest of the training split; the held-out part
    (stratified, seeded with the cell seed, masks kept) is only visible to its ``start_epoch`` hook."""
    # Optional field holdout_fraction in (0, 1): the share of train only the epoch hooks see.
    fraction = float(getattr(method, "holdout_fraction", 0.0) or 0.0)
    if fraction <= 0:
        return data, None
    held = _holdout_rows(data.train.labels, fraction, seed)
    kept = np.setdiff1d(np.arange(len(data.train)), held)
    train, holdout = data.train.take(torch.from_numpy(kept)), data.train.take(torch.from_numpy(held))
    sizes = {**data.notes["split_sizes"], "train": len(train), "holdout": len(holdout)}
    notes = {**data.notes, "split_sizes": sizes, "holdout": f"{fraction:g} of train, stratified, seed {seed}"}
    description = dataclasses.replace(data.description, num_train=len(train))
    return dataclasses.replace(data, description=description, train=train, notes=notes), holdout


def _epoch_context(
    hook_name: str, data: CellData, holdout: MaskedSplit | None, spec: CellSpec, epoch: int
) -> EpochContext:
    splits = {"train": data.train, **({"holdout": holdout} if holdout is not None else {})}

    def batches(name: str):
        if name not in splits:
            raise CellFailure(f"{hook_name} asked for split {name!r}; this cell has {sorted(splits)}")
        return iterate_batches(splits[name], EVAL_BATCH_SIZE)

    return EpochContext(epoch, spec.epochs, batches)


def _call_epoch_hook(
    name: str,
    method: Any,
    model,
    data: CellData,
    holdout: MaskedSplit | None,
    spec: CellSpec,
    epoch: int,
    autocast=contextlib.nullcontext,
) -> Any:
    """The method's optional epoch hook ``name`` called in eval mode without gradients, given the epoch's
    :class:`~bench.protocol.EpochContext`; its result, or None where the method has no such hook."""
    hook = getattr(method, name, None)
    if hook is None:
        return None
    model.eval()
    with torch.no_grad(), autocast():
        return hook(model, _epoch_context(name, data, holdout, spec, epoch))


def resampled_split(train: MaskedSplit, rows: torch.Tensor, keep: torch.Tensor, zero_fill: bool) -> MaskedSplit:
    """The samples at ``rows`` of ``train`` (repeats allowed), each keeping only the modalities that are present
    in ``train`` and True in its row of ``keep`` ((len(rows), M) bool); removed modalities are zero-filled
    like missing ones (unless the method opts out of zero-filling)."""
    split = train.take(rows)
    mask = split.mask & keep.to(split.mask.device)
    if split.rows is not None:
        return MaskedSplit(split.inputs, split.labels, mask, split.rows, split.zero_fill)
    inputs = dict(split.inputs)
    if zero_fill:
        for m, (name, x) in enumerate(inputs.items()):
            if not bool(mask[:, m].all()):
                inputs[name] = x * mask[:, m].reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    return MaskedSplit(inputs, split.labels, mask)


def _resampled_epoch(method: Any, data: CellData, spec: CellSpec, chosen: tuple) -> MaskedSplit:
    """The epoch's training split from what the ``resample`` hook gave, ``(rows, keep)``, checked first."""
    rows, keep = chosen
    rows = torch.as_tensor(rows, dtype=torch.int64).cpu()
    modalities = len(data.description.modalities)
    if rows.dim() != 1 or len(rows) == 0 or tuple(keep.shape) != (len(rows), modalities) or keep.dtype != torch.bool:
        raise CellFailure(
            f"{spec.method}.resample must give non-empty rows (R,) and a bool keep mask (R, "
            f"{modalities}); got rows {tuple(rows.shape)} and keep {tuple(keep.shape)} {keep.dtype}"
        )
    if int(rows.min()) < 0 or int(rows.max()) >= len(data.train):
        raise CellFailure(f"{spec.method}.resample gave rows outside the training split (0..{len(data.train) - 1})")
    return resampled_split(data.train, rows, keep, type(method).zero_fill_missing)


@dataclass
class _Fit:
    """A trained model (its weights those of the best validation epoch) and how it got there."""

    model: torch.nn.Module
    best_val: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, Any]]
    seconds: float


def _fit(
    method: Any,
    task: Task,
    data: CellData,
    holdout: MaskedSplit | None,
    spec: CellSpec,
    dev: torch.device,
    autocast,
    on_epoch: EpochCallback | None = None,
    pretrained: Mapping[str, torch.nn.Module] | None = None,
    on_history: Callable[[dict[str, Any]], None] | None = None,
) -> _Fit:
    """Seed, build and train one model for ``spec.epochs`` epochs with ``method``'s hooks, keeping the weights of
    the best validation epoch. ``pretrained`` (models of the method's ``pretrain`` stages) goes to its
    ``adopt_pretrained`` hook before the optimizer is made."""
    num_classes = data.description.num_classes
    seed_everything(spec.seed)
    model = method.build(data.description).to(dev)
    if pretrained:
        # Optional hook adopt_pretrained(model, models), required with pretrain: the stages' models go in.
        method.adopt_pretrained(model, pretrained)
    optimizer = _make_optimizer(method, model)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=method.lr_step, gamma=method.lr_gamma)
    gen = torch.Generator().manual_seed(spec.seed)

    best_val, best_epoch, best_state, since_best, step, epochs_run = -1.0, -1, None, 0, 0, 0
    history: list[dict[str, Any]] = []
    started = time.perf_counter()
    for epoch in range(spec.epochs):
        epochs_run += 1
        # Optional hook start_epoch(model, epoch: EpochContext) -> None, before each epoch's training (epoch 0
        # included): eval mode, no gradients, unshuffled batches of the training split and, where carved, of the
        # held-out part.
        _call_epoch_hook("start_epoch", method, model, data, holdout, spec, epoch, autocast)
        # Optional hook resample(model, epoch: EpochContext) -> (rows, keep) | None, after start_epoch: the epoch's
        # training split as (rows, keep), or None for the cell's training split unchanged.
        chosen = _call_epoch_hook("resample", method, model, data, holdout, spec, epoch, autocast)
        train = None if chosen is None else _resampled_epoch(method, data, spec, chosen)
        step, train_loss = _train_epoch(method, model, optimizer, data, spec, epoch, gen, step, autocast, train)
        scheduler.step()
        val_scores = task.evaluate(method, model, data.val, num_classes, autocast)
        val = task.selection_score(val_scores)
        entry = _history_entry(epoch, train_loss, val, val_scores)
        if train is not None:
            entry["train_samples"] = len(train)
        history.append(entry)
        if on_history is not None:
            on_history(entry)
        if on_epoch is not None:
            on_epoch(epoch, val)
        if val > best_val:  # ties keep the earlier epoch
            best_val, best_epoch, since_best = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
            if spec.patience is not None and since_best >= spec.patience:
                break
    seconds = time.perf_counter() - started
    if best_state is not None:
        model.load_state_dict(best_state)
    return _Fit(model, best_val, best_epoch, epochs_run, history, seconds)


def _pretrain(
    method: Any, data: CellData, holdout: MaskedSplit | None, spec: CellSpec, dev: torch.device, autocast
) -> tuple[dict[str, torch.nn.Module], dict[str, Any], float]:
    """The stages of the optional ``pretrain`` hook, each trained in turn exactly like a cell of its own on this
    cell's data and budget (seed, epochs, batch size, patience, selection on validation): their selected
    models, a note per stage, and the seconds they took."""
    # Optional hook pretrain(description) -> {name: method}: stages trained first, each like a cell.
    hook = getattr(method, "pretrain", None)
    if hook is None:
        return {}, {}, 0.0
    models, notes, seconds = {}, {}, 0.0
    for name, stage in hook(data.description).items():
        stage_task = task_of(stage)
        fit = _fit(stage, stage_task, data, holdout, spec, dev, autocast)
        models[name] = fit.model
        notes[name] = {
            stage_task.selection_key: fit.best_val,
            "selected_epoch": fit.best_epoch,
            "epochs_run": fit.epochs_run,
        }
        seconds += fit.seconds
    return models, notes, seconds


def run_cell(
    spec: CellSpec,
    *,
    data_root: Path | None = None,
    device: str | None = None,
    on_epoch: EpochCallback | None = None,
    evaluate_test: bool = True,
    on_history: Callable[[dict[str, Any]], None] | None = None,
    after_test: Callable[..., None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one cell; returns the ``metrics``, ``timings`` and ``notes`` of its record.

    ``evaluate_test=False`` (tuning trials) never touches the test split. Two observers that change nothing in
    the record (bench.cells uses them for ``run --logger``, ``--save-models`` and ``--log-samples``):
    ``on_history(entry)`` after each epoch of the cell's own training with its history entry, and
    ``after_test(method, model, data, autocast, whole_train)`` once, with the selected weights loaded, after the
    test metrics (``whole_train``: the training split before any held-out part was carved, the noise scale's source).
    """
    method = build_method(spec)
    task = task_of(method)
    dev = choose_device(device)
    # Class attribute zero_fill_missing (required; MethodConfig: True): zero-fill missing inputs.
    data = cell_data(spec, data_root=data_root, zero_fill=type(method).zero_fill_missing, device=dev)
    num_classes = data.description.num_classes
    whole_train = data.train  # the test-noise scale's source, before a method's held-out part is carved
    data, holdout = _carve_holdout(method, data, spec.seed)
    autocast = autocast_for(spec.precision, dev)
    pretrained, pretrain_notes, pretrain_seconds = _pretrain(method, data, holdout, spec, dev, autocast)
    fit = _fit(method, task, data, holdout, spec, dev, autocast, on_epoch, pretrained, on_history)
    model, best_val, best_epoch, epochs_run, history = (
        fit.model,
        fit.best_val,
        fit.best_epoch,
        fit.epochs_run,
        fit.history,
    )
    train_seconds = fit.seconds + pretrain_seconds
    if pretrain_notes:
        data = dataclasses.replace(data, notes={**data.notes, "pretrained": pretrain_notes})

    selection = {task.selection_key: best_val, "selected_epoch": best_epoch, "epochs_run": epochs_run}
    if not evaluate_test:
        return {
            "metrics": selection,
            "timings": {"train_seconds": round(train_seconds, 3)},
            "notes": data.notes,
            "history": history,
        }
    started = time.perf_counter()
    test = task.evaluate(method, model, data.test, num_classes, autocast)
    expected = data.notes["split_sizes"]["test"]
    if test.count != expected:
        raise CellFailure(f"test evaluation counted {test.count} samples, the split has {expected}")
    metrics = {**task.record_metrics(test), **selection, "num_test_samples": test.count}
    if spec.noise != "none":
        metrics["noise"] = _noisy_test_scores(method, model, data, spec, autocast, task, whole_train)
    timings = {"train_seconds": round(train_seconds, 3), "test_seconds": round(time.perf_counter() - started, 3)}
    if after_test is not None:
        after_test(method, model, data, autocast, whole_train)
    notes = {**data.notes, **task.notes, "device": str(dev), "threads": torch.get_num_threads()}
    # The history sits beside the metrics, not in them: `bench verify` compares metrics, and records made
    # before the history existed stay verifiable.
    return {"metrics": metrics, "timings": timings, "notes": notes, "history": history}
