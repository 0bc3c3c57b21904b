"""OGM-GE parity: coefficients, modulation window and scope, GE noise.

Expected values are worked out here from the formulas with the ``math`` module, not by the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from bench.methods.ogm_ge import (
    OGMGE,
    discrepancy_ratios,
    modulate_gradient,
    ogm_coefficients,
    true_class_scores,
)
from bench.protocol import Batch, DataDescription, ModalitySpec, StepContext
from bench.registry import default_method


def _k(alpha: float, rho: float) -> float:
    return 1 - math.tanh(alpha * rho)


def _coefficients(scores, alpha=0.3, rule="official"):
    return ogm_coefficients(torch.tensor(scores, dtype=torch.float64), alpha, rule).tolist()


# --------------------------------------------------------------------------------------------------
# Scores and ratios


def test_scores_are_batch_sums_of_the_true_class_probability():
    z = torch.tensor([[0.0, 1.0], [2.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([1, 1])
    # sample 0: e^1 / (1 + e^1); sample 1: 1 / (e^2 + 1)
    expected = math.e / (1 + math.e) + 1 / (math.exp(2) + 1)
    assert true_class_scores([z], y).tolist() == pytest.approx([expected])


def test_two_modality_ratios_are_second_over_first_and_inverse():
    rho = discrepancy_ratios(torch.tensor([2.0, 5.0], dtype=torch.float64)).tolist()
    assert rho == pytest.approx([2 / 5, 5 / 2])


def test_three_modality_ratios_are_against_the_sum_of_the_others():
    rho = discrepancy_ratios(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).tolist()
    assert rho == pytest.approx([1 / 5, 2 / 4, 3 / 3])


# --------------------------------------------------------------------------------------------------
# Coefficients, two modalities (first = "audio", second = "visual")


def test_official_suppresses_second_modality_when_it_leads():
    # s_a = 2, s_v = 4: rho_v = 2 > 1 -> k_v = 1 - tanh(0.3 * 2), k_a = 1
    assert _coefficients([2.0, 4.0]) == pytest.approx([1.0, _k(0.3, 2.0)])


def test_official_suppresses_first_modality_when_it_leads():
    # s_a = 4, s_v = 2: rho_v = 0.5 -> else branch, k_a = 1 - tanh(0.3 * rho_a) with rho_a = 2
    assert _coefficients([4.0, 2.0]) == pytest.approx([_k(0.3, 2.0), 1.0])


def test_official_at_exact_balance_suppresses_the_first_modality():
    # rho_v = 1 is not > 1, so the else branch slows audio by 1 - tanh(alpha) although nothing dominates.
    assert _coefficients([3.0, 3.0]) == pytest.approx([_k(0.3, 1.0), 1.0])
    assert _coefficients([3.0, 3.0])[0] == pytest.approx(0.7087, abs=1e-4)  # 0.709
    assert _coefficients([3.0, 3.0], alpha=0.8)[0] == pytest.approx(0.3360, abs=1e-4)  # 0.336


def test_official_jumps_at_rho_one_while_paper_is_continuous():
    just_above = _coefficients([1.0, 1.0 + 1e-9])
    assert just_above[1] == pytest.approx(_k(0.3, 1.0))  # jump from 1 to 1 - tanh(alpha)
    paper = _coefficients([1.0, 1.0 + 1e-9], rule="paper")
    assert paper == pytest.approx([1.0, 1.0])


def test_paper_rule_on_both_sides_of_balance():
    # rho_v = 2: k_v = 1 - tanh(0.3 * (2 - 1)); rho_a = 0.5 -> relu(-0.5) = 0 -> k_a = 1
    assert _coefficients([2.0, 4.0], rule="paper") == pytest.approx([1.0, _k(0.3, 1.0)])
    assert _coefficients([4.0, 2.0], rule="paper") == pytest.approx([_k(0.3, 1.0), 1.0])
    assert _coefficients([3.0, 3.0], rule="paper") == pytest.approx([1.0, 1.0])


# --------------------------------------------------------------------------------------------------
# Three and six modalities (MLA main.py cascade: second, then third, else first)


def test_three_modalities_cascade():
    # v leads: rho_v = 3 / 2
    assert _coefficients([1.0, 3.0, 1.0]) == pytest.approx([1.0, _k(0.3, 1.5), 1.0])
    # t leads: rho_v = 1 / 4, rho_t = 3 / 2
    assert _coefficients([1.0, 1.0, 3.0]) == pytest.approx([1.0, 1.0, _k(0.3, 1.5)])
    # a leads: neither v nor t exceeds 1 -> a with rho_a = 3 / 2
    assert _coefficients([3.0, 1.0, 1.0]) == pytest.approx([_k(0.3, 1.5), 1.0, 1.0])
    # balanced: every rho = 1/2, still the else branch -> a is slowed by 1 - tanh(0.3 * 0.5)
    assert _coefficients([1.0, 1.0, 1.0]) == pytest.approx([_k(0.3, 0.5), 1.0, 1.0])
    assert _coefficients([1.0, 1.0, 1.0], rule="paper") == pytest.approx([1.0, 1.0, 1.0])


def test_six_modalities_generalise_the_cascade():
    # sixth leads: rho_6 = 10 / 5 = 2
    assert _coefficients([1.0] * 5 + [10.0]) == pytest.approx([1.0] * 5 + [_k(0.3, 2.0)])
    # nobody leads: first slowed with rho_1 = 1 / 5
    assert _coefficients([1.0] * 6) == pytest.approx([_k(0.3, 0.2)] + [1.0] * 5)


# --------------------------------------------------------------------------------------------------
# Gradient modulation


def test_modulation_without_noise_is_a_plain_scale():
    g = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    assert torch.equal(modulate_gradient(g, 0.25, noise=False), g * 0.25)


def test_noise_std_follows_the_unmodulated_gradient():
    torch.manual_seed(0)
    g = 3.0 * torch.randn(300, 300, dtype=torch.float64)
    sd = g.std().item()
    torch.manual_seed(1)
    residual = modulate_gradient(g, 0.1, noise=True) - 0.1 * g
    # std(g) = 3, not 0.1 * 3: the noise is scaled by the gradient before modulation
    assert residual.std().item() == pytest.approx(sd + 1e-8, rel=0.02)
    assert abs(residual.mean().item()) < 0.05


def test_noise_is_drawn_from_the_seeded_global_generator():
    g = torch.ones(4, 4) + torch.arange(16.0).view(4, 4)
    torch.manual_seed(123)
    first = modulate_gradient(g, 0.5, noise=True)
    torch.manual_seed(123)
    assert torch.equal(first, modulate_gradient(g, 0.5, noise=True))


def test_noise_matches_the_official_draw_whatever_the_memory_format():
    """main.py: ``grad * coeff + torch.zeros_like(grad).normal_(0, grad.std().item() + 1e-8)`` on a contiguous
    model; bench's ResNet-18s keep channels-last gradients, which must get the same draw per element."""
    torch.manual_seed(0)
    g = torch.randn(8, 3, 3, 3)
    std = g.std().item() + 1e-8
    torch.manual_seed(7)
    official = g * 0.5 + torch.zeros_like(g).normal_(0, std)
    for grad in (g, g.to(memory_format=torch.channels_last)):
        torch.manual_seed(7)
        assert torch.allclose(modulate_gradient(grad, 0.5, noise=True), official, rtol=0, atol=1e-6)


