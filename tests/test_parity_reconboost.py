"""ReconBoost parity: the boosting loss -(w1/C) log p(y) + (w2/C) q_{-m}(y) log p(y) against hand-derived
values, the stage schedule (boosting then rectification, modalities in turn), which parameters each phase
trains, the ensemble F = beta * sum of joined, present learners, rectification's cross-entropy on F; one
epoch on the imbalance and synthetic data."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from parity_problems import seeded_model, two_modality_batch

from bench.loop import run_cell
from bench.methods.reconboost import ReconBoost, boosting_loss, phase_of
from bench.protocol import Batch, StepContext
from bench.testing import one_epoch_record, tiny_spec

torch.set_num_threads(1)


def test_boosting_loss_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])  # p = (1/4, 3/4) and (1/2, 1/2)
    others = torch.tensor([[math.log(4.0), 0.0], [0.0, 0.0]])  # q = (4/5, 1/5) and (1/2, 1/2)
    label = torch.tensor([1, 0])
    got = boosting_loss(logits, others, label, 5.0, 1.0)
    # sample 0: y = 1, log p = log 3/4, q(y) = 1/5: (-5 + 1/5) log(3/4) / 2
    assert got[0].item() == pytest.approx((-5 + 0.2) * math.log(0.75) / 2, rel=1e-6)
    # sample 1: y = 0, log p = log 1/2, q(y) = 1/2: (-5 + 1/2) log(1/2) / 2
    assert got[1].item() == pytest.approx((-5 + 0.5) * math.log(0.5) / 2, rel=1e-6)


def test_boosting_loss_without_other_learners_uses_q_equal_to_one():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    got = boosting_loss(logits, None, torch.tensor([1]), 5.0, 1.0)
    assert got.item() == pytest.approx(-4 * math.log(0.75) / 2, rel=1e-6)


def test_the_official_loss_is_the_class_mean_of_the_one_hot_products():
    """train.py: -w1 * mean_c(t * log_softmax(f)) + w2 * mean_c(t * softmax(F) * log_softmax(f)), t one-hot."""
    gen = torch.Generator().manual_seed(0)
    logits, others = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    label = torch.tensor([0, 1, 2, 3, 0, 1])
    target = F.one_hot(label, 4).float()
    official = -5.0 * (target * logits.log_softmax(1)).mean(-1) + 1.0 * (
        target * others.softmax(1) * logits.log_softmax(1)
    ).mean(-1)
    assert torch.allclose(boosting_loss(logits, others, label, 5.0, 1.0), official, atol=1e-6)


def test_stage_schedule():
    phases = [phase_of(e, 2, 4, 4) for e in range(18)]
    assert phases[:4] == [("boost", 0)] * 4 and phases[4:8] == [("correct", 0)] * 4
    assert phases[8:12] == [("boost", 1)] * 4 and phases[12:16] == [("correct", 1)] * 4
    assert phases[16:18] == [("boost", 0)] * 2
    assert [phase_of(e, 3, 1, 1) for e in range(6)] == [
        ("boost", 0),
        ("correct", 0),
        ("boost", 1),
        ("correct", 1),
        ("boost", 2),
        ("correct", 2),
    ]


def _setup():
    method = ReconBoost(epochs_per_stage=1, correct_epochs=1)
    return method, seeded_model(method), two_modality_batch()


def _grads(model):
    return {n for n, p in model.named_parameters() if p.grad is not None}


def test_boosting_trains_one_learner_and_the_head_against_the_other_learners():
    method, model, batch = _setup()
    model.train()
    model.joined[0] = True  # learner a joined in stage 0; stage 1 (epoch 2) boosts b against it
    out = method.loss(model, batch, StepContext(2, 4, 0, 1, 0))
    with torch.no_grad():
        f_a = model.head(model.encoders["a"](batch.inputs["a"]))
        f_b = model.head(model.encoders["b"](batch.inputs["b"]))
        expected = boosting_loss(f_b, model.boost_rate * f_a, batch.label, 5.0, 1.0).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    out.loss.backward()
    touched = _grads(model)
    assert any(n.startswith("encoders.b.") for n in touched) and any(n.startswith("head.") for n in touched)
    assert not any(n.startswith("encoders.a.") for n in touched) and "boost_rate" not in touched


def test_rectification_trains_every_joined_learner_head_and_boost_rate_on_the_ensemble():
    method, model, batch = _setup()
    model.train()
    model.joined[:] = True
    with torch.no_grad():
        model.boost_rate.fill_(0.5)
    out = method.loss(model, batch, StepContext(3, 4, 0, 1, 0))  # epoch 3: rectification of stage 1
    with torch.no_grad():
        f_a = model.head(model.encoders["a"](batch.inputs["a"]))
        f_b = model.head(model.encoders["b"](batch.inputs["b"]))
        expected = F.cross_entropy(0.5 * (f_a + f_b), batch.label)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    out.loss.backward()
    touched = _grads(model)
    assert "boost_rate" in touched
    assert any(n.startswith("encoders.a.") for n in touched) and any(n.startswith("encoders.b.") for n in touched)


def test_prediction_sums_joined_present_learners():
    method, model, batch = _setup()
    model.eval()
    model.joined[:] = torch.tensor([True, False])
    mask = torch.ones(12, 2, dtype=torch.bool)
    mask[0, 0] = False
    batch = Batch(batch.inputs, batch.label, batch.index, mask)
    with torch.no_grad():
        pred = method.predict(model, batch)
        f_a = model.head(model.encoders["a"](batch.inputs["a"]))
    assert torch.allclose(pred.logits[1:], f_a[1:])  # beta = 1: only a has joined
    assert torch.equal(pred.logits[0], torch.zeros(3))  # sample 0 lacks a, b has not joined
    assert set(pred.per_modality) == {"a", "b"}


def test_training_follows_the_stages():
    result = run_cell(tiny_spec("reconboost", epochs=4, overrides={"epochs_per_stage": 1, "correct_epochs": 1}))
    assert result["metrics"]["epochs_run"] == 4
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0


@pytest.mark.parametrize("dataset", ["imbalance_2m", "synthetic_3m"])
def test_one_epoch_on_embedded_data(dataset):
    record = one_epoch_record("reconboost", dataset)
    assert record["status"] == "ok", record.get("error")
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
