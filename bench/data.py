"""From a dataset adapter to what the loop iterates: splits, a carved validation split, masks, batches."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.errors import UsageError
from bench.masks import missing_mask, realized_rate
from bench.protocol import Batch, DataDescription, LoadedData, SplitData
from bench.registry import DATASETS
from bench.spec import CellSpec

__all__ = ["CellData", "batch_starts", "MaskedSplit", "carve_validation", "cell_data", "iterate_batches", "load_dataset"]

#: Fraction of train carved into a validation split when a dataset ships none, and the seed of that cut.
#: Fixed (not the cell seed) so every seed and method selects on the same validation samples.
VAL_FRACTION = 0.2
VAL_SEED = 0

_cache: dict[tuple[str, str], LoadedData] = {}
_cache_lock = threading.Lock()


def load_dataset(name: str, data_root: Path | None) -> LoadedData:
    """Load once per process and data root; every cell of a grid reuses the tensors."""
    adapter = DATASETS.get(name)
    key = (name, str(data_root))
    with _cache_lock:
        if key not in _cache:
            ok, why = adapter.available(data_root)
            if not ok:
                raise UsageError(f"dataset {name!r} is not available: {why}")
            _cache[key] = adapter.load(data_root)
        return _cache[key]


def carve_validation(train: SplitData, *, fraction: float = VAL_FRACTION, seed: int = VAL_SEED):
    """Stratified cut of ``train``: ``fraction`` of every class (at least one sample) goes to validation."""
    labels = train.labels.numpy()
    rng = np.random.default_rng(seed)
    val_rows: list[np.ndarray] = []
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        take = max(1, int(round(fraction * len(rows)))) if len(rows) > 1 else 0
        val_rows.append(rng.permutation(rows)[:take])
    val_idx = np.sort(np.concatenate(val_rows)) if val_rows else np.array([], dtype=np.int64)
    keep = np.ones(len(labels), dtype=bool)
    keep[val_idx] = False
    train_idx = np.flatnonzero(keep)
    return train.subset(torch.from_numpy(train_idx)), train.subset(torch.from_numpy(val_idx))


@dataclass(frozen=True)
class MaskedSplit:
    """A split with its missing-modality mask applied (zero-filled inputs unless the method opts out)."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    mask: torch.Tensor  # (N, M) bool, True = present

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class CellData:
    description: DataDescription
    train: MaskedSplit
    val: MaskedSplit
    test: MaskedSplit
    notes: dict[str, Any]


def _mask_split(split: SplitData, spec: CellSpec, name: str, *, zero_fill: bool, device: torch.device):
    modalities = list(split.inputs)
    rate = spec.missing_rate if (spec.missing_on == "all" or name != "train") else 0.0
    present = torch.from_numpy(missing_mask(len(split), len(modalities), rate, seed=spec.seed, split=name))
    inputs = {}
    for m, modality in enumerate(modalities):
        x = split.inputs[modality]
        if zero_fill and not bool(present[:, m].all()):
            keep = present[:, m].reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
            x = x * keep
        inputs[modality] = x.to(device)
    return MaskedSplit(inputs, split.labels.to(device), present.to(device)), realized_rate(present.numpy())


def cell_data(spec: CellSpec, *, data_root: Path | None, zero_fill: bool, device: torch.device) -> CellData:
    """The three masked splits of a cell, and notes for its record (carved validation, realized rates)."""
    loaded = load_dataset(spec.dataset, data_root)
    notes: dict[str, Any] = {}
    train, val = loaded.train, loaded.val
    if val is None:
        train, val = carve_validation(train)
        notes["validation"] = f"carved from train: {VAL_FRACTION:g} stratified, seed {VAL_SEED}"
    else:
        notes["validation"] = "shipped with the dataset"
    masked = {}
    for name, split in (("train", train), ("val", val), ("test", loaded.test)):
        masked[name], notes[f"missing_fraction_{name}"] = _mask_split(
            split, spec, name, zero_fill=zero_fill, device=device
        )
    notes["split_sizes"] = {name: len(s) for name, s in masked.items()}
    description = DataDescription(loaded.modalities, DATASETS.get(spec.dataset).info.num_classes, len(train))
    return CellData(description, masked["train"], masked["val"], masked["test"], notes)


def batch_starts(n: int, batch_size: int, *, training: bool) -> list[int]:
    starts = list(range(0, n, batch_size))
    if training and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return starts


def iterate_batches(
    split: MaskedSplit, batch_size: int, *, generator: torch.Generator | None = None
) -> Iterator[Batch]:
    """Batches cut from resident tensors; every sample is used once (the last batch is kept).

    Shuffled when a generator is given (training). A trailing training batch of one sample is merged
    into the previous batch, because BatchNorm cannot normalise a batch of one.
    """
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else None
    starts = batch_starts(n, batch_size, training=order is not None)
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else n
        if order is None:
            rows = slice(start, stop)
            index = torch.arange(start, stop)
        else:
            index = order[start:stop]
            rows = index.to(split.labels.device)
        yield Batch(
            inputs={name: x[rows] for name, x in split.inputs.items()},
            label=split.labels[rows],
            index=index.to(split.labels.device),
            mask=split.mask[rows],
        )
