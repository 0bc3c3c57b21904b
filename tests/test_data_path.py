"""The data path: large splits are streamed from where the adapter keeps them, with the same records."""

from __future__ import annotations

import os

import pytest
import torch

from bench import data as data_module
from bench.data import cell_data, load_dataset
from bench.errors import UsageError
from bench.grid import GridRequest, expand
from bench.loop import run_cell


def _specs():
    return expand(
        GridRequest(methods="late_fusion,mla", datasets="synthetic_2m", seeds=(0,), missing_rates=(0.0, 0.5), epochs=2)
    ).specs


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_splits_give_the_records_of_resident_ones(monkeypatch, workers):
    monkeypatch.setenv("BENCH_DATA_WORKERS", str(workers))
    for spec in _specs():
        monkeypatch.setattr(data_module, "RESIDENT_BYTES", 2**40)
        resident = run_cell(spec)["metrics"]
        monkeypatch.setattr(data_module, "RESIDENT_BYTES", 0)
        streamed = run_cell(spec)["metrics"]
        assert streamed == resident, (spec.label, workers)


def test_data_workers_gather_streamed_batches_in_other_processes(monkeypatch):
    """With workers, each batch of a streamed split is gathered in a data-loader process, in the order the
    training generator chose, so the batches equal those gathered in-process."""
    monkeypatch.setattr(data_module, "RESIDENT_BYTES", 0)
    spec = next(s for s in _specs() if s.missing_rate > 0)
    data = cell_data(spec, data_root=None, zero_fill=True, device=torch.device("cpu"))
    gatherers = []
    original = data_module._RowGatherer.__getitem__

    def recording(self, positions):
        gatherers.append(os.getpid())
        return original(self, positions)

    monkeypatch.setattr(data_module._RowGatherer, "__getitem__", recording)
    batches = {}
    for workers in (0, 2):
        monkeypatch.setenv("BENCH_DATA_WORKERS", str(workers))
        gen = torch.Generator().manual_seed(7)
        batches[workers] = list(data_module.iterate_batches(data.train, 32, generator=gen))
    assert gatherers == []  # recorded only in the workers' memory: the parent never gathered through them
    assert len(batches[0]) == len(batches[2]) > 1
    for a, b in zip(batches[0], batches[2]):
        assert torch.equal(a.index, b.index) and torch.equal(a.mask, b.mask) and torch.equal(a.label, b.label)
        assert all(torch.equal(a.inputs[m], b.inputs[m]) for m in a.inputs)


def test_a_bad_data_workers_value_is_one_line(monkeypatch):
    monkeypatch.setenv("BENCH_DATA_WORKERS", "two")
    with pytest.raises(UsageError, match="BENCH_DATA_WORKERS='two' is not a whole number"):
        data_module.data_workers()


def test_a_streamed_split_copies_no_inputs(monkeypatch):
    monkeypatch.setattr(data_module, "RESIDENT_BYTES", 0)
    spec = next(s for s in _specs() if s.missing_rate > 0)
    loaded = load_dataset(spec.dataset, None)
    data = cell_data(spec, data_root=None, zero_fill=True, device=torch.device("cpu"))
    sources = {"train": loaded.train, "val": loaded.val or loaded.train, "test": loaded.test}
    for name, split in (("train", data.train), ("val", data.val), ("test", data.test)):
        assert split.rows is not None
        assert all(split.inputs[m] is sources[name].inputs[m] for m in sources[name].inputs), name
    assert len(data.train) + (0 if loaded.val else len(data.val)) == len(loaded.train)
    batch = next(iter(data_module.iterate_batches(data.train, 32)))
    missing = ~batch.mask
    for m, name in enumerate(batch.inputs):  # masked per batch: absent modalities arrive zero-filled
        assert torch.count_nonzero(batch.inputs[name][missing[:, m]]) == 0
    assert missing.any()
