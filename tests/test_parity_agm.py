"""AGM parity: Shapley mono-modal responses, mono-modal scores, the modulation coefficient, the running
average and the gradient scaling, checked against the released two-modality formulas and plain-torch
computations written here; one epoch through bench.cells on synthetic_2m and synthetic_3m.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from parity_problems import one_epoch_scoring_every_modality, registered_defaults

from bench.methods.agm import (
    AGM,
    agm_coefficients,
    mono_scores,
    running_mean_update,
    scale_gradient,
    shapley_responses,
)
from bench.nn import encode
from bench.protocol import Batch, DataDescription, ModalitySpec, StepContext

torch.set_num_threads(1)


def _values(names, seed=0):
    torch.manual_seed(seed)
    out = {}
    for size in range(1, len(names) + 1):
        for subset in itertools.combinations(names, size):
            out[frozenset(subset)] = torch.randn(4, 3, dtype=torch.float64)
    return out


def test_two_modality_responses_are_the_released_formula():
    v = _values("av")
    total, pad_visual, pad_audio = v[frozenset("av")], v[frozenset("a")], v[frozenset("v")]
    phi = shapley_responses(v, ["a", "v"])
    # CREMAD_net.py: m_a = 0.5 (total - pad_audio + pad_visual), m_v = 0.5 (total - pad_visual + pad_audio)
    assert torch.allclose(phi["a"], 0.5 * (total - pad_audio + pad_visual))
    assert torch.allclose(phi["v"], 0.5 * (total - pad_visual + pad_audio))


def test_three_modality_responses_are_balancebenchmarks_written_out_formula():
    v = _values("avt", seed=1)

    def f(s):
        return v[frozenset(s)]

    phi = shapley_responses(v, ["a", "v", "t"])
    # AGM_trainer.py Modality_Audio: 1/3 (AVT - VT) + 1/6 (AV - V + AT - T) + 1/3 A
    expected_a = (f("avt") - f("vt")) / 3 + (f("av") - f("v") + f("at") - f("t")) / 6 + f("a") / 3
    expected_t = (f("avt") - f("av")) / 3 + (f("vt") - f("v") + f("at") - f("a")) / 6 + f("t") / 3
    assert torch.allclose(phi["a"], expected_a)
    assert torch.allclose(phi["t"], expected_t)


@pytest.mark.parametrize("names", ["ab", "abc", "abcd"])
def test_responses_sum_to_the_full_output(names):
    v = _values(names, seed=len(names))
    phi = shapley_responses(v, list(names))
    assert torch.allclose(sum(phi.values()), v[frozenset(names)])


def test_an_explicit_empty_coalition_is_subtracted():
    v = _values("ab", seed=3)
    empty = torch.full((4, 3), 2.0, dtype=torch.float64)
    phi = shapley_responses({**v, frozenset(): empty}, ["a", "b"])
    assert torch.allclose(sum(phi.values()), v[frozenset("ab")] - empty)


def test_mono_scores_are_mean_cross_entropy_with_the_released_floor():
    z = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    far = torch.tensor([[0.0, 100.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)  # p(y) underflows below 1e-8
    y = torch.tensor([0, 1])
    p0 = math.exp(2) / (math.exp(2) + 2)
    p1 = math.e / (math.e + 2)
    assert mono_scores([z], y).tolist() == pytest.approx([-(math.log(p0) + math.log(p1)) / 2])
    assert mono_scores([far], y).tolist() == pytest.approx([(-math.log(1e-8) - math.log(p1)) / 2])


def test_two_modality_coefficients_are_the_released_ones():
    s_a, s_v, hat_a, hat_v, alpha = 0.9, 1.4, 1.1, 1.2, 0.7
    got = agm_coefficients(
        torch.tensor([s_a, s_v], dtype=torch.float64), torch.tensor([hat_a, hat_v], dtype=torch.float64), alpha
    ).tolist()
    # run/CREMAD_main.py: ratio_a = exp(s_v - s_a), optimal_ratio_a = exp(hat_v - hat_a),
    # coeff_a = exp(alpha * min(optimal_ratio_a - ratio_a, 10)), symmetrically for v
    coeff_a = math.exp(alpha * min(math.exp(hat_v - hat_a) - math.exp(s_v - s_a), 10))
    coeff_v = math.exp(alpha * min(math.exp(hat_a - hat_v) - math.exp(s_a - s_v), 10))
    assert got == pytest.approx([coeff_a, coeff_v])
    assert got[0] < 1 < got[1]  # audio is doing better than usual: slowed down; visual sped up


def test_three_modality_coefficients_use_the_mean_of_the_others():
    s, hat, alpha = [0.5, 1.0, 2.0], [1.0, 1.0, 1.0], 0.3
    got = agm_coefficients(torch.tensor(s, dtype=torch.float64), torch.tensor(hat, dtype=torch.float64), alpha)
    for m in range(3):
        others = [s[j] for j in range(3) if j != m]
        others_hat = [hat[j] for j in range(3) if j != m]
        ratio = math.exp(sum(others) / 2 - s[m])
        target = math.exp(sum(others_hat) / 2 - hat[m])
        assert got[m].item() == pytest.approx(math.exp(alpha * min(target - ratio, 10)))


def test_coefficient_exponent_is_capped_at_ten():
    got = agm_coefficients(torch.tensor([5.0, 0.0]), torch.tensor([0.0, 5.0]), 0.5)
    assert got[0].item() == pytest.approx(math.exp(0.5 * 10))


def test_running_mean_is_the_mean_of_every_batch_so_far():
    history = [torch.tensor([1.0, 4.0]), torch.tensor([3.0, 0.0]), torch.tensor([2.0, 2.0])]
    running = torch.zeros(2)
    for t, scores in enumerate(history, start=1):
        running = running_mean_update(running, scores, t)
    assert running.tolist() == pytest.approx([2.0, 2.0])


def test_scale_gradient_keeps_the_value_and_scales_the_gradient():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = scale_gradient(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.tensor([3.0, 5.0])).sum().backward()
    assert x.grad.tolist() == pytest.approx([0.75, 1.25])


# --------------------------------------------------------------------------------------------------
# The method's step, against plain torch


def _setup(method: AGM):
    description = DataDescription((ModalitySpec("a", (5,)), ModalitySpec("v", (4,))), num_classes=3, num_train=8)
    torch.manual_seed(0)
    model = method.build(description)
    model.train()
    batch = Batch(
        {"a": torch.randn(8, 5), "v": torch.randn(8, 4)},
        torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]),
        torch.arange(8),
        torch.ones(8, 2, dtype=torch.bool),
    )
    return model, batch


def _reference_gradients(model, batch, k_a, k_v):
    """The released two-modality step written out: total (train mode), pad_visual and pad_audio (eval
    mode), responses with their gradients scaled by k_a, k_v, CE of their sum."""
    total, _ = model(batch.inputs)
    model.eval()
    feats = encode(model.encoders, batch.inputs)
    zeros = encode(model.encoders, {n: torch.zeros_like(x) for n, x in batch.inputs.items()})
    pad_visual = model.head({"a": feats["a"], "v": zeros["v"]})
    pad_audio = model.head({"a": zeros["a"], "v": feats["v"]})
    model.train()
    m_a = 0.5 * (total - pad_audio + pad_visual)
    m_v = 0.5 * (total - pad_visual + pad_audio)
    fused = k_a * m_a + (1 - k_a) * m_a.detach() + k_v * m_v + (1 - k_v) * m_v.detach()
    loss = F.cross_entropy(fused, batch.label)
    model.zero_grad(set_to_none=True)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_first_step_coefficients_loss_and_gradients_match_plain_torch():
    method = AGM(alpha=0.8)
    model, batch = _setup(method)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = method.loss(model, batch, StepContext(0, 1, 0, 1, 0))
    k = out.extras["coefficients"]
    s = out.extras["scores"]
    # first step: running means are 0, so eta = 1 for both modalities
    assert k["a"] == pytest.approx(math.exp(0.8 * (1 - math.exp(s["v"] - s["a"]))))
    assert k["v"] == pytest.approx(math.exp(0.8 * (1 - math.exp(s["a"] - s["v"]))))
    assert model.running_scores.tolist() == pytest.approx([s["a"], s["v"]])
    model.zero_grad(set_to_none=True)
    out.loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.load_state_dict(state)
    loss, expected = _reference_gradients(model, batch, k["a"], k["v"])
    assert out.loss.item() == pytest.approx(loss, rel=1e-6)
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=1e-4, atol=1e-7), name


def test_outside_the_window_the_step_is_late_fusion():
    """With k = 1 the masked passes cancel exactly: the gradient is that of CE on the full-input logits."""
    method = AGM(modulation_start=5, modulation_end=6)
    model, batch = _setup(method)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = method.loss(model, batch, StepContext(0, 10, 0, 1, 0))
    assert out.extras["coefficients"] == {"a": 1.0, "v": 1.0}
    model.zero_grad(set_to_none=True)
    out.loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.load_state_dict(state)
    logits, _ = model(batch.inputs)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(logits, batch.label).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(got[name], p.grad, rtol=1e-4, atol=1e-7), name


def test_predict_gives_full_logits_and_responses():
    method = AGM()
    model, batch = _setup(method)
    model.eval()
    with torch.no_grad():
        pred = method.predict(model, batch)
        logits, _ = model(batch.inputs)
    assert torch.allclose(pred.logits, logits)
    assert torch.allclose(pred.per_modality["a"] + pred.per_modality["v"], logits, atol=1e-6)


@pytest.mark.parametrize("dataset", ["synthetic_2m", "synthetic_3m"])
def test_one_epoch_through_cells(dataset):
    record = one_epoch_scoring_every_modality("agm", dataset)
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0


def test_registered_with_released_defaults():
    config = registered_defaults("agm")
    assert (config.alpha, config.modulation_start, config.modulation_end, config.grad_clip) == (1.0, 0, 20, False)
