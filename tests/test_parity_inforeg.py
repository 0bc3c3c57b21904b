"""InfoReg parity: the prime-learning-window statistic k from the Fisher-trace history, the regulation
coefficient c * exp(tanh(lead)), the proximal gradient beta (theta - theta_epoch_start) on the leading
encoder only, the Fisher trace accumulated from the regulated gradients, the loss (fused plus sliced
uni-modal cross-entropies); one epoch on the imbalance and synthetic data."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from parity_problems import seeded_model, two_modality_batch

from bench.methods.inforeg import HISTORY, InfoReg, regulation, window_k
from bench.protocol import EpochContext, StepContext
from bench.testing import one_epoch_record

torch.set_num_threads(1)


def _history(*traces):
    h = torch.zeros(HISTORY)
    for t in traces:
        h = torch.cat([h[1:], torch.tensor([t])])
    return h


def test_window_k_follows_the_official_ten_epoch_means():
    assert window_k(_history(), 0) == 1.0
    assert window_k(_history(4.0), 1) == pytest.approx(1.0)  # (0.4 - 0) / 0.4
    # after traces 4, 6: tr1 = 10 / 10, tr2 = 4 / 10 -> k = 0.6
    assert window_k(_history(4.0, 6.0), 2) == pytest.approx(0.6)
    # eleven traces 1..11: tr1 = mean(2..11) = 6.5, tr2 = mean(1..10) = 5.5 -> k = 1 / 6.5
    assert window_k(_history(*[float(t) for t in range(1, 12)]), 11) == pytest.approx(1 / 6.5)
    assert window_k(_history(), 3) == 0.0


def test_regulation_coefficient_by_hand():
    lead, beta = regulation(torch.tensor([10.0, 9.5]), 0.95, 0.1)
    assert lead == 0 and beta == pytest.approx(0.95 * math.exp(math.tanh(0.5)))
    lead, beta = regulation(torch.tensor([3.0, 7.0]), 0.95, 0.1)
    assert lead == 1 and beta == pytest.approx(0.1 * math.exp(math.tanh(4.0)))
    lead, beta = regulation(torch.tensor([1.0, 5.0, 4.0]), 0.95, 0.1)  # three modalities: lead over the next
    assert lead == 1 and beta == pytest.approx(0.1 * math.exp(math.tanh(1.0)))


def _setup(**kwargs):
    method = InfoReg(**kwargs)
    return method, seeded_model(method), two_modality_batch()


def test_loss_is_fused_plus_sliced_unimodal_cross_entropies_and_scores_are_true_class_sums():
    method, model, batch = _setup()
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        h_a, h_b = model.encoders["a"](batch.inputs["a"]), model.encoders["b"](batch.inputs["b"])
        w, b = model.head.fc.weight, model.head.fc.bias
        z = h_a @ w[:, :64].T + h_b @ w[:, 64:].T + b
        z_a, z_b = h_a @ w[:, :64].T + b / 2, h_b @ w[:, 64:].T + b / 2
        expected = (
            F.cross_entropy(z, batch.label) + F.cross_entropy(z_a, batch.label) + F.cross_entropy(z_b, batch.label)
        )
        s_a = F.softmax(z_a, 1).gather(1, batch.label[:, None]).sum()
        s_b = F.softmax(z_b, 1).gather(1, batch.label[:, None]).sum()
    model.load_state_dict(state)
    out = method.loss(model, batch, StepContext(0, 1, 0, 1, 0))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.extras["scores"].tolist() == pytest.approx([s_a.item(), s_b.item()], rel=1e-5)
    only_fused = InfoReg(unimodal_losses=False).loss(model, batch, StepContext(0, 1, 0, 1, 0))
    assert only_fused.loss.item() == pytest.approx(F.cross_entropy(z, batch.label).item(), rel=1e-5)


def test_after_backward_pulls_only_the_leading_encoder_back_and_accumulates_the_fisher_trace():
    method, model, batch = _setup()
    with torch.no_grad():
        method.start_epoch(model, EpochContext(0, 5, lambda name: iter([])))
        for p in model.encoders.parameters():  # stands in for steps already taken this epoch
            p.add_(0.1 * torch.randn_like(p))
    model.train()
    out = method.loss(model, batch, StepContext(0, 5, 0, 1, 0))
    out.loss.backward()
    plain = {n: p.grad.clone() for n, p in model.encoders.named_parameters()}
    out.extras["scores"] = torch.tensor([8.0, 6.0])  # a leads by 2
    method.after_backward(model, out, StepContext(0, 5, 0, 1, 0))
    beta = 0.95 * math.exp(math.tanh(2.0))
    for (n, p), start in zip(model.encoders["a"].named_parameters(), model.start(0)):
        assert torch.allclose(p.grad, plain[f"a.{n}"] + beta * (p.detach() - start), atol=1e-6)
    for n, p in model.encoders["b"].named_parameters():
        assert torch.equal(p.grad, plain[f"b.{n}"])
    first_layer = model.encoders["a"].net[1].weight
    assert torch.allclose(model.fisher(0)[0], first_layer.grad**2)  # squared regulated gradient


def test_start_epoch_closes_the_trace_and_closes_the_window_when_acquisition_stalls():
    method, model, _ = _setup()
    with torch.no_grad():
        method.start_epoch(model, EpochContext(0, 5, lambda name: iter([])))
        for f in model.fisher(0):
            f.fill_(2.0)
        trace = 2.0 * len(model.fisher(0))
        method.start_epoch(model, EpochContext(1, 5, lambda name: iter([])))
    assert model.trace_history[0, -1].item() == pytest.approx(trace)
    assert float(model.k) == pytest.approx(1.0)  # first trace after the zeros
    assert all(float(f.abs().sum()) == 0.0 for f in model.fisher(0))  # reset for the new epoch
    with torch.no_grad():  # ten more epochs with the same trace: k falls to 0, regulation stops
        for e in range(2, 12):
            for f in model.fisher(0):
                f.fill_(2.0)
            method.start_epoch(model, EpochContext(e, 20, lambda name: iter([])))
    assert float(model.k) == pytest.approx(0.0)
    model.train()
    _, _, batch = _setup()
    out = method.loss(model, batch, StepContext(11, 20, 0, 1, 0))
    out.loss.backward()
    plain = [p.grad.clone() for p in model.encoders.parameters()]
    method.after_backward(model, out, StepContext(11, 20, 0, 1, 0))
    assert all(torch.equal(p.grad, g) for p, g in zip(model.encoders.parameters(), plain))


@pytest.mark.parametrize("dataset", ["imbalance_2m", "synthetic_3m"])
def test_one_epoch_on_embedded_data(dataset):
    record = one_epoch_record("inforeg", dataset)
    assert record["status"] == "ok", record.get("error")
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
