"""Modality-valuation parity: sample-level Shapley values of the model's correctness (v(S) = |S| * correct,
official; v(S) = correct, BalanceBenchmark) against hand-derived tables for two and three modalities, the
copy thresholds, the resampling plan handed to the loop, the exec_drop logits, and training on the
resampled epochs; one epoch on the imbalance and synthetic data."""

from __future__ import annotations

import pytest
import torch

from bench.loop import run_cell
from bench.methods.modality_valuation import (
    ModalityValuation,
    copies_for,
    resample_plan,
    shapley_values,
    subset_logits,
)
from bench.protocol import Batch, DataDescription, EpochContext, ModalitySpec
from bench.testing import one_epoch_record, tiny_spec

torch.set_num_threads(1)


def _b(*values):
    return torch.tensor(values, dtype=torch.bool)


def test_two_modality_values_follow_the_official_rule():
    # samples: (ab right, a right, b right) = (T,T,F), (T,F,F), (F,F,T), (T,T,T), (F,F,F)
    correct = {(0, 1): _b(1, 1, 0, 1, 0), (0,): _b(1, 0, 0, 1, 0), (1,): _b(0, 0, 1, 1, 0)}
    phi = shapley_values(correct, 2, "size")
    # phi_a = (v_a + v_ab - v_b) / 2 with v_ab = 2 * right, v_a, v_b = right
    assert phi[:, 0].tolist() == [1.5, 1.0, -0.5, 1.0, 0.0]
    assert phi[:, 1].tolist() == [0.5, 1.0, 0.5, 1.0, 0.0]
    # BalanceBenchmark's v(S) = right: phi_a = (v_a + v_ab - v_b) / 2 with v_ab in {0, 1}
    phi = shapley_values(correct, 2, "correct")
    assert phi[:, 0].tolist() == [1.0, 0.5, -0.5, 0.5, 0.0]
    assert phi[:, 1].tolist() == [0.0, 0.5, 0.5, 0.5, 0.0]


def test_three_modality_values_by_hand():
    # one sample: right with {a}, {a,b}, {a,c}, {a,b,c}; wrong with {b}, {c}, {b,c}: a carries everything
    correct = {(0,): _b(1), (1,): _b(0), (2,): _b(0), (0, 1): _b(1), (0, 2): _b(1), (1, 2): _b(0), (0, 1, 2): _b(1)}
    phi = shapley_values(correct, 3, "size")
    # phi_a = 1/3 (v_a - 0) + 1/6 (v_ab - v_b) + 1/6 (v_ac - v_c) + 1/3 (v_abc - v_bc) = 1/3 + 2/6 + 2/6 + 1
    assert phi[0, 0].item() == pytest.approx(1 / 3 + 1 / 3 + 1 / 3 + 1)
    # phi_b = 1/3 (0) + 1/6 (v_ab - v_a) + 1/6 (v_bc - v_c) + 1/3 (v_abc - v_ac) = 1/6 (2 - 1) + 0 + 1/3 (3 - 2)
    assert phi[0, 1].item() == pytest.approx(1 / 6 + 1 / 3)
    assert phi[0, 2].item() == pytest.approx(1 / 6 + 1 / 3)
    assert phi[0].sum().item() == pytest.approx(3.0)  # efficiency: the values add up to v(all) - v(empty)


def test_copies_follow_the_official_thresholds():
    phi = torch.tensor([1.5, 1.0, 0.5, 0.4, 0.0, -0.1, -0.5], dtype=torch.float64)
    assert copies_for(phi).tolist() == [0, 0, 1, 0, 2, 0, 3]


def test_resample_plan_appends_single_modality_copies_and_never_copies_an_absent_modality():
    phi = torch.tensor([[1.5, 0.5], [-0.5, 0.0], [0.0, 1.0]], dtype=torch.float64)
    present = torch.tensor([[True, True], [True, True], [False, True]])
    rows, keep = resample_plan(phi, present)
    # originals 0, 1, 2; then sample 0: b once; sample 1: a three times, b twice; sample 2: a absent, b valued 1
    assert rows.tolist() == [0, 1, 2, 0, 1, 1, 1, 1, 1]
    assert keep.tolist() == [[True, True]] * 3 + [[False, True]] + [[True, False]] * 3 + [[False, True]] * 2


def test_subset_logits_zero_the_dropped_features_in_the_concat_head():
    description = DataDescription((ModalitySpec("a", (3,)), ModalitySpec("b", (2,))), num_classes=2, num_train=4)
    torch.manual_seed(0)
    model = ModalityValuation().build(description).eval()
    features = {"a": torch.randn(4, 64), "b": torch.randn(4, 64)}
    keep = torch.tensor([[True, True], [True, False], [False, True], [False, False]])
    got = subset_logits(model, features, keep)
    w, bias = model.head.fc.weight, model.head.fc.bias
    expected = torch.stack(
        [
            features["a"][0] @ w[:, :64].T + features["b"][0] @ w[:, 64:].T + bias,
            features["a"][1] @ w[:, :64].T + bias,
            features["b"][2] @ w[:, 64:].T + bias,
            bias,
        ]
    )
    assert torch.allclose(got, expected, atol=1e-5)


def test_resample_hook_values_the_training_batches_it_is_given():
    description = DataDescription((ModalitySpec("a", (3,)), ModalitySpec("b", (2,))), num_classes=2, num_train=6)
    method = ModalityValuation(warmup=1)
    torch.manual_seed(0)
    model = method.build(description).eval()
    gen = torch.Generator().manual_seed(3)
    batch = Batch(
        {"a": torch.randn(6, 3, generator=gen), "b": torch.randn(6, 2, generator=gen)},
        torch.tensor([0, 1, 0, 1, 0, 1]),
        torch.arange(6),
        torch.ones(6, 2, dtype=torch.bool),
    )
    context = EpochContext(0, 3, lambda name: iter([batch]))
    with torch.no_grad():
        assert method.resample(model, context) is None  # still warming up
        rows, keep = method.resample(model, EpochContext(1, 3, lambda name: iter([batch])))
        expected = resample_plan(method.valuate(model, batch), batch.mask)
    assert torch.equal(rows, expected[0]) and torch.equal(keep, expected[1])
    assert rows[:6].tolist() == list(range(6))


def test_training_uses_the_resampled_epochs():
    spec = tiny_spec("modality_valuation", epochs=3, overrides={"warmup": 1})
    result = run_cell(spec)
    n_train = result["notes"]["split_sizes"]["train"]
    sizes = [h.get("train_samples") for h in result["history"]]
    assert sizes[0] is None  # warm-up epoch: the training split as is
    assert all(s is not None and s > n_train for s in sizes[1:])  # the whole split plus copies


def test_before_warmup_ends_it_trains_exactly_as_late_fusion():
    ours = run_cell(tiny_spec("modality_valuation", epochs=3, overrides={"warmup": 5}))
    late = run_cell(tiny_spec("late_fusion", epochs=3))
    assert ours["metrics"] == late["metrics"]


@pytest.mark.parametrize("dataset", ["imbalance_2m", "synthetic_3m"])
def test_one_epoch_on_embedded_data(dataset):
    record = one_epoch_record("modality_valuation", dataset)
    assert record["status"] == "ok", record.get("error")
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
