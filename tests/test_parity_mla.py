"""MLA parity: HGM projector update and gradient projection, alternation, test-time fusion.

Expected values are worked out here from the formulas (``math`` and explicit small matrices), not by the
code under test.
"""

from __future__ import annotations

import math

import pytest
import torch
from parity_problems import registered_defaults

from bench.methods.mla import (
    MLA,
    batch_entropy_weights,
    entropy_weights,
    fixed_weights,
    fuse_logits,
    hgm_alpha,
    project_head_gradient,
    released_projector_update,
    rls_projector_update,
)
from bench.protocol import Batch, DataDescription, LossOut, ModalitySpec, StepContext

# --------------------------------------------------------------------------------------------------
# HGM


def test_alpha_schedule():
    assert hgm_alpha(0, 10) == pytest.approx(0.1)
    assert hgm_alpha(5, 10) == pytest.approx(0.1**1.5)
    assert hgm_alpha(9, 10) == pytest.approx(0.1**1.9)


def test_projector_update_from_identity_by_hand():
    # P = I (3x3), h = (1, 2, 2): k = h^T, h k = |h|^2 = 9, P' = I - h^T h / (alpha + 9), then / ||P'||_F.
    # P' has eigenvalue 1 twice (orthogonal to h) and 1 - 9 / (alpha + 9) = alpha / (alpha + 9) along h.
    alpha = 0.1
    h = [1.0, 2.0, 2.0]
    raw = [[(1.0 if i == j else 0.0) - h[i] * h[j] / (alpha + 9) for j in range(3)] for i in range(3)]
    fro = math.sqrt(2 + (alpha / (alpha + 9)) ** 2)
    assert math.sqrt(sum(v * v for row in raw for v in row)) == pytest.approx(fro)
    expected = [[v / fro for v in row] for row in raw]

    got = rls_projector_update(torch.eye(3, dtype=torch.float64), torch.tensor([h], dtype=torch.float64), alpha)
    assert got.flatten().tolist() == pytest.approx([v for row in expected for v in row])
    assert torch.linalg.matrix_norm(got, ord="fro").item() == pytest.approx(1.0)


def test_projected_gradient_is_orthogonal_to_the_seen_feature_mean():
    torch.manual_seed(0)
    d, c = 6, 4
    h = 3.0 * torch.rand(1, d, dtype=torch.float64)  # non-negative like a ReLU feature, |h|^2 >> alpha
    grad = torch.randn(c, d, dtype=torch.float64)
    alpha = 0.01
    projector = rls_projector_update(torch.eye(d, dtype=torch.float64), h, alpha)
    new_grad = project_head_gradient(grad, projector)
    # Exactly: P' h^T = h^T * alpha / (alpha + |h|^2) / ||P'||_F, so grad P'^T h^T shrinks by that factor.
    sq = (h @ h.T).item()
    fro = math.sqrt(d - 1 + (alpha / (alpha + sq)) ** 2)
    assert (new_grad @ h.T).flatten().tolist() == pytest.approx(
        ((grad @ h.T) * alpha / (alpha + sq) / fro).flatten().tolist()
    )
    assert (new_grad @ h.T).abs().max().item() < 1e-3 * (grad @ h.T).abs().max().item()
    # Orthogonal to h, the gradient is only rescaled by 1 / ||P'||_F.
    v = torch.zeros(1, d, dtype=torch.float64)
    v[0, 0], v[0, 1] = h[0, 1], -h[0, 0]
    assert (new_grad @ v.T).flatten().tolist() == pytest.approx(((grad @ v.T) / fro).flatten().tolist())


