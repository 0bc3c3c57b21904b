"""The data path: large splits are streamed from where the adapter keeps them, with the same records."""

from __future__ import annotations

import torch

from bench import data as data_module
from bench.data import cell_data, load_dataset
from bench.grid import GridRequest, expand
from bench.loop import run_cell


def _specs():
    return expand(GridRequest(methods="late_fusion,mla", datasets="synthetic_2m", seeds=(0,),
                              missing_rates=(0.0, 0.5), epochs=2)).specs


def test_streamed_splits_give_the_records_of_resident_ones(monkeypatch):
    for spec in _specs():
        monkeypatch.setattr(data_module, "RESIDENT_BYTES", 2**40)
        resident = run_cell(spec)["metrics"]
        monkeypatch.setattr(data_module, "RESIDENT_BYTES", 0)
        streamed = run_cell(spec)["metrics"]
        assert streamed == resident, spec.label


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
