"""From a dataset adapter to what the loop iterates: splits, a carved validation split, masks, batches."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.errors import UsageError
from bench.masks import missing_mask, realized_rate
from bench.protocol import Batch, DataDescription, LoadedData, ModalitySpec, SplitData
from bench.registry import dataset_adapter
from bench.spec import CellSpec, canonical_json

__all__ = [
    "CellData",
    "DatasetSummary",
    "MaskedSplit",
    "batch_starts",
    "carve_validation",
    "carved_train_size",
    "cell_data",
    "check_disjoint_lists",
    "data_workers",
    "iterate_batches",
    "label_counts",
    "load_dataset",
    "stratified_rows",
    "validation_rows",
    "with_encoders",
]

#: Fraction of train carved into a validation split when a dataset ships none, and the seed of that cut.
#: Fixed (not the cell seed) so every seed and method selects on the same validation samples.
VAL_FRACTION = 0.2
VAL_SEED = 0

#: Splits whose selected inputs take more bytes than this stay where the adapter put them (e.g. a
#: memory-mapped cache) and are gathered, moved and masked batch by batch; smaller ones are masked and moved
#: to the device once, up front (fastest for data that fit). ``BENCH_RESIDENT_BYTES`` changes it.
RESIDENT_BYTES = int(os.environ.get("BENCH_RESIDENT_BYTES", 2 * 2**30))

#: Streamed splits are read ahead by this many data-loader processes unless ``BENCH_DATA_WORKERS`` says
#: otherwise: reading the next batches from disk overlaps the current step.
DEFAULT_DATA_WORKERS = 2

_cache: dict[tuple[str, str], LoadedData] = {}
_cache_lock = threading.Lock()


def load_dataset(name: str, data_root: Path | None, options: Mapping[str, Any] | None = None) -> LoadedData:
    """Load once per process, data root and set of dataset options; every cell of a grid reuses the tensors."""
    adapter = dataset_adapter(name, options)
    key = (name, str(data_root), canonical_json(dict(options or {})))
    with _cache_lock:
        if key not in _cache:
            ok, why = adapter.available(data_root)
            if not ok:
                raise UsageError(f"dataset {name!r} is not available: {why}")
            _cache[key] = adapter.load(data_root)
        return _cache[key]


def stratified_rows(labels: np.ndarray, fraction: float, seed: int, *, at_least_one: bool = True) -> np.ndarray:
    """Sorted rows of a stratified, seeded cut: ``round(fraction * n)`` of each class of ``n`` samples, taken
    from one ``default_rng(seed)`` permutation per class in label order. With ``at_least_one`` every class of
    two or more samples gives at least one row (and a class of one sample none).

    The one stratified cut of bench: the validation split carved from train (:func:`validation_rows`), the
    methods' held-out part of train (``holdout_fraction``) and the test split of datasets shipped unsplit
    (``datasets/multiview.py``, ``at_least_one=False``); records depend on its exact rows.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for cls in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        chosen.append(rows[: _stratified_take(len(rows), fraction, at_least_one)])
    return np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64)


def _stratified_take(count: int, fraction: float, at_least_one: bool) -> int:
    if not at_least_one:
        return int(round(fraction * count))
    return max(1, int(round(fraction * count))) if count > 1 else 0


def validation_rows(labels: torch.Tensor, *, fraction: float = VAL_FRACTION, seed: int = VAL_SEED):
    """(train rows, validation rows) of a stratified cut (:func:`stratified_rows`): ``fraction`` of every
    class (at least one sample) goes to validation."""
    labels_np = labels.numpy()
    val_idx = stratified_rows(labels_np, fraction, seed)
    keep = np.ones(len(labels_np), dtype=bool)
    keep[val_idx] = False
    return torch.from_numpy(np.flatnonzero(keep)), torch.from_numpy(val_idx)


def carved_train_size(label_counts: Mapping[int, int], *, fraction: float = VAL_FRACTION) -> int:
    """How many training rows :func:`validation_rows` leaves of a split with these per-class counts."""
    return sum(n - _stratified_take(n, fraction, True) for n in label_counts.values())