def test_paper_update_removes_the_direction_and_the_released_one_does_not_2d():
    # h = (1, 2), alpha = 0, P = I. Paper: P' = I - h^T h / |h|^2 = [[4, -2], [-2, 1]] / 5, ||P'||_F = 1, P' h^T = 0.
    # Released: every entry divided by its own h_i h_j: P' = I - [[1, 1], [1, 1]] = [[0, -1], [-1, 0]],
    # / sqrt(2); P' h^T = -(2, 1) / sqrt(2): h is reversed and swapped, not removed.
    eye, h = torch.eye(2, dtype=torch.float64), torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    paper = rls_projector_update(eye, h, 0.0)
    assert paper.flatten().tolist() == pytest.approx([0.8, -0.4, -0.4, 0.2])
    assert (paper @ h.T).flatten().tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    released = released_projector_update(eye, h, 0.0)
    s = 1 / math.sqrt(2)
    assert released.flatten().tolist() == pytest.approx([0.0, -s, -s, 0.0])
    assert (released @ h.T).flatten().tolist() == pytest.approx([-2 * s, -s])


def test_released_update_divides_elementwise_by_hand():
    # h = (1, 2), alpha = 1, P = I: numerators h_i h_j = [[1, 2], [2, 4]], denominators 1 + h_i h_j = [[2, 3], [3, 5]]
    # -> P' = [[1/2, -2/3], [-2/3, 1/5]], ||P'||_F^2 = (225 + 800 + 36) / 900. The paper's scalar denominator
    # 1 + 5 = 6 gives [[5, -2], [-2, 2]] / 6, ||.||_F = sqrt(37) / 6, and P' h^T = h^T / 6 before normalising.
    eye, h = torch.eye(2, dtype=torch.float64), torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    fro = math.sqrt(1061) / 30
    got = released_projector_update(eye, h, 1.0)
    assert got.flatten().tolist() == pytest.approx([v / fro for v in (1 / 2, -2 / 3, -2 / 3, 1 / 5)])
    paper = rls_projector_update(eye, h, 1.0)
    assert paper.flatten().tolist() == pytest.approx([v / math.sqrt(37) for v in (5, -2, -2, 2)])
    assert (paper @ h.T).flatten().tolist() == pytest.approx([1 / math.sqrt(37), 2 / math.sqrt(37)])


def test_hgm_released_uses_the_elementwise_update_in_training():
    torch.manual_seed(0)
    method = MLA(hgm="released")
    model = method.build(_description(2))
    model.train()
    ctx = StepContext(epoch=0, num_epochs=1, batch_index=2, batches_per_epoch=8, global_step=0)
    (_, before0, after0, _, _), (_, before1, after1, p1, out1) = _run_steps(method, model, _batch(2), ctx)
    assert torch.equal(before0, after0)  # the first step of training is skipped, as for hgm="paper"
    h = out1.extras["features"].mean(0, keepdim=True)
    alpha = 0.1 ** (1 + 2 / 8)
    raw = p1 - (p1 @ h.T @ h @ p1.T) / (alpha + p1 @ h.T @ h)  # elementwise denominator (d x d)
    expected = raw / raw.pow(2).sum().sqrt()
    assert torch.allclose(model.projector, expected, atol=1e-6)
    assert not torch.allclose(model.projector, rls_projector_update(p1, h, alpha), atol=1e-3)
    assert torch.allclose(after1, before1 @ expected.T, atol=1e-6)


def test_projection_is_grad_times_projector_transpose():
    grad = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    p = torch.tensor([[0.5, 1.0], [0.0, 2.0]])
    # row 1: (1*0.5 + 2*1, 1*0 + 2*2) = (2.5, 4); row 2: (3*0.5 + 4*1, 0 + 8) = (5.5, 8)
    assert project_head_gradient(grad, p).tolist() == [[2.5, 4.0], [5.5, 8.0]]


def _description(num_modalities: int) -> DataDescription:
    specs = tuple(ModalitySpec(f"m{i}", (3 + i,)) for i in range(num_modalities))
    return DataDescription(specs, num_classes=3, num_train=6)


