"""MMPareto parity: two-gradient min-norm weights, the conflict switch, magnitude rescaling, and the full
encoder-gradient rewrite against an independent plain-torch computation; one epoch through bench.cells.

Expected values come from the formulas written out here (closed form by hand, brute-force minimisation),
not from the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from parity_problems import one_epoch_scoring_every_modality, registered_defaults

from bench.methods.mmpareto import MMPareto, integrated_gradient, min_norm_weights, pareto_weights, rescale
from bench.protocol import Batch, DataDescription, ModalitySpec, StepContext

torch.set_num_threads(1)


def _brute_force_min_norm(g1, g2):
    """argmin over a fine grid of a in [0, 1] of ||a g1 + (1 - a) g2||^2, with numpy.

    The squared norm is expanded as a^2 <g1, g1> + 2 a (1 - a) <g1, g2> + (1 - a)^2 <g2, g2>, so the grid
    costs three dot products however long the gradients are."""
    g1, g2 = np.asarray(g1, dtype=np.float64), np.asarray(g2, dtype=np.float64)
    a = np.linspace(0.0, 1.0, 200_001)
    norms = a**2 * (g1 @ g1) + 2 * a * (1 - a) * (g1 @ g2) + (1 - a) ** 2 * (g2 @ g2)
    return a[np.argmin(norms)]


@pytest.mark.parametrize(
    ("g1", "g2"),
    [([1.0, 0.0], [-1.0, 1.0]), ([3.0, -1.0, 0.5], [-0.5, 2.0, -1.0]), ([0.2, 0.1], [-4.0, 0.3])],
)
def test_min_norm_weights_match_brute_force_on_conflicting_gradients(g1, g2):
    assert float(np.dot(g1, g2)) < 0  # conflicting
    a, b = min_norm_weights(torch.tensor(g1, dtype=torch.float64), torch.tensor(g2, dtype=torch.float64))
    assert a == pytest.approx(_brute_force_min_norm(np.array(g1), np.array(g2)), abs=1e-5)
    assert a + b == pytest.approx(1.0)


def test_min_norm_by_hand_and_official_closed_form():
    # g1 = (1, 0), g2 = (-1, 1): v11 = 1, v12 = -1, v22 = 2 -> a = (v22 - v12) / (v11 + v22 - 2 v12) = 3/5
    a, b = min_norm_weights(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]))
    assert (a, b) == pytest.approx((0.6, 0.4))
    assert pareto_weights(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])) == pytest.approx((0.6, 0.4))


def test_non_conflicting_gradients_get_equal_weights():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.1])
    # the min-norm point would be (almost) g1 alone, but MMPareto uses 1/2, 1/2 when cos > 0
    assert min_norm_weights(g1, g2)[0] > 0.9
    assert pareto_weights(g1, g2) == (0.5, 0.5)
    assert torch.allclose(integrated_gradient(g1, g2, (0.5, 0.5)), g1 + g2)


def test_orthogonal_gradients_count_as_conflict():
    # the released code takes the Pareto branch unless cos > 0 strictly
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    # min ||a e1 + (1 - a) 2 e2||^2 = a^2 + 4 (1 - a)^2 -> a = 4/5
    assert pareto_weights(g1, g2) == pytest.approx((0.8, 0.2))


def test_rescale_enhances_up_to_the_uniform_sum_magnitude():
    h = integrated_gradient(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]), (0.6, 0.4))
    assert h.tolist() == pytest.approx([0.4, 0.8])
    g_sum = torch.tensor([0.0, 1.0])  # ||g_sum|| = 1 > ||h|| = sqrt(0.8)
    expected = [1.5 * (1 / math.sqrt(0.8)) * v for v in (0.4, 0.8)]
    assert rescale(h, g_sum, 1.5).tolist() == pytest.approx(expected)
    # when h is already longer than the sum, only gamma applies
    assert rescale(h, torch.tensor([0.1, 0.0]), 1.5).tolist() == pytest.approx([0.6, 1.2])
    assert rescale(torch.zeros(3), torch.ones(3), 1.5).tolist() == [0.0, 0.0, 0.0]


def _setup(num_modalities: int):
    specs = tuple(ModalitySpec(name, (d,)) for name, d in list(zip("abc", (5, 4, 6)))[:num_modalities])
    description = DataDescription(specs, num_classes=3, num_train=12)
    method = MMPareto()
    torch.manual_seed(1)
    model = method.build(description)
    model.train()
    inputs = {s.name: torch.randn(12, s.shape[0]) for s in specs}
    batch = Batch(
        inputs, torch.tensor([0, 1, 2] * 4), torch.arange(12), torch.ones(12, num_modalities, dtype=torch.bool)
    )
    return method, model, batch


def _independent_grads(model, batch):
    """Per-loss gradients with plain autograd, the model in train mode on the same batch."""
    logits, features = model(batch.inputs)
    loss_multi = F.cross_entropy(logits, batch.label)
    result = {}
    for name, encoder in model.encoders.items():
        params = list(encoder.parameters())
        loss_uni = F.cross_entropy(model.unimodal_heads[name](features[name]), batch.label)
        g_multi = torch.autograd.grad(loss_multi, params, retain_graph=True)
        g_uni = torch.autograd.grad(loss_uni, params, retain_graph=True)
        result[name] = (g_multi, g_uni)
    return result


@pytest.mark.parametrize("num_modalities", [2, 3])
def test_after_backward_rewrites_every_encoder_tensor_as_the_paper_rule(num_modalities):
    method, model, batch = _setup(num_modalities)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    reference = _independent_grads(model, batch)
    model.load_state_dict(state)  # undo the BatchNorm running-stat update of the reference pass

    ctx = StepContext(0, 1, 0, 1, 0)
    out = method.loss(model, batch, ctx)
    model.zero_grad(set_to_none=True)
    out.loss.backward()
    head_grads = {n: p.grad.clone() for n, p in model.named_parameters() if not n.startswith("encoders.")}
    method.after_backward(model, out, ctx)

    for name, (g_multi, g_uni) in reference.items():
        flat_m = torch.cat([g.reshape(-1) for g in g_multi]).double().numpy()
        flat_u = torch.cat([g.reshape(-1) for g in g_uni]).double().numpy()
        cosine = flat_m @ flat_u / (np.linalg.norm(flat_m) * np.linalg.norm(flat_u))
        a = 0.5 if cosine > 0 else _brute_force_min_norm(flat_m, flat_u)
        for p, gm, gu in zip(model.encoders[name].parameters(), g_multi, g_uni):
            h = 2 * (a * gm + (1 - a) * gu)
            factor = max(1.0, float((gm + gu).norm() / h.norm())) if h.norm() > 0 else 1.0
            assert torch.allclose(p.grad, 1.5 * factor * h, rtol=1e-3, atol=1e-5), name  # grid step 5e-6 in a
    for n, p in model.named_parameters():  # heads keep the plain gradient of the summed loss
        if not n.startswith("encoders."):
            assert torch.equal(p.grad, head_grads[n]), n


def test_conflicts_occur_and_are_resolved_on_real_gradients():
    """Across a few seeds at least one modality's gradients conflict, and then the integrated direction
    does not increase either loss to first order (<h, g_mm> >= 0 and <h, g_m> >= 0)."""
    conflicts = 0
    for seed in range(6):
        torch.manual_seed(seed)
        method, model, batch = _setup(2)
        for g_multi, g_uni in _independent_grads(model, batch).values():
            gm, gu = torch.cat([g.reshape(-1) for g in g_multi]), torch.cat([g.reshape(-1) for g in g_uni])
            weights = pareto_weights(gm, gu)
            if weights != (0.5, 0.5):
                conflicts += 1
                h = integrated_gradient(gm, gu, weights)
                assert float(h @ gm) >= -1e-6 and float(h @ gu) >= -1e-6
    assert conflicts > 0


@pytest.mark.parametrize("dataset", ["synthetic_2m", "synthetic_3m"])
def test_one_epoch_through_cells(dataset):
    metrics = one_epoch_scoring_every_modality("mmpareto", dataset)["metrics"]
    assert 0.0 <= metrics["accuracy"] <= 1.0


def test_registered_with_paper_defaults():
    assert registered_defaults("mmpareto") == MMPareto(gamma=1.5, fusion="concat")
