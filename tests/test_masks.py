from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bench.data import cell_data
from bench.masks import max_missing_rate, missing_mask, realized_rate
from bench.testing import tiny_spec


@pytest.mark.parametrize("modalities", [2, 3, 6])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3, 0.5, 0.6])
def test_rate_is_met_and_every_sample_keeps_a_modality(modalities, rate):
    mask = missing_mask(1001, modalities, rate, seed=3, split="train")
    assert mask.any(axis=1).all()
    expected = min(rate, max_missing_rate(modalities))
    assert abs(realized_rate(mask) - expected) <= 1 / (1001 * modalities) + 1e-12


def test_rates_above_the_cap_keep_exactly_one_modality():
    mask = missing_mask(500, 2, 0.9, seed=0, split="test")
    assert (mask.sum(axis=1) == 1).all()


def test_masks_depend_on_seed_and_split_only_and_are_nested_across_rates():
    a = missing_mask(300, 3, 0.3, seed=1, split="train")
    assert np.array_equal(a, missing_mask(300, 3, 0.3, seed=1, split="train"))
    assert not np.array_equal(a, missing_mask(300, 3, 0.3, seed=1, split="test"))
    assert not np.array_equal(a, missing_mask(300, 3, 0.3, seed=2, split="train"))
    b = missing_mask(300, 3, 0.5, seed=1, split="train")
    assert not (~a & b).any(), "a modality missing at rate 0.3 must also be missing at 0.5"


def test_invalid_rate_raises():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        missing_mask(10, 2, 1.0, seed=0, split="train")


def _data(method, **spec_changes):
    spec = dataclasses.replace(tiny_spec(method, missing_rate=0.5), **spec_changes)
    return cell_data(spec, data_root=None, zero_fill=True, device=torch.device("cpu"))


def test_every_method_of_a_cell_sees_the_same_masks():
    from bench.registry import METHODS

    names = [n for n in METHODS.names() if METHODS.error(n) is None]
    first = _data(names[0])
    for name in names[1:]:
        other = _data(name)
        for split in ("train", "val", "test"):
            assert torch.equal(getattr(first, split).mask, getattr(other, split).mask), (name, split)


def test_missing_inputs_are_zero_filled_and_test_only_mode_leaves_train_whole():
    data = _data("late_fusion")
    for m, name in enumerate(data.train.inputs):
        gone = ~data.train.mask[:, m]
        assert gone.any() and (data.train.inputs[name][gone] == 0).all()
    test_only = _data("late_fusion", missing_on="test")
    assert test_only.train.mask.all() and not test_only.test.mask.all()
    assert test_only.notes["missing_fraction_train"] == 0.0


def test_capped_rates_never_give_two_cells():
    """0.5, 0.7 and 0.9 on two modalities all realise the masks of 0.5: the grid makes one cell of them."""
    from bench.grid import GridRequest, expand

    plan = expand(
        GridRequest(methods="late_fusion", datasets="synthetic_2m", seeds=(0,), missing_rates=(0.0, 0.5, 0.7, 0.9))
    )
    assert sorted(s.missing_rate for s in plan.specs) == [0.0, 0.5]
    assert len({s.key for s in plan.specs}) == len(plan.specs)
    assert any("gives the masks of 0.5" in w for w in plan.warnings)
    three = expand(GridRequest(methods="late_fusion", datasets="synthetic_3m", seeds=(0,), missing_rates=(0.7, 0.8)))
    assert [s.missing_rate for s in three.specs] == [2 / 3]
    assert (missing_mask(40, 3, 0.7, seed=0, split="test") == missing_mask(40, 3, 2 / 3, seed=0, split="test")).all()