def label_counts(labels: Iterable[int] | np.ndarray) -> dict[int, int]:
    """``{label: count}`` of a split's labels, in label order (what :class:`DatasetSummary` holds)."""
    values, counts = np.unique(np.asarray(labels, dtype=np.int64), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def check_disjoint_lists(lists: Mapping[str, Iterable[tuple[str, int]]], where: str, fix: str) -> None:
    """A UsageError when a clip is listed in both the ``train`` and ``test`` (clip id, label) lists of a dataset
    whose split lists come with it (``where``: the lists, ``fix``: how to get good ones)."""
    shared = {sample for sample, _ in lists["train"]} & {sample for sample, _ in lists["test"]}
    if shared:
        raise UsageError(f"{len(shared)} clip(s) are in both {where}, e.g. {sorted(shared)[0]}; {fix}")


@dataclass(frozen=True)
class DatasetSummary:
    """What an adapter's ``describe(data_root)`` returns: what ``load`` would give, without loading.

    ``modalities`` as ``LoadedData.modalities``; ``train_label_counts`` ``{label: count}`` of the shipped
    training split; ``shipped_val`` whether ``load`` gives a validation split (else the harness carves one,
    and the training rows left depend on the per-class counts).
    """

    modalities: tuple[ModalitySpec, ...]
    train_label_counts: Mapping[int, int]
    shipped_val: bool

    @property
    def num_train(self) -> int:
        """The rows the harness trains on: the shipped training split, less the carved validation split."""
        if self.shipped_val:
            return sum(self.train_label_counts.values())
        return carved_train_size(self.train_label_counts)


def carve_validation(train: SplitData, *, fraction: float = VAL_FRACTION, seed: int = VAL_SEED):
    """The stratified cut of :func:`validation_rows`, as two (copied) splits."""
    train_idx, val_idx = validation_rows(train.labels, fraction=fraction, seed=seed)
    return train.subset(train_idx), train.subset(val_idx)


@dataclass(frozen=True)
class MaskedSplit:
    """A split with its missing-modality mask (zero-filled inputs unless the method opts out).

    *Resident* (``rows`` is None): ``inputs`` are already masked and on the device, and batches are slices of
    them. *Streamed* (large splits, see :data:`RESIDENT_BYTES`): ``inputs`` are the adapter's tensors left
    where they are (typically a memory-mapped cache), ``rows`` says which of their rows form this split, and
    each batch is gathered, moved to the device and masked on its own, so a split never has to fit in memory.
    """

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    mask: torch.Tensor  # (N, M) bool, True = present
    rows: torch.Tensor | None = None  # streamed: rows of ``inputs`` (CPU int64), else None
    zero_fill: bool = True

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: torch.Tensor) -> MaskedSplit:
        """The samples at ``index`` (positions in this split, CPU int64), masks kept."""
        on_device = index.to(self.labels.device)
        if self.rows is None:
            inputs = {name: x[on_device] for name, x in self.inputs.items()}
            return MaskedSplit(inputs, self.labels[on_device], self.mask[on_device])
        return MaskedSplit(self.inputs, self.labels[on_device], self.mask[on_device], self.rows[index], self.zero_fill)

    def gather(self, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        """Streamed splits: the unmasked CPU rows of the samples at ``index`` (positions in this split)."""
        source = self.rows[index if isinstance(index, slice) else index.cpu()]
        return {name: x[source] for name, x in self.inputs.items()}

    def batch_inputs(
        self, index: torch.Tensor | slice, gathered: Mapping[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Inputs of the samples at ``index`` (a slice, or positions in this split on the labels' device).

        Streamed splits gather the rows (unless a data-loader worker already did: ``gathered``), then move
        them to the device and zero the absent modalities.
        """
        if self.rows is None:
            return {name: x[index] for name, x in self.inputs.items()}
        rows_of = self.gather(index) if gathered is None else gathered
        device = self.labels.device
        present = self.mask[index]
        batch = {}
        for m, name in enumerate(self.inputs):
            rows = rows_of[name]
            if device.type == "cuda":
                rows = rows.pin_memory()  # a no-op for rows a pinning data loader already returned
            rows = rows.to(device, non_blocking=True)
            if self.zero_fill and not bool(present[:, m].all()):
                rows = rows * present[:, m].reshape(-1, *([1] * (rows.dim() - 1))).to(rows.dtype)
            batch[name] = rows
        return batch

    def resident(self) -> MaskedSplit:
        """This split with its inputs gathered, masked and on the device (a copy when streamed)."""
        if self.rows is None:
            return self
        return MaskedSplit(
            self.batch_inputs(torch.arange(len(self), device=self.labels.device)), self.labels, self.mask
        )


@dataclass(frozen=True)
class CellData:
    description: DataDescription
    train: MaskedSplit
    val: MaskedSplit
    test: MaskedSplit
    notes: dict[str, Any]


def _split_bytes(split: SplitData) -> int:
    return sum(x.element_size() * x.nelement() for x in split.inputs.values())


def _mask_split(
    split: SplitData, rows: torch.Tensor | None, spec: CellSpec, name: str, *, zero_fill: bool, device: torch.device
) -> tuple[MaskedSplit, float]:
    """Mask the samples ``rows`` of ``split`` (all when None). Small splits are copied masked onto the device;
    large ones are streamed batch by batch from where the adapter keeps them."""
    n = len(split) if rows is None else len(rows)
    modalities = list(split.inputs)
    rate = spec.missing_rate if (spec.missing_on == "all" or name != "train") else 0.0
    present = torch.from_numpy(missing_mask(n, len(modalities), rate, seed=spec.seed, split=name))
    labels = split.labels if rows is None else split.labels[rows]
    if _split_bytes(split) * n > RESIDENT_BYTES * max(len(split), 1):
        rows = torch.arange(len(split)) if rows is None else rows
        streamed = MaskedSplit(dict(split.inputs), labels.to(device), present.to(device), rows, zero_fill)
        return streamed, realized_rate(present.numpy())
    inputs = {}
    for m, modality in enumerate(modalities):
        x = split.inputs[modality] if rows is None else split.inputs[modality][rows]
        if zero_fill and not bool(present[:, m].all()):
            keep = present[:, m].reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
            x = x * keep
        inputs[modality] = x.to(device)
    return MaskedSplit(inputs, labels.to(device), present.to(device)), realized_rate(present.numpy())


def cell_data(spec: CellSpec, *, data_root: Path | None, zero_fill: bool, device: torch.device) -> CellData:
    """The three masked splits of a cell, and notes for its record (carved validation, realized rates)."""
    options = spec.extra.get("dataset_options", {})
    adapter = dataset_adapter(spec.dataset, options)
    loaded = load_dataset(spec.dataset, data_root, options)
    notes: dict[str, Any] = {}
    if loaded.val is None:  # rows of the shipped train split, so nothing is copied before masking
        train_rows, val_rows = validation_rows(loaded.train.labels)
        parts = {"train": (loaded.train, train_rows), "val": (loaded.train, val_rows)}
        notes["validation"] = f"carved from train: {VAL_FRACTION:g} stratified, seed {VAL_SEED}"
    else:
        parts = {"train": (loaded.train, None), "val": (loaded.val, None)}
        notes["validation"] = "shipped with the dataset"
    parts["test"] = (loaded.test, None)
    masked = {}
    for name, (split, rows) in parts.items():
        masked[name], notes[f"missing_fraction_{name}"] = _mask_split(
            split, rows, spec, name, zero_fill=zero_fill, device=device
        )
    notes["split_sizes"] = {name: len(s) for name, s in masked.items()}
    if getattr(adapter, "options", ()):  # every option's value, defaults too: a sweep reads its axis from here
        notes["dataset_options"] = {name: getattr(adapter, name) for name in adapter.options}
    reference_notes = getattr(adapter, "reference_notes", None)
    if reference_notes is not None:  # e.g. the Bayes accuracy of a generated dataset under these test masks
        notes.update(reference_notes(loaded.test, masked["test"].mask.cpu().numpy()))
    modalities = with_encoders(loaded.modalities, spec.extra.get("encoders", {}))
    description = DataDescription(modalities, adapter.info.num_classes, len(masked["train"]))
    return CellData(description, masked["train"], masked["val"], masked["test"], notes)


def with_encoders(modalities: tuple[ModalitySpec, ...], encoders: Mapping[str, str]) -> tuple[ModalitySpec, ...]:
    """The dataset's modalities with the encoder kinds chosen by ``--set encoder.<modality>=<kind>``."""
    return tuple(dataclasses.replace(m, kind=encoders[m.name]) if m.name in encoders else m for m in modalities)


def batch_starts(n: int, batch_size: int, *, training: bool) -> list[int]:
    starts = list(range(0, n, batch_size))
    if training and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return starts


def data_workers() -> int:
    """Data-loader worker processes that gather the batches of a streamed split (``BENCH_DATA_WORKERS``, or
    ``run --data-workers``); 0 gathers in the training process. Read per call, so a CLI flag set after import
    (and inherited by ``--jobs`` workers) applies."""
    value = os.environ.get("BENCH_DATA_WORKERS", str(DEFAULT_DATA_WORKERS))
    try:
        workers = int(value)
    except ValueError:
        raise UsageError(f"BENCH_DATA_WORKERS={value!r} is not a whole number; set it to 0 or more") from None
    if workers < 0:
        raise UsageError(f"BENCH_DATA_WORKERS={workers} is negative; set it to 0 or more")
    return workers


class _RowGatherer(torch.utils.data.Dataset):
    """What a data-loader worker does for a streamed split: one item is one whole batch, gathered from the
    (memory-mapped) inputs by the batch's positions, so a worker does one fancy-index read per modality and no
    per-sample Python."""

    def __init__(self, split: MaskedSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.split.gather(positions)


def _prefetched_rows(split: MaskedSplit, batches: list[torch.Tensor], workers: int) -> Iterator[dict]:
    """The gathered CPU rows of each batch, read ahead by ``workers`` processes in the given order (so the
    batches, and the records, are those of gathering in-process)."""
    # fork shares the memory-mapped inputs with the workers; spawn would pickle (copy) them into each one.
    context = "fork" if "fork" in torch.multiprocessing.get_all_start_methods() else None
    loader = torch.utils.data.DataLoader(
        _RowGatherer(split),
        sampler=batches,
        batch_size=None,
        num_workers=min(workers, len(batches)),
        pin_memory=split.labels.device.type == "cuda",
        multiprocessing_context=context,
    )
    return iter(loader)


def iterate_batches(
    split: MaskedSplit, batch_size: int, *, generator: torch.Generator | None = None
) -> Iterator[Batch]:
    """Batches of a split (slices of resident tensors, or gathered from streamed ones); every sample is used
    once (the last batch is kept).

    Shuffled when a generator is given (training). A trailing training batch of one sample is merged
    into the previous batch, because BatchNorm cannot normalise a batch of one. Streamed splits are gathered
    ahead by :func:`data_workers` processes when there are any.
    """
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    starts = batch_starts(n, batch_size, training=generator is not None)
    stops = starts[1:] + [n]
    indices = [order[start:stop] for start, stop in zip(starts, stops)]
    workers = data_workers() if split.rows is not None else 0
    prefetched = _prefetched_rows(split, indices, workers) if workers and len(indices) > 1 else None
    for start, stop, index in zip(starts, stops, indices):
        rows = slice(start, stop) if generator is None else index.to(split.labels.device)
        yield Batch(
            inputs=split.batch_inputs(rows, next(prefetched) if prefetched is not None else None),
            label=split.labels[rows],
            index=index.to(split.labels.device),
            mask=split.mask[rows],
        )
