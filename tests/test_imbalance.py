"""The embedded imbalance benchmark: its exact Bayes oracle, complementarity, no linear slow structure."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from bench.cells import run_one
from bench.datasets.imbalance import DEFAULT_COVERAGE, IMBALANCE_2M, IMBALANCE_3M
from bench.errors import UsageError
from bench.grid import GridRequest, expand
from bench.masks import missing_mask
from bench.registry import DATASETS
from bench.tables.common import setting_key

PATTERNS = [(True, True), (True, False), (False, True)]


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: "".join("x" if v else "-" for v in p))
def test_bayes_accuracy_matches_oracle_fraction_correct_on_fresh_draw(pattern):
    n = 50_000
    x, y = IMBALANCE_2M.sample(n, np.random.default_rng(12345))
    present = np.tile(np.array(pattern), (n, 1))
    correct = IMBALANCE_2M.posterior_log_probs(x, present).argmax(axis=1) == y
    p = IMBALANCE_2M.bayes_accuracy(pattern)
    se = np.sqrt(p * (1 - p) / n)
    assert abs(correct.mean() - p) < 3 * se, (pattern, correct.mean(), p, se)


def test_bayes_accuracy_of_a_mask_weights_its_patterns():
    mask = np.array([PATTERNS[0]] * 2 + [PATTERNS[1]] + [PATTERNS[2]])
    expected = 0.5 * IMBALANCE_2M.bayes_accuracy(PATTERNS[0]) + 0.25 * (
        IMBALANCE_2M.bayes_accuracy(PATTERNS[1]) + IMBALANCE_2M.bayes_accuracy(PATTERNS[2])
    )
    assert IMBALANCE_2M.bayes_accuracy(mask) == pytest.approx(expected)
    assert IMBALANCE_2M.bayes_accuracy((False, False)) == pytest.approx(1 / 6)


def test_modalities_are_complementary():
    joint, fast, slow = (IMBALANCE_2M.bayes_accuracy(p) for p in PATTERNS)
    assert fast <= joint - 0.08 and slow <= joint - 0.08, (joint, fast, slow)
    assert 0.78 <= slow <= 0.87, slow
    full3 = IMBALANCE_3M.bayes_accuracy()
    assert full3 > joint


def test_slow_modality_has_no_linear_class_structure():
    x, y = IMBALANCE_2M.sample(50_000, np.random.default_rng(7))
    for c in range(6):
        assert np.linalg.norm(x["slow"][y == c].mean(axis=0)) < 0.15
    data = IMBALANCE_2M.load(None)

    def design(split):
        s = split.inputs["slow"].numpy().astype(np.float64)
        return np.hstack([s, np.ones((len(s), 1))])

    targets = np.eye(6)[data.train.labels.numpy()]
    w, *_ = np.linalg.lstsq(design(data.train), targets, rcond=None)
    acc = (design(data.test) @ w).argmax(axis=1) == data.test.labels.numpy()
    assert acc.mean() < 0.25, acc.mean()  # chance is 1/6
    # the same least-squares classifier on the fast modality is far above chance
    f = data.train.inputs["fast"].numpy()
    wf, *_ = np.linalg.lstsq(np.hstack([f, np.ones((len(f), 1))]), targets, rcond=None)
    ft = data.test.inputs["fast"].numpy()
    acc_f = (np.hstack([ft, np.ones((len(ft), 1))]) @ wf).argmax(axis=1) == data.test.labels.numpy()
    assert acc_f.mean() > 0.6, acc_f.mean()


def test_coverage_changes_data_and_version():
    assert IMBALANCE_2M.coverage == DEFAULT_COVERAGE and IMBALANCE_2M.info.version == "1"
    other = dataclasses.replace(IMBALANCE_2M, coverage=0.9)
    assert other.info.version == "1-cov0.9"
    assert dataclasses.replace(other, coverage=DEFAULT_COVERAGE).info.version == "1"
    a, b = IMBALANCE_2M.load(None), other.load(None)
    assert not np.array_equal(a.train.inputs["fast"].numpy(), b.train.inputs["fast"].numpy())
    assert other.bayes_accuracy((True, False)) > IMBALANCE_2M.bayes_accuracy((True, False)) + 0.1
    with pytest.raises(ValueError):
        dataclasses.replace(IMBALANCE_2M, coverage=1.5)


@pytest.mark.parametrize(
    "name,modalities", [("imbalance_2m", ("fast", "slow")), ("imbalance_3m", ("fast", "slow", "slow2"))]
)
def test_adapter_loads_with_right_shapes(name, modalities):
    adapter = DATASETS.get(name)
    assert adapter.info.modalities == modalities and adapter.info.num_classes == 6
    assert adapter.info.default_epochs == 15 and adapter.info.default_batch_size == 64
    data = adapter.load(None)
    assert [s.name for s in data.modalities] == list(modalities)
    for split, n in zip((data.train, data.val, data.test), (1500, 500, 1000)):
        assert len(split) == n and str(split.labels.dtype) == "torch.int64"
        for m in modalities:
            assert tuple(split.inputs[m].shape) == (n, 16)
    again = adapter.load(None)
    assert np.array_equal(data.test.inputs["slow"].numpy(), again.test.inputs["slow"].numpy())
    notes = adapter.reference_notes(data.test, np.ones((1000, len(modalities)), dtype=bool))
    assert set(notes) == {"bayes_accuracy", "oracle_test_accuracy", "bayes_accuracy_alone"}
    assert abs(notes["oracle_test_accuracy"] - notes["bayes_accuracy"]) < 0.04
    alone = [tuple(j == m for j in range(len(modalities))) for m in range(len(modalities))]
    assert notes["bayes_accuracy_alone"] == {m: adapter.bayes_accuracy(p) for m, p in zip(modalities, alone)}


def test_the_coverage_knob_is_set_from_the_cli_and_is_part_of_the_cell_identity():
    plain = expand(GridRequest(methods="late_fusion", datasets="imbalance*", seeds=(3,), missing_rates=(0.0,)))
    knob = expand(
        GridRequest(
            methods="late_fusion",
            datasets="imbalance*",
            seeds=(3,),
            missing_rates=(0.0,),
            overrides=("data.coverage=0.9",),
        )
    )
    assert [s.dataset_version for s in plain.specs] == ["1", "1"] and all(not s.extra for s in plain.specs)
    assert [s.dataset_version for s in knob.specs] == ["1-cov0.9", "1-cov0.9"]
    assert all(s.extra == {"dataset_options": {"coverage": 0.9}} for s in knob.specs)
    assert {s.key for s in plain.specs}.isdisjoint(s.key for s in knob.specs)
    assert len({setting_key(s.to_dict()) for s in plain.specs + knob.specs}) == 4  # never one table


@pytest.mark.parametrize(
    "datasets,value,message",
    [
        ("synthetic_2m,imbalance_2m", "0.9", "dataset 'synthetic_2m' has no option 'coverage'"),
        ("imbalance_2m", "1.5", "coverage must be in [0, 1]"),
        ("imbalance_2m", "lots", "must be float"),
    ],
)
def test_a_bad_dataset_option_is_one_clear_error_before_any_cell(datasets, value, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        expand(GridRequest(methods="late_fusion", datasets=datasets, overrides=(f"data.coverage={value}",)))


def test_a_cell_records_the_bayes_ceiling_of_its_own_test_masks():
    spec = next(
        s
        for s in expand(
            GridRequest(
                methods="late_fusion",
                datasets="imbalance_2m",
                seeds=(3,),
                missing_rates=(0.5,),
                epochs=1,
                overrides=("data.coverage=0.9",),
            )
        ).specs
    )
    record = run_one(spec, data_root=None)
    adapter = dataclasses.replace(IMBALANCE_2M, coverage=0.9)
    test = adapter.load(None).test
    present = missing_mask(len(test), 2, 0.5, seed=3, split="test")
    assert record["status"] == "ok", record["reason"]
    assert record["notes"]["dataset_options"] == {"coverage": 0.9}
    assert record["notes"]["bayes_accuracy"] == adapter.bayes_accuracy(present)
    assert record["notes"]["bayes_accuracy"] < adapter.bayes_accuracy() - 0.05  # the masks cost accuracy