def _two_modality_setup(method: OGMGE, epoch: int):
    description = DataDescription((ModalitySpec("a", (5,)), ModalitySpec("b", (7,))), num_classes=3, num_train=8)
    torch.manual_seed(0)
    model = method.build(description)
    model.train()
    inputs = {"a": torch.randn(8, 5), "b": torch.randn(8, 7)}
    batch = Batch(inputs, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), torch.arange(8), torch.ones(8, 2, dtype=torch.bool))
    ctx = StepContext(epoch=epoch, num_epochs=10, batch_index=0, batches_per_epoch=1, global_step=0)
    out = method.loss(model, batch, ctx)
    out.loss.backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    return model, out, ctx, before, batch


def _hand_coefficients(out, alpha):
    """The official 2-modality rule, written out again with plain floats."""
    labels = out.extras["labels"].tolist()
    scores = []
    for z in out.extras["unimodal_logits"].values():
        total = 0.0
        for row, y in zip(z.tolist(), labels):
            total += math.exp(row[y]) / sum(math.exp(v) for v in row)
        scores.append(total)
    rho_v = scores[1] / scores[0]
    return (1.0, _k(alpha, rho_v)) if rho_v > 1 else (_k(alpha, 1 / rho_v), 1.0)


def test_modulation_only_in_window_and_only_on_encoder_weights():
    method = OGMGE(noise=False, modulation_start=2, modulation_end=4)
    for epoch, active in ((1, False), (2, True), (4, True), (5, False)):
        model, out, ctx, before, _ = _two_modality_setup(method, epoch)
        k = _hand_coefficients(out, method.alpha)
        method.after_backward(model, out, ctx)
        for name, p in model.named_parameters():
            parts = name.split(".")
            is_encoder_weight = parts[0] == "encoders" and p.dim() > 1
            if active and is_encoder_weight:
                expected = before[name] * k[("a", "b").index(parts[1])]
                assert torch.allclose(p.grad, expected, rtol=1e-5, atol=1e-8), (epoch, name)
            else:
                assert torch.equal(p.grad, before[name]), (epoch, name)


