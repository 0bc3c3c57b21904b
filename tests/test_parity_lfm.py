"""LFM parity: the official fitted weight schedule, the JS divergence between the modalities' predictions,
and the loss 2 (alpha_1 CE(mean logits) + alpha_2 mean-pair JS) against hand-derived values; one epoch on
the imbalance and synthetic data."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from parity_problems import seeded_model, two_modality_batch

from bench.methods.lfm import ALPHA1_COEFFICIENTS, LFM, fitted_weights, gap_divergence
from bench.protocol import StepContext
from bench.testing import one_epoch_record

torch.set_num_threads(1)


def test_fitted_schedule_starts_supervised_weight_low_and_sums_to_one():
    a1, a2 = fitted_weights(0)
    assert a1 == pytest.approx(0.204623704) and a2 == pytest.approx(0.795376296)
    # at epoch 10: 0.204623704 + 10 c1 + 100 c2 + 1000 c3 + 1e4 c4 + 1e5 c5
    c = ALPHA1_COEFFICIENTS
    expected = c[0] + 10 * c[1] + 100 * c[2] + 1000 * c[3] + 1e4 * c[4] + 1e5 * c[5]
    assert fitted_weights(10)[0] == pytest.approx(expected)
    # 0.2046237 + 0.0335473 + 0.0122990 - 0.0029295 + 0.0002238 - 0.0000054
    assert fitted_weights(10)[0] == pytest.approx(0.2477589, abs=1e-6)
    assert all(sum(fitted_weights(e)) == pytest.approx(1.0) for e in (0, 50, 199))


def test_divergences_by_hand():
    p = torch.tensor([[0.0, math.log(3.0)]])  # (1/4, 3/4)
    q = torch.tensor([[math.log(1.0 / 3.0), 0.0]])  # (1/4, 3/4) too: identical, both divergences vanish
    assert gap_divergence(p, q, "official").item() == pytest.approx(0.0, abs=1e-7)
    r = torch.tensor([[0.0, 0.0]])  # (1/2, 1/2); m with p = (3/8, 5/8)
    m = (3 / 8, 5 / 8)
    official = 0.5 * (
        m[0] * math.log(m[0] / 0.25)
        + m[1] * math.log(m[1] / 0.75)
        + m[0] * math.log(m[0] / 0.5)
        + m[1] * math.log(m[1] / 0.5)
    )
    js = 0.5 * (
        0.25 * math.log(0.25 / m[0])
        + 0.75 * math.log(0.75 / m[1])
        + 0.5 * math.log(0.5 / m[0])
        + 0.5 * math.log(0.5 / m[1])
    )
    assert gap_divergence(p, r, "official").item() == pytest.approx(official, rel=1e-6)
    assert gap_divergence(p, r, "js").item() == pytest.approx(js, rel=1e-6)
    assert official != pytest.approx(js, rel=1e-3)  # the code's form is not the JS divergence


def test_official_divergence_is_the_code_s_kl_div_form():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 5, generator=gen), torch.randn(8, 5, generator=gen)
    p, q = F.softmax(a, -1), F.softmax(b, -1)
    m = 0.5 * p + 0.5 * q
    code = 0.5 * (F.kl_div(p.log(), m, reduction="batchmean") + F.kl_div(q.log(), m, reduction="batchmean"))
    assert gap_divergence(a, b, "official").item() == pytest.approx(code.item(), rel=1e-5)


def test_loss_is_the_weighted_sum_of_ce_on_mean_logits_and_js():
    method = LFM()
    model = seeded_model(method)
    batch = two_modality_batch()
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        z = model(batch.inputs)
        ce = F.cross_entropy(0.5 * z["a"] + 0.5 * z["b"], batch.label)
        js = gap_divergence(z["a"], z["b"], "official")
        a1, a2 = fitted_weights(7)
        expected = 2 * (a1 * ce + a2 * js)
    model.load_state_dict(state)
    out = method.loss(model, batch, StepContext(7, 15, 0, 1, 0))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    rescaled = LFM(schedule="rescaled").weights(StepContext(5, 10, 0, 1, 0))
    assert rescaled == pytest.approx(fitted_weights(100))


@pytest.mark.parametrize("dataset", ["imbalance_2m", "synthetic_3m"])
def test_one_epoch_on_embedded_data(dataset):
    record = one_epoch_record("lfm", dataset)
    assert record["status"] == "ok", record.get("error")
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
