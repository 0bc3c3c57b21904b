"""AMCo parity: the sine curriculum of the mask ratio, the dependence test on softmax shares, masking of the
dependent modality's logits and the co-optimised loss against an independent computation; one epoch through cells.

Expected values are worked out here with the ``math`` module or plain torch, not by the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from parity_problems import one_epoch_scoring_every_modality, registered_defaults, seeded_problem

from bench.methods.amco import AMCo, dependent_modalities, mask_ratio
from bench.protocol import StepContext

torch.set_num_threads(1)


def test_mask_ratio_curriculum_by_hand():
    assert mask_ratio(7, 0, 0.3) == 0.0  # l_t stays 0 through epoch 0
    # epoch 1, batch 1: l_t = 0.1 -> sin(pi/2 * 0.1/0.3) = sin(pi/6) = 1/2
    assert mask_ratio(1, 1, 0.3) == pytest.approx(0.5)
    assert mask_ratio(2, 1, 0.3) == pytest.approx(math.sin(math.pi / 3))
    assert mask_ratio(3, 1, 0.3) == pytest.approx(1.0) == mask_ratio(50, 4, 0.3)  # capped at eps


def test_dependence_is_a_softmax_share_above_sigma():
    # one sample, C = 2: z_a = (ln 3, 0), z_b = (0, 0): softmax over (3, 1, 1, 1)/6 -> a holds 4/6, b 2/6
    sliced = {"a": torch.tensor([[math.log(3.0), 0.0]]), "b": torch.zeros(1, 2)}
    assert dependent_modalities(sliced, 0.5) == {"a": True, "b": False}
    assert dependent_modalities(sliced, 0.7) == {"a": False, "b": False}
    # shares are averaged over the batch: a second sample where b holds 4/6 balances them to 1/2 each
    both = {
        "a": torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]]),
        "b": torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]]),
    }
    assert dependent_modalities(both, 0.5) == {"a": False, "b": False}


def _setup(num_modalities: int):
    method = AMCo()
    return method, *seeded_problem(method, num_modalities, num_classes=4, num_samples=16, seed=3)


@pytest.mark.parametrize("num_modalities", [2, 3])
def test_masked_loss_matches_the_independent_computation(num_modalities):
    method, model, batch = _setup(num_modalities)
    model.eval()
    model.dependent = {name: name == "a" for name in model.encoders}  # as if the last step found "a" dependent
    ctx = StepContext(1, 5, 1, 10, 11)  # p_t = 1/2 -> int(0.5 * 4) = 2 of the 4 class logits masked
    torch.manual_seed(0)
    with torch.no_grad():
        out = method.loss(model, batch, ctx)
    mask = out.extras["mask"]
    assert mask.tolist().count(0.0) == 2
    with torch.no_grad():
        h = {name: enc(batch.inputs[name]) for name, enc in model.encoders.items()}
        w, b = model.head.fc.weight, model.head.fc.bias
        z, start = {}, 0
        for name in model.encoders:
            d = h[name].shape[1]
            z[name] = h[name] @ w[:, start : start + d].T + b / num_modalities
            start += d
        z["a"] = z["a"] * mask
        fused = model.linear_star(sum(z.values()))
        expected = F.cross_entropy(fused, batch.label) + sum(F.cross_entropy(v, batch.label) for v in z.values())
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-5)
    # and the next step's dependence comes from these masked logits
    shares = torch.cat(list(z.values()), 1).softmax(1)
    assert out.extras["dependent"]["a"] == bool(shares[:, :4].sum(1).mean() > 0.5)


def test_epoch_zero_masks_nothing_and_prediction_is_unmasked():
    method, model, batch = _setup(2)
    model.eval()
    model.dependent = {"a": True, "b": True}
    with torch.no_grad():
        out = method.loss(model, batch, StepContext(0, 5, 9, 10, 9))
        assert out.extras["mask"].eq(1).all()
        pred = method.predict(model, batch)
        logits, _ = model(batch.inputs)
    assert torch.allclose(pred.logits, model.linear_star(logits), atol=1e-6)


def test_outside_the_window_only_the_fused_cross_entropy():
    method = AMCo(modulation_end=2)
    _, model, batch = _setup(2)
    model.eval()
    with torch.no_grad():
        logits, _ = model(batch.inputs)
        got = float(method.loss(model, batch, StepContext(3, 5, 4, 10, 34)).loss)
    assert got == pytest.approx(float(F.cross_entropy(model.linear_star(logits), batch.label).detach()))


@pytest.mark.parametrize("dataset", ["synthetic_2m", "synthetic_3m"])
def test_one_epoch_through_cells(dataset):
    one_epoch_scoring_every_modality("amco", dataset)


def test_registered_with_released_defaults():
    assert registered_defaults("amco") == AMCo(sigma=0.5, eps=0.3, modulation_start=0, modulation_end=80)
    with pytest.raises(ValueError, match="sigma"):
        AMCo(sigma=1.0)
