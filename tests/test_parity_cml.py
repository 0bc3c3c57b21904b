"""CML parity: predicted-class confidence, the batch and per-sample hinges, the nested removal logits of a concat
head, and the full loss against an independent computation; the per-epoch removal order; one epoch through cells.

Expected values are worked out here by hand or with plain torch on the head's weights, not by the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from parity_problems import one_epoch_scoring_every_modality, registered_defaults, seeded_problem

from bench.methods.cml import CML, confidence, confidence_penalty
from bench.protocol import StepContext

torch.set_num_threads(1)


def _logits_with_confidence(*ps):
    """Two-class logits whose predicted-class probability is p (p >= 1/2): (0, ln(p / (1 - p)))."""
    return torch.tensor([[0.0, math.log(p / (1 - p))] for p in ps], dtype=torch.float64)


def test_confidence_is_the_predicted_class_probability():
    z = torch.tensor([[0.0, math.log(3.0)], [math.log(4.0), 0.0]], dtype=torch.float64)
    assert confidence(z).tolist() == pytest.approx([0.75, 0.8])


def test_batch_hinge_sums_before_clipping_and_sample_hinge_clips_each():
    full, reduced = _logits_with_confidence(0.5, 0.9), _logits_with_confidence(0.7, 0.6)
    # rises: +0.2 and -0.3 -> batch: max(0, -0.1) = 0; sample: 0.2 + 0 = 0.2
    assert float(confidence_penalty(full, reduced, "batch")) == pytest.approx(0.0)
    assert float(confidence_penalty(full, reduced, "sample")) == pytest.approx(0.2)
    # both rise: both hinges are the summed rise 0.1 + 0.2
    up = _logits_with_confidence(0.6, 0.8)
    assert float(confidence_penalty(_logits_with_confidence(0.5, 0.6), up, "batch")) == pytest.approx(0.3)
    assert float(confidence_penalty(_logits_with_confidence(0.5, 0.6), up, "sample")) == pytest.approx(0.3)


def _setup(num_modalities: int, hinge="batch"):
    method = CML(hinge=hinge)
    return method, *seeded_problem(method, num_modalities, num_classes=3, num_samples=12, seed=4)


def _independent_loss(model, batch, order, lam, hinge):
    """Reduced logits from the head's weight columns: the kept modalities' W_m h_m plus the *full* bias."""
    h = {name: enc(batch.inputs[name]) for name, enc in model.encoders.items()}
    w, b = model.head.fc.weight, model.head.fc.bias
    cols, start = {}, 0
    for name in model.encoders:
        d = h[name].shape[1]
        cols[name] = h[name] @ w[:, start : start + d].T
        start += d
    kept = list(model.encoders)
    chain = []
    for removed in [None, *order[:-1]]:
        if removed is not None:
            kept.remove(removed)
        chain.append(sum(cols[m] for m in kept) + b)
    ce = sum(F.cross_entropy(z, batch.label) for z in chain) / len(cols)
    reg = 0.0
    for full, reduced in zip(chain, chain[1:]):
        rise = reduced.softmax(1).max(1).values - full.softmax(1).max(1).values
        reg = reg + (torch.relu(rise.sum()) if hinge == "batch" else torch.relu(rise).sum())
    return ce + lam * reg, chain


@pytest.mark.parametrize("num_modalities", [2, 3])
@pytest.mark.parametrize("hinge", ["batch", "sample"])
def test_loss_matches_the_independent_computation(num_modalities, hinge):
    method, model, batch = _setup(num_modalities, hinge)
    model.eval()  # fixed BatchNorm statistics: both passes see the same features
    with torch.no_grad():
        got = float(method.loss(model, batch, StepContext(0, 1, 0, 1, 0)).loss)
        expected, chain = _independent_loss(model, batch, model.removal_order, 0.1, hinge)
    assert got == pytest.approx(float(expected), rel=1e-5)
    # the last reduced model is the one remaining modality's slice with the full bias
    last = model.removal_order[-1]
    logits, features = model(batch.inputs)
    alone = model.head.sliced(features)[last] - model.head.fc.bias / num_modalities + model.head.fc.bias
    assert torch.allclose(chain[-1], alone, atol=1e-5)


def test_removal_order_is_drawn_once_per_epoch():
    method, model, batch = _setup(3)
    orders = {}
    torch.manual_seed(0)
    for epoch in range(8):
        for step in range(3):
            method.loss(model, batch, StepContext(epoch, 8, step, 3, 3 * epoch + step))
            orders.setdefault(epoch, tuple(model.removal_order))
            assert tuple(model.removal_order) == orders[epoch]
        assert sorted(orders[epoch]) == ["a", "b", "c"]
    assert len(set(orders.values())) > 1  # 8 draws from 6 orders are not all equal (probability 6^-7)


def test_penalty_gradient_lowers_a_rising_confidence():
    """A small SGD step on the per-sample regulariser alone lowers it: a real training signal, not a constant."""
    method, model, batch = _setup(2, "sample")
    model.eval()
    before = method.loss(model, batch, StepContext(0, 1, 0, 1, 0)).extras["penalty"]
    assert float(before) > 0  # at this initialisation removing a modality raises some confidences
    model.zero_grad()
    _, chain = _independent_loss(model, batch, model.removal_order, 1.0, "sample")
    rise = chain[1].softmax(1).max(1).values - chain[0].softmax(1).max(1).values
    torch.relu(rise).sum().backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad
    after = method.loss(model, batch, StepContext(0, 1, 0, 1, 0)).extras["penalty"]
    assert float(after) < float(before)


@pytest.mark.parametrize("dataset", ["synthetic_2m", "synthetic_3m"])
def test_one_epoch_through_cells(dataset):
    one_epoch_scoring_every_modality("cml", dataset)


def test_registered_with_released_defaults():
    assert registered_defaults("cml") == CML(lam=0.1, hinge="batch")
    with pytest.raises(ValueError, match="lam"):
        CML(lam=-1.0)
