"""PMR parity: prototype logits (minus Euclidean distances), the imbalance ratio and coefficients, the
entropy regulariser, the prototypes (class means, momentum) and the full loss, against values written out
here with ``math`` and plain loops; the start_epoch hook through run_cell; one epoch on synthetic_2m/3m.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from parity_problems import one_epoch_scoring_every_modality, registered_defaults

from bench.loop import run_cell
from bench.methods.pmr import (
    PMR,
    entropy_weight,
    imbalance_coefficients,
    momentum_update,
    prototype_entropy,
    prototype_logits,
    prototype_scores,
)
from bench.protocol import Batch, DataDescription, EpochContext, ModalitySpec, StepContext
from bench.testing import tiny_spec

torch.set_num_threads(1)

FEATURES = [[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]]
PROTOTYPES = [[0.0, 0.0], [3.0, 0.0]]


def _softmax(row):
    top = max(row)
    e = [math.exp(v - top) for v in row]
    return [v / sum(e) for v in e]


def test_prototype_logits_are_minus_euclidean_distances():
    got = prototype_logits(torch.tensor(FEATURES, dtype=torch.float64), torch.tensor(PROTOTYPES, dtype=torch.float64))
    expected = [[-math.dist(h, c) for c in PROTOTYPES] for h in FEATURES]
    assert got.tolist() == [pytest.approx(row) for row in expected]


def test_prototype_logits_have_finite_gradients_on_a_prototype():
    h = torch.tensor([[0.0, 0.0]], requires_grad=True)
    prototype_logits(h, torch.tensor(PROTOTYPES)).sum().backward()
    assert torch.isfinite(h.grad).all()


def test_scores_are_batch_sums_of_the_true_class_probability():
    logits = [[-math.dist(h, c) for c in PROTOTYPES] for h in FEATURES]
    labels = [0, 1, 0]
    expected = sum(_softmax(row)[y] for row, y in zip(logits, labels))
    got = prototype_scores([torch.tensor(logits, dtype=torch.float64)], torch.tensor(labels))
    assert got.tolist() == pytest.approx([expected])


def test_two_modality_coefficients_follow_the_imbalance_ratio():
    # s_a = 3, s_v = 2: rho_a = 1.5 > 1, so the visual PCE gets alpha * (1.5 - 1), audio none
    got = imbalance_coefficients(torch.tensor([3.0, 2.0], dtype=torch.float64), 0.6, "proportional")
    assert got.tolist() == pytest.approx([0.0, 0.6 * 0.5])
    # rho_v = 4 -> clipped to 1
    got = imbalance_coefficients(torch.tensor([1.0, 4.0], dtype=torch.float64), 0.6, "proportional")
    assert got.tolist() == pytest.approx([0.6, 0.0])
    # the released step rule: alpha for the slower modality however small the gap; balanced -> nothing
    assert imbalance_coefficients(torch.tensor([3.0, 2.9]), 1.0, "step").tolist() == pytest.approx([0.0, 1.0])
    assert imbalance_coefficients(torch.tensor([2.0, 2.0]), 1.0, "step").tolist() == [0.0, 0.0]


def test_three_modality_coefficients_compare_with_the_best():
    got = imbalance_coefficients(torch.tensor([4.0, 3.0, 1.0], dtype=torch.float64), 1.0, "proportional")
    assert got.tolist() == pytest.approx([0.0, 4 / 3 - 1, 1.0])
    assert entropy_weight(torch.tensor([4.0, 3.0, 1.0]), 0.01, "proportional") == pytest.approx(0.01)
    assert entropy_weight(torch.tensor([4.0, 3.5]), 0.01, "proportional") == pytest.approx(0.01 * (4 / 3.5 - 1))


def test_prototype_entropy_is_the_batch_mean_entropy():
    rows = [[0.0, 0.0, 0.0], [2.0, 0.0, -1.0]]
    expected = sum(-sum(p * math.log(p) for p in _softmax(r)) for r in rows) / 2
    assert prototype_entropy(torch.tensor(rows, dtype=torch.float64)).item() == pytest.approx(expected)
    assert prototype_entropy(torch.zeros(1, 4)).item() == pytest.approx(math.log(4))


def test_momentum_update_mixes_seen_classes_only():
    old, new = torch.tensor([[1.0, 1.0], [5.0, 5.0]]), torch.tensor([[3.0, 3.0], [0.0, 0.0]])
    got = momentum_update(old, new, 0.2, torch.tensor([True, False]))
    assert got.tolist() == [pytest.approx([0.8 * 3 + 0.2 * 1] * 2), [5.0, 5.0]]


# --------------------------------------------------------------------------------------------------
# start_epoch and the loss on a small model


def _setup(method: PMR):
    description = DataDescription((ModalitySpec("a", (5,)), ModalitySpec("v", (4,))), num_classes=3, num_train=12)
    torch.manual_seed(0)
    model = method.build(description)
    labels = torch.tensor([0, 1, 2] * 4)
    mask = torch.ones(12, 2, dtype=torch.bool)
    mask[0, 1] = False  # sample 0 has no visual input: it must not enter the visual prototypes
    batch = Batch({"a": torch.randn(12, 5), "v": torch.randn(12, 4)}, labels, torch.arange(12), mask)
    return model, batch


def _hand_prototypes(model, batch):
    """Per modality, the mean eval-mode feature of each class over samples where the modality is present."""
    model.eval()
    with torch.no_grad():
        _, features = model(batch.inputs)
    result = []
    for m, h in enumerate(features.values()):
        protos = []
        for c in range(3):
            rows = [i for i in range(len(batch)) if batch.label[i] == c and batch.mask[i, m]]
            protos.append([sum(h[i, d].item() for i in rows) / len(rows) for d in range(h.shape[1])])
        result.append(protos)
    return result


def _epoch(batch, epoch=0):
    halves = [
        Batch({k: v[:7] for k, v in batch.inputs.items()}, batch.label[:7], batch.index[:7], batch.mask[:7]),
        Batch({k: v[7:] for k, v in batch.inputs.items()}, batch.label[7:], batch.index[7:], batch.mask[7:]),
    ]
    return EpochContext(epoch, 5, lambda name: iter(halves))


def test_start_epoch_sets_then_mixes_class_means():
    method = PMR(momentum=0.2)
    model, batch = _setup(method)
    first = _hand_prototypes(model, batch)
    with torch.no_grad():
        method.start_epoch(model, _epoch(batch))
    assert bool(model.prototypes_ready)
    for m, c in enumerate(model.prototypes()):
        assert c.tolist() == [pytest.approx(row, abs=1e-5) for row in first[m]]
    with torch.no_grad():  # move the encoders, then mix: 0.8 new + 0.2 old
        for p in model.encoders.parameters():
            p.add_(0.05)
    second = _hand_prototypes(model, batch)
    with torch.no_grad():
        method.start_epoch(model, _epoch(batch, 1))
    for m, c in enumerate(model.prototypes()):
        mixed = [[0.8 * n + 0.2 * o for n, o in zip(rn, ro)] for rn, ro in zip(second[m], first[m])]
        assert c.tolist() == [pytest.approx(row, abs=1e-5) for row in mixed]


def _hand_loss(method, model, batch, epoch):
    """CE(z) + sum_m alpha clip(s_max / s_m - 1, 0, 1) PCE_m - mu clip(s_max / s_min - 1, 0, 1) H(dominant)."""
    model.train()
    with torch.no_grad():
        logits, features = model(batch.inputs)
    labels = batch.label.tolist()

    def ce(rows):
        return sum(-math.log(_softmax(r)[y]) for r, y in zip(rows, labels)) / len(rows)

    total = ce(logits.tolist())
    proto_rows, scores = [], []
    for h, c in zip(features.values(), model.prototypes()):
        rows = [[-math.dist(hi, ck) for ck in c.tolist()] for hi in h.tolist()]
        proto_rows.append(rows)
        scores.append(sum(_softmax(r)[y] for r, y in zip(rows, labels)))
    best = max(scores)
    for rows, s in zip(proto_rows, scores):
        total += method.alpha * min(max(best / s - 1, 0.0), 1.0) * ce(rows)
    if epoch < method.modulation_start + method.entropy_epochs:
        dominant = proto_rows[scores.index(best)]
        entropy = sum(-sum(p * math.log(p) for p in _softmax(r)) for r in dominant) / len(dominant)
        total -= method.mu * min(max(best / min(scores) - 1, 0.0), 1.0) * entropy
    return total


@pytest.mark.parametrize("epoch", [0, 12])
def test_loss_matches_the_formula_by_hand(epoch):
    method = PMR(alpha=0.7, mu=0.5)  # a large mu, so the entropy term is visible
    model, batch = _setup(method)
    with torch.no_grad():
        method.start_epoch(model, _epoch(batch))
        for p in model.encoders["v"].parameters():  # make the modalities differ
            p.mul_(0.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    expected = _hand_loss(method, model, batch, epoch)
    model.load_state_dict(state)
    model.train()
    out = method.loss(model, batch, StepContext(epoch, 20, 0, 1, 0))
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert max(out.extras["coefficients"].values()) > 0  # the rebalancing term is active


def _released_loss(alpha, model, batch):
    """main_Prototype_grad.py, two modalities: CE(z) + alpha CE(proto logits of the slower modality), no entropy."""
    with torch.no_grad():
        logits, features = model(batch.inputs)
    labels = batch.label.tolist()

    def ce(rows):
        return sum(-math.log(_softmax(r)[y]) for r, y in zip(rows, labels)) / len(rows)

    rows = [
        [[-math.dist(hi, ck) for ck in c.tolist()] for hi in h.tolist()]
        for h, c in zip(features.values(), model.prototypes())
    ]
    score_a, score_v = (sum(_softmax(r)[y] for r, y in zip(m, labels)) for m in rows)
    beta = alpha if score_a < score_v else 0.0  # audio coefficient when ratio_a_p < 1
    lam = alpha if score_a > score_v else 0.0  # visual coefficient when ratio_a_p > 1
    assert beta + lam > 0  # the modalities differ, so the prototype term is active
    return ce(logits.tolist()) + beta * ce(rows[0]) + lam * ce(rows[1]), rows


def test_step_rule_is_the_released_loss_only_with_mu_zero():
    losses = {}
    for mu in (0.0, 0.5):
        method = PMR(alpha=0.7, mu=mu, coefficient="step")
        model, batch = _setup(method)
        with torch.no_grad():
            method.start_epoch(model, _epoch(batch))
            for p in model.encoders["v"].parameters():
                p.mul_(0.5)
        model.train()
        released, rows = _released_loss(0.7, model, batch)
        losses[mu] = (method.loss(model, batch, StepContext(0, 20, 0, 1, 0)).loss.item(), released, rows)
    got, released, _ = losses[0.0]
    assert got == pytest.approx(released, rel=1e-6)
    # with mu > 0 the step rule also subtracts mu * H(dominant prototype softmax) in the first entropy_epochs
    got, released, rows = losses[0.5]
    labels = [0, 1, 2] * 4
    scores = [sum(_softmax(r)[y] for r, y in zip(m, labels)) for m in rows]
    dominant = rows[scores.index(max(scores))]
    entropy = sum(-sum(p * math.log(p) for p in _softmax(r)) for r in dominant) / len(dominant)
    assert got == pytest.approx(released - 0.5 * entropy, rel=1e-6)
    assert entropy > 0.1


def test_before_prototypes_or_outside_the_window_the_loss_is_plain_ce():
    method = PMR(modulation_start=2, modulation_end=3)
    model, batch = _setup(method)
    model.train()
    with torch.no_grad():
        logits, _ = model(batch.inputs)
    plain = F.cross_entropy(logits, batch.label).item()
    assert method.loss(model, batch, StepContext(2, 5, 0, 1, 0)).loss.item() == pytest.approx(
        plain
    )  # no prototypes yet
    with torch.no_grad():
        method.start_epoch(model, _epoch(batch))
    model.train()
    assert method.loss(model, batch, StepContext(4, 5, 0, 1, 0)).loss.item() == pytest.approx(plain, rel=1e-6)


def test_start_epoch_hook_runs_before_every_epoch_in_eval_mode_without_gradients(monkeypatch):
    calls = []
    original = PMR.start_epoch

    def recording(self, model, epoch):
        calls.append((epoch.epoch, epoch.num_epochs, model.training, torch.is_grad_enabled()))
        with pytest.raises(Exception, match="holdout"):
            epoch.batches("holdout")  # PMR holds nothing out: only "train" exists
        return original(self, model, epoch)

    monkeypatch.setattr(PMR, "start_epoch", recording)
    result = run_cell(tiny_spec("pmr", epochs=3))
    assert [c[0] for c in calls] == [0, 1, 2]
    assert all(c[1] == 3 and c[2] is False and c[3] is False for c in calls)
    assert "holdout" not in result["notes"]["split_sizes"]


@pytest.mark.parametrize("dataset", ["synthetic_2m", "synthetic_3m"])
def test_one_epoch_through_cells(dataset):
    record = one_epoch_scoring_every_modality("pmr", dataset)
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0


def test_registered_with_defaults():
    config = registered_defaults("pmr")
    assert (config.alpha, config.momentum, config.mu, config.entropy_epochs) == (1.0, 0.2, 0.01, 10)
    assert (config.modulation_start, config.modulation_end, config.coefficient) == (0, 100, "proportional")
