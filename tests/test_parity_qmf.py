"""QMF parity: energy confidence, dynamic fusion, history and rank loss.

Expected values are worked out here with the ``math`` module from the formulas, not by the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from bench.methods.qmf import QMF, energy_confidence, fuse_by_confidence, normalise_history, rank_loss
from bench.protocol import Batch, DataDescription, ModalitySpec, StepContext
from bench.registry import default_method


def _lse(row):
    return math.log(sum(math.exp(v) for v in row))


def _ce(row, y):
    return _lse(row) - row[y]


def _hand_rank_loss(conf, hist):
    """max(0, t (c_i - c_{i+1}) - |l_i - l_{i+1}|), 0 when t = 0, pairs (i, i+1 mod B), batch mean."""
    total, n = 0.0, len(conf)
    for i in range(n):
        j = (i + 1) % n
        diff = hist[i] - hist[j]
        t = (diff > 0) - (diff < 0)
        if t != 0:
            total += max(0.0, t * (conf[i] - conf[j]) - abs(diff))
    return total / n


# --------------------------------------------------------------------------------------------------
# Confidence and fusion

LOGITS_A = [[0.0, 0.0], [1.0, 0.0], [2.0, 2.0]]
LOGITS_B = [[-3.0, -1.0], [0.5, 4.0], [0.0, -2.0]]


def test_confidence_is_logsumexp_over_temperature():
    expected = [math.log(2) / 10, math.log(math.e + 1) / 10, (2 + math.log(2)) / 10]
    got = energy_confidence(torch.tensor(LOGITS_A, dtype=torch.float64), 10.0).tolist()
    assert got == pytest.approx(expected)


def test_confidence_can_be_negative_and_does_not_overflow():
    got = energy_confidence(torch.tensor([[-5.0, -6.0], [1000.0, 1000.0]], dtype=torch.float64), 10.0).tolist()
    assert got == pytest.approx([_lse([-5.0, -6.0]) / 10, (1000 + math.log(2)) / 10])
    assert got[0] < 0


def test_fused_logits_weight_each_sample_by_its_own_confidence():
    za, zb = torch.tensor(LOGITS_A, dtype=torch.float64), torch.tensor(LOGITS_B, dtype=torch.float64)
    fused = fuse_by_confidence([za, zb], [energy_confidence(za, 10.0), energy_confidence(zb, 10.0)]).tolist()
    for i in range(3):
        wa, wb = _lse(LOGITS_A[i]) / 10, _lse(LOGITS_B[i]) / 10
        expected = [wa * a + wb * b for a, b in zip(LOGITS_A[i], LOGITS_B[i])]
        assert fused[i] == pytest.approx(expected)


def test_detached_weights_pass_no_gradient_to_the_confidence():
    za = torch.tensor(LOGITS_A, requires_grad=True)
    w = energy_confidence(za, 10.0)
    fuse_by_confidence([za], [w], detach=True).sum().backward()
    # d/dz of (w.detach() * z).sum() = w, constant along the classes
    expected = [_lse(row) / 10 for row in LOGITS_A for _ in range(2)]
    assert za.grad.flatten().tolist() == pytest.approx(expected, abs=1e-6)


# --------------------------------------------------------------------------------------------------
# History normalisation and rank loss


def test_history_is_normalised_over_the_whole_array():
    history = torch.tensor([0.0, 2.0, 4.0, 1.0, 3.0], dtype=torch.float64)
    assert normalise_history(history).tolist() == pytest.approx([0.0, 0.5, 1.0, 0.25, 0.75])
    assert normalise_history(torch.zeros(4)).tolist() == [0.0] * 4  # nothing recorded yet: no pair ranks


def test_rank_loss_small_batch_by_hand():
    # rows 1, 2, 4 of the history above -> l = [0.5, 1.0, 0.75]
    # pairs: (0,1) t=-1 m=0.5; (1,2) t=+1 m=0.25; (2,0) t=+1 m=0.25
    conf = [0.9, 0.1, 0.6]
    expected = (max(0, -(0.9 - 0.1) - 0.5) + max(0, (0.1 - 0.6) - 0.25) + max(0, (0.6 - 0.9) - 0.25)) / 3
    assert expected == 0.0  # every constraint satisfied
    got = rank_loss(torch.tensor(conf, dtype=torch.float64), torch.tensor([0.5, 1.0, 0.75], dtype=torch.float64))
    assert got.item() == pytest.approx(expected)

    conf = [0.1, 0.9, 1.5]
    # (0,1): t=-1 -> -(0.1 - 0.9) - 0.5 = 0.3; (1,2): t=+1 -> (0.9 - 1.5) - 0.25 < 0; (2,0): 1.4 - 0.25 = 1.15
    expected = (0.3 + 0.0 + 1.15) / 3
    got = rank_loss(torch.tensor(conf, dtype=torch.float64), torch.tensor([0.5, 1.0, 0.75], dtype=torch.float64))
    assert got.item() == pytest.approx(expected)
    assert got.item() == pytest.approx(_hand_rank_loss(conf, [0.5, 1.0, 0.75]))


def test_rank_loss_ignores_tied_pairs_but_averages_over_all():
    conf = torch.tensor([5.0, 0.0, 0.0, 3.0], dtype=torch.float64)
    hist = torch.tensor([0.2, 0.2, 0.7, 0.7], dtype=torch.float64)
    # (0,1) tie -> 0; (1,2) t=-1 -> -(0 - 0) - 0.5 < 0; (2,3) tie -> 0; (3,0) t=+1 -> (3 - 5) - 0.5 < 0
    assert rank_loss(conf, hist).item() == 0.0
    conf = torch.tensor([0.0, 0.0, 4.0, 0.0], dtype=torch.float64)
    # (1,2): t=-1 -> -(0 - 4) - 0.5 = 3.5; the rest 0 or negative -> mean 3.5 / 4
    assert rank_loss(conf, hist).item() == pytest.approx(3.5 / 4)


def test_rank_loss_trains_the_confidence():
    conf = torch.tensor([0.1, 0.9, 1.5], requires_grad=True)
    rank_loss(conf, torch.tensor([0.5, 1.0, 0.75])).backward()
    # active pairs, each / 3: (0,1) with t=-1 is -(c0 - c1) - m -> d/dc0 = -1, d/dc1 = +1;
    # (2,0) with t=+1 is (c2 - c0) - m -> d/dc2 = +1, d/dc0 = -1
    assert conf.grad.tolist() == pytest.approx([-2 / 3, 1 / 3, 1 / 3])


# --------------------------------------------------------------------------------------------------
# The method's training step


def _setup(method: QMF, num_train: int = 10):
    description = DataDescription(
        (ModalitySpec("a", (4,)), ModalitySpec("b", (3,))), num_classes=3, num_train=num_train
    )
    torch.manual_seed(0)
    model = method.build(description)
    model.train()
    index = torch.tensor([7, 2, 5, 0])
    batch = Batch(
        {"a": torch.randn(4, 4), "b": torch.randn(4, 3)},
        torch.tensor([0, 2, 1, 2]),
        index,
        torch.ones(4, 2, dtype=torch.bool),
    )
    return model, batch


def _hand_total(method, logits, labels, histories, index):
    """sum_m CE(z_m) + CE(sum_m w_m z_m) + lambda * sum_m R_m with plain floats."""
    b = len(labels)
    total = sum(sum(_ce(z[i], labels[i]) for i in range(b)) / b for z in logits)
    weights = [[_lse(z[i]) / method.temperature for i in range(b)] for z in logits]
    if method.fused_ce:
        fused = [
            [sum(w[i] * z[i][c] for w, z in zip(weights, logits)) for c in range(len(logits[0][0]))] for i in range(b)
        ]
        total += sum(_ce(fused[i], labels[i]) for i in range(b)) / b
    for w, hist in zip(weights, histories):
        low, high = min(hist), max(hist)
        normalised = [(hist[n] - low) / (high - low) for n in index]
        total += method.rank_weight * _hand_rank_loss(w, normalised)
    return total


@pytest.mark.parametrize("before", [True, False])
def test_loss_and_history_update_by_hand(before):
    method = QMF(history_before_rank=before, rank_weight=0.5)
    model, batch = _setup(method)
    prior = [[0.0, 1.0, 2.0, 0.5, 0.0, 3.0, 0.0, 1.5, 0.0, 0.25], [2.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.0, 4.0, 1.0, 0.0]]
    model.loss_history.copy_(torch.tensor(prior))
    with torch.no_grad():  # train-mode BatchNorm: the same logits as the loss will see
        logits = [z.tolist() for z in model(batch.inputs).values()]
    out = method.loss(model, batch, StepContext(0, 1, 0, 1, 0))

    labels, index = batch.label.tolist(), batch.index.tolist()
    updated = [list(h) for h in prior]
    for m, z in enumerate(logits):
        for i, n in enumerate(index):
            updated[m][n] += _ce(z[i], labels[i])
    assert model.loss_history.tolist() == [pytest.approx(h, abs=1e-5) for h in updated]
    expected = _hand_total(method, logits, labels, updated if before else prior, index)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def test_predict_does_not_touch_the_history_and_fuses_dynamically():
    method = QMF()
    model, batch = _setup(method)
    model.eval()
    with torch.no_grad():
        pred = method.predict(model, batch)
    assert model.loss_history.abs().sum().item() == 0.0
    za, zb = (pred.per_modality[m].tolist() for m in ("a", "b"))
    for i in range(len(batch)):
        wa, wb = _lse(za[i]) / 10, _lse(zb[i]) / 10
        assert pred.logits[i].tolist() == pytest.approx([wa * a + wb * b for a, b in zip(za[i], zb[i])], abs=1e-5)


def test_history_is_in_the_state_dict():
    model, _ = _setup(QMF(), num_train=10)
    assert model.state_dict()["loss_history"].shape == (2, 10)


def test_registered_defaults():
    assert default_method("qmf") == QMF()
    q = QMF()
    assert (q.temperature, q.rank_weight, q.fused_ce, q.detach_weights, q.history_before_rank) == (
        10.0,
        1.0,
        True,
        True,
        True,
    )