def _batch(num_modalities: int) -> Batch:
    inputs = {f"m{i}": torch.randn(6, 3 + i) for i in range(num_modalities)}
    return Batch(
        inputs, torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(6), torch.ones(6, num_modalities, dtype=torch.bool)
    )


def _run_steps(method: MLA, model, batch: Batch, ctx: StepContext):
    """What the loop does per yielded LossOut, returning (modality, head grad before, after) per step."""
    steps = []
    for out in method.loss(model, batch, ctx):
        assert isinstance(out, LossOut)
        model.zero_grad(set_to_none=True)
        out.loss.backward()
        before = model.head.weight.grad.clone()
        p_before = model.projector.clone()
        method.after_backward(model, out, ctx)
        steps.append((out.extras["modality"], before, model.head.weight.grad.clone(), p_before, out))
    return steps


def test_first_step_of_training_is_skipped_then_projected():
    torch.manual_seed(0)
    method = MLA()
    model = method.build(_description(2))
    model.train()
    ctx = StepContext(epoch=0, num_epochs=1, batch_index=3, batches_per_epoch=8, global_step=0)
    steps = _run_steps(method, model, _batch(2), ctx)
    (name0, before0, after0, p0, _), (name1, before1, after1, p1, out1) = steps
    assert (name0, name1) == ("m0", "m1")
    assert torch.equal(before0, after0) and torch.equal(p0, torch.eye(64))  # t = 0: no HGM at all
    # t = 1: P updated from identity with m1's batch-mean feature and alpha = 0.1 ** (1 + 3/8)
    h = out1.extras["features"].mean(0, keepdim=True)
    alpha = 0.1 ** (1 + 3 / 8)
    k = h.T  # P = I
    raw = torch.eye(64) - (k @ k.T) / (alpha + (h @ h.T))
    expected_p = raw / raw.pow(2).sum().sqrt()
    assert torch.allclose(model.projector, expected_p, atol=1e-6)
    assert torch.allclose(after1, before1 @ expected_p.T, atol=1e-6)
    assert int(model.hgm_steps) == 2


def test_projector_persists_across_batches_and_epochs():
    torch.manual_seed(0)
    method = MLA()
    model = method.build(_description(3))
    model.train()
    _run_steps(method, model, _batch(3), StepContext(0, 2, 0, 1, 0))
    carried = model.projector.clone()
    steps = _run_steps(method, model, _batch(3), StepContext(1, 2, 0, 1, 1))
    assert torch.equal(steps[0][3], carried)  # not reset at the new epoch
    assert not torch.equal(steps[0][1], steps[0][2])  # and the first step of a later batch is projected
    assert torch.linalg.matrix_norm(model.projector, ord="fro").item() == pytest.approx(1.0, abs=1e-5)


def test_hgm_none_leaves_the_head_gradient_alone():
    torch.manual_seed(0)
    method = MLA(hgm="none")
    model = method.build(_description(2))
    model.train()
    for _, before, after, _, _ in _run_steps(method, model, _batch(2), StepContext(0, 1, 0, 1, 0)) * 2:
        assert torch.equal(before, after)
    assert torch.equal(model.projector, torch.eye(64))


def test_order_and_one_step_per_modality():
    torch.manual_seed(0)
    method = MLA(order="reversed")
    model = method.build(_description(6))
    model.train()
    names = [s[0] for s in _run_steps(method, model, _batch(6), StepContext(0, 1, 0, 1, 0))]
    assert names == ["m5", "m4", "m3", "m2", "m1", "m0"]


def test_unimodal_logits_use_the_full_bias():
    torch.manual_seed(0)
    method = MLA()
    model = method.build(_description(2))
    model.eval()
    batch = _batch(2)
    with torch.no_grad():
        pred = method.predict(model, batch)
        h = model.encoders["m0"](batch.inputs["m0"])
    assert torch.allclose(pred.per_modality["m0"], h @ model.head.weight.T + model.head.bias)


