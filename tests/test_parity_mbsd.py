"""MBSD parity: the confidence-gap weights, the RS and KL terms of one pair by hand (both KL variants), the pair
average and the logits/probabilities switch for three modalities, gradients through the weights; one epoch.

Expected values are worked out here with the ``math`` module, not by the code under test.
"""

from __future__ import annotations

import math
from itertools import combinations

import pytest
import torch
import torch.nn.functional as F
from parity_problems import one_epoch_scoring_every_modality, registered_defaults

from bench.methods.mbsd import MBSD, agreement_terms, confidence_gap_weights
from bench.protocol import Batch, DataDescription, ModalitySpec, StepContext

torch.set_num_threads(1)

L3 = math.log(3.0)


def _pair():
    # sample 0: a = (ln 3, 0) -> p_a = (3/4, 1/4); b = (0, 0) -> (1/2, 1/2); label 0: a is right
    # sample 1: same logits, label 1: a predicts 0, b's tie goes to class 0 (argmax) -> both wrong
    za = torch.tensor([[L3, 0.0], [L3, 0.0]], dtype=torch.float64)
    zb = torch.zeros(2, 2, dtype=torch.float64)
    return za, zb, torch.tensor([0, 1])


def test_weights_are_the_true_class_gap_where_either_modality_is_right():
    za, zb, y = _pair()
    assert confidence_gap_weights(za, zb, y).tolist() == pytest.approx([0.25, 0.0])
    # both right on a sample: still the gap
    assert confidence_gap_weights(
        za[:1], torch.tensor([[1.0, 0.0]], dtype=torch.float64), y[:1]
    ).tolist() == pytest.approx([0.75 - math.e / (math.e + 1)])


def test_rs_and_kl_of_one_pair_by_hand():
    za, zb, y = _pair()
    # only sample 0 has weight 0.25; B = 2
    rs_logits = ((L3 - 0.0) ** 2 + 0.0) / 2
    rs_probs = ((0.75 - 0.5) ** 2 + (0.25 - 0.5) ** 2) / 2
    kl_released = 0.5 * (math.log(0.5) - 0.75)  # torch's kl_div reads ps = 0.75 as a log-probability
    kl_log = 0.5 * (math.log(0.5) - math.log(0.75))
    rs, kl = agreement_terms(za, zb, y, rs_on="logits", kl="released")
    assert (float(rs), float(kl)) == pytest.approx((0.25 * rs_logits / 2, 0.25 * kl_released / 2))
    rs, kl = agreement_terms(za, zb, y, rs_on="probabilities", kl="log")
    assert (float(rs), float(kl)) == pytest.approx((0.25 * rs_probs / 2, 0.25 * kl_log / 2))


def _setup(num_modalities: int, **hparams):
    specs = tuple(ModalitySpec(name, (d,)) for name, d in list(zip("abc", (5, 4, 6)))[:num_modalities])
    description = DataDescription(specs, num_classes=3, num_train=24)
    method = MBSD(**hparams)
    torch.manual_seed(6)
    model = method.build(description)
    inputs = {s.name: torch.randn(24, s.shape[0]) for s in specs}
    batch = Batch(inputs, torch.arange(24) % 3, torch.arange(24), torch.ones(24, num_modalities, dtype=torch.bool))
    return method, model, batch


def _independent(model, batch, rs_kind, kl_kind):
    """The loss from the head's weight columns with explicit per-sample loops."""
    h = {name: enc(batch.inputs[name]) for name, enc in model.encoders.items()}
    w, b = model.head.fc.weight, model.head.fc.bias
    z, start = {}, 0
    for name in model.encoders:
        d = h[name].shape[1]
        z[name] = h[name] @ w[:, start : start + d].T + b / len(h)
        start += d
    fused = sum(z.values()) - b / len(h) * len(h) + b
    y = batch.label
    total = F.cross_entropy(fused, y) + sum(F.cross_entropy(v, y) for v in z.values())
    rs_sum = kl_sum = 0.0
    pairs = list(combinations(z, 2))
    for a, c in pairs:
        pa, pc = z[a].softmax(1), z[c].softmax(1)
        for i in range(len(y)):
            ta, tc = float(pa[i, y[i]]), float(pc[i, y[i]])
            right = int(pa[i].argmax()) == int(y[i]) or int(pc[i].argmax()) == int(y[i])
            wi = abs(ta - tc) if right else 0.0
            ua, uc = (z[a][i], z[c][i]) if rs_kind == "logits" else (pa[i], pc[i])
            rs_sum += wi * float(((ua - uc) ** 2).sum()) / z[a].shape[1] / len(y)
            ps, pw = max(ta, tc), min(ta, tc)
            kl_sum += wi * pw * (math.log(pw) - (ps if kl_kind == "released" else math.log(ps))) / len(y)
    return float(total) + (rs_sum + kl_sum) / len(pairs)


@pytest.mark.parametrize(
    ("num_modalities", "rs_input", "rs_kind"),
    [
        (2, "released", "logits"),
        (3, "released", "probabilities"),
        (3, "logits", "logits"),
        (2, "probabilities", "probabilities"),
    ],
)
@pytest.mark.parametrize("kl", ["released", "log"])
def test_loss_matches_the_independent_loop(num_modalities, rs_input, rs_kind, kl):
    method, model, batch = _setup(num_modalities, rs_input=rs_input, kl=kl)
    model.eval()
    with torch.no_grad():
        got = float(method.loss(model, batch, StepContext(0, 1, 0, 1, 0)).loss)
        expected = _independent(model, batch, rs_kind, kl)
    assert got == pytest.approx(expected, rel=1e-5)


def test_outside_the_window_only_the_fused_cross_entropy_remains():
    method, model, batch = _setup(2, modulation_end=3)
    model.eval()
    with torch.no_grad():
        logits, _ = model(batch.inputs)
        assert float(method.loss(model, batch, StepContext(4, 10, 0, 1, 0)).loss) == pytest.approx(
            float(F.cross_entropy(logits, batch.label))
        )


def test_gradient_flows_through_the_weights():
    za = torch.tensor([[L3, 0.0]], dtype=torch.float64, requires_grad=True)
    zb = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    rs, _ = agreement_terms(za, zb, torch.tensor([0]), rs_on="probabilities", kl="released")
    rs.backward()
    # RS = w * rs with w = p_a - 1/2 and rs = (p_a - 1/2)^2 (both classes) -> dRS/dp_a = 3 (p_a - 1/2)^2 > 0;
    # without the path through w it would be 2 w (p_a - 1/2): the two differ, and the code must give the first
    pa = 0.75
    d_dpa = 3 * (pa - 0.5) ** 2
    dpa_dz0 = pa * (1 - pa)
    assert float(za.grad[0, 0]) == pytest.approx(d_dpa * dpa_dz0)


@pytest.mark.parametrize("dataset", ["synthetic_2m", "synthetic_3m"])
def test_one_epoch_through_cells(dataset):
    one_epoch_scoring_every_modality("mbsd", dataset)


def test_registered_with_released_defaults():
    assert registered_defaults("mbsd") == MBSD(
        modulation_start=0, modulation_end=80, rs_input="released", kl="released"
    )