def test_scores_come_from_sliced_logits_with_the_bias_share():
    method = OGMGE(noise=False)
    model, out, _, _, batch = _two_modality_setup(method, 0)
    with torch.no_grad():  # train mode: BatchNorm uses the batch statistics, as in the loss
        _, features = model(batch.inputs)
    w, b = model.head.fc.weight, model.head.fc.bias
    dim_a = features["a"].shape[1]
    expected = {"a": features["a"] @ w[:, :dim_a].T + b / 2, "b": features["b"] @ w[:, dim_a:].T + b / 2}
    for name in ("a", "b"):
        assert torch.allclose(out.extras["unimodal_logits"][name], expected[name], atol=1e-6)


def test_ge_noise_reaches_both_encoders_in_window():
    method = OGMGE(noise=True)
    model, out, ctx, before, _ = _two_modality_setup(method, 0)
    torch.manual_seed(5)
    method.after_backward(model, out, ctx)
    k = _hand_coefficients(out, method.alpha)
    for m, name in enumerate(("a", "b")):
        key = f"encoders.{name}.net.1.weight"  # the first Linear (net.0 is Flatten)
        grad = dict(model.named_parameters())[key].grad
        # the coefficient-1 modality gets noise too
        assert not torch.allclose(grad, before[key] * k[m])


def test_conv_only_rule_does_nothing_on_mlp_encoders():
    method = OGMGE(param_rule="conv_only")
    model, out, ctx, before, _ = _two_modality_setup(method, 0)
    method.after_backward(model, out, ctx)
    for name, p in model.named_parameters():
        assert torch.equal(p.grad, before[name]), name


def test_registered_presets():
    assert default_method("ogm_ge") == OGMGE()
    assert default_method("ogm") == OGMGE(noise=False)
    defaults = OGMGE()
    assert (defaults.alpha, defaults.modulation_start, defaults.modulation_end) == (0.3, 0, 50)
    assert (defaults.coefficient, defaults.noise, defaults.param_rule, defaults.fusion) == (
        "official",
        True,
        "all_weights",
        "concat",
    )