# --------------------------------------------------------------------------------------------------
# Test-time fusion

Z1 = [[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
Z2 = [[1.0, 1.0, 0.0], [5.0, -1.0, 0.0]]


def _entropy(row):
    total = sum(math.exp(v) for v in row)
    return -sum(math.exp(v) / total * math.log(math.exp(v) / total) for v in row)


def test_entropy_weights_per_sample_by_hand():
    got = entropy_weights([torch.tensor(Z1, dtype=torch.float64), torch.tensor(Z2, dtype=torch.float64)])
    for i in range(2):
        h1, h2 = _entropy(Z1[i]), _entropy(Z2[i])
        top = max(h1, h2)
        e1, e2 = math.exp(top - h1), math.exp(top - h2)  # the official formula, per sample
        assert got[i].tolist() == pytest.approx([e1 / (e1 + e2), e2 / (e1 + e2)])
    # sample 2: modality 1 is uniform (max entropy log 3), so modality 2 gets the larger weight
    assert got[1, 1] > got[1, 0]


def test_entropy_fusion_weights_logits_per_sample():
    z1, z2 = torch.tensor(Z1, dtype=torch.float64), torch.tensor(Z2, dtype=torch.float64)
    fused = fuse_logits([z1, z2], entropy_weights([z1, z2])).tolist()
    for i in range(2):
        h1, h2 = _entropy(Z1[i]), _entropy(Z2[i])
        w1 = math.exp(-h1) / (math.exp(-h1) + math.exp(-h2))
        assert fused[i] == pytest.approx([w1 * a + (1 - w1) * b for a, b in zip(Z1[i], Z2[i])])


def test_batch_entropy_quirk_is_one_weight_per_batch():
    def column_entropy_sum(z):  # softmax over the batch (dim 0), summed over the whole matrix
        total = 0.0
        for c in range(len(z[0])):
            col = [row[c] for row in z]
            norm = sum(math.exp(v) for v in col)
            total -= sum(math.exp(v) / norm * math.log(math.exp(v) / norm) for v in col)
        return total

    h1, h2 = column_entropy_sum(Z1), column_entropy_sum(Z2)
    got = batch_entropy_weights([torch.tensor(Z1, dtype=torch.float64), torch.tensor(Z2, dtype=torch.float64)])
    w1 = math.exp(-h1) / (math.exp(-h1) + math.exp(-h2))
    assert got.tolist() == pytest.approx([w1, 1 - w1])


def test_fixed_weights():
    assert fixed_weights(2).tolist() == pytest.approx([0.55, 0.45])
    assert fixed_weights(3).tolist() == pytest.approx([0.35, 0.25, 0.4])
    assert fixed_weights(6).tolist() == pytest.approx([1 / 6] * 6)
    fused = fuse_logits([torch.tensor(Z1), torch.tensor(Z2)], fixed_weights(2)).tolist()
    for i in range(2):
        assert fused[i] == pytest.approx([0.55 * a + 0.45 * b for a, b in zip(Z1[i], Z2[i])])


# --------------------------------------------------------------------------------------------------
# Registration (all three methods of this change)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mla", {"hgm": "paper", "fusion": "entropy", "order": "dataset"}),
        ("mla_no_hgm", {"hgm": "none", "fusion": "entropy"}),
        ("mla_no_df", {"hgm": "paper", "fusion": "fixed"}),
        ("mla_no_hgm_no_df", {"hgm": "none", "fusion": "fixed"}),
        ("ogm_ge", {"noise": True, "alpha": 0.3}),
        ("ogm", {"noise": False, "alpha": 0.3}),
        ("qmf", {"temperature": 10.0, "rank_weight": 1.0}),
    ],
)
def test_all_variants_are_registered(name, expected):
    config = registered_defaults(name)
    for field, value in expected.items():
        assert getattr(config, field) == value, (name, field)
