"""Greedy parity: the MMTM gates by hand, gate freezing at the running average, the BDR difference, the
re-balancing state machine, the relative gradient sums, the summed branch losses; windows open in training;
applicability; one epoch through cells.

Expected values are worked out here by hand or with plain torch, not by the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from parity_problems import registered_defaults

from bench.methods.greedy import MMTM, Greedy, bdr_difference, next_curation_state, relative_grad_sums
from bench.protocol import Batch, DataDescription, ModalitySpec, StepContext
from bench.testing import one_epoch_record

torch.set_num_threads(1)


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


def _mmtm_by_hand():
    """dims (1, 1), hidden int(2 * 2 / 4) = 1: e = relu(x0 + 2 x1 - 1); g0 = sigmoid(3 e), g1 = sigmoid(-e + 1)."""
    mmtm = MMTM((1, 1))
    with torch.no_grad():
        mmtm.squeeze.weight.copy_(torch.tensor([[1.0, 2.0]]))
        mmtm.squeeze.bias.fill_(-1.0)
        mmtm.excite[0].weight.fill_(3.0)
        mmtm.excite[0].bias.fill_(0.0)
        mmtm.excite[1].weight.fill_(-1.0)
        mmtm.excite[1].bias.fill_(1.0)
    return mmtm


def test_mmtm_gates_by_hand():
    mmtm = _mmtm_by_hand().eval()
    x0, x1 = torch.tensor([[2.0], [0.0]]), torch.tensor([[1.0], [0.0]])
    y0, y1 = mmtm(x0, x1, None, "own")
    e = [max(0.0, 2 + 2 - 1), 0.0]  # 3, 0
    assert y0[:, 0].tolist() == pytest.approx([2 * _sigmoid(3 * e[0]), 0.0])
    assert y1[:, 0].tolist() == pytest.approx([1 * _sigmoid(-e[0] + 1), 0.0])


def test_running_average_and_frozen_gate_of_the_caring_branch():
    mmtm = _mmtm_by_hand().train()
    batches = [
        (torch.tensor([[2.0], [0.0]]), torch.tensor([[1.0], [0.0]])),
        (torch.tensor([[1.0]]), torch.tensor([[1.0]])),
    ]
    g0_means, g1_means = [], []
    for x0, x1 in batches:
        e = [max(0.0, float(a) + 2 * float(b) - 1) for a, b in zip(x0[:, 0], x1[:, 0])]
        g0_means.append(sum(_sigmoid(3 * v) for v in e) / len(e))
        g1_means.append(sum(_sigmoid(-v + 1) for v in e) / len(e))
        mmtm(x0, x1, None, "own")
    avg0, avg1 = sum(g0_means) / 2, sum(g1_means) / 2  # the running average is the mean of the batch means
    assert float(mmtm.avg_gate_0) == pytest.approx(avg0) and float(mmtm.avg_gate_1) == pytest.approx(avg1)
    mmtm.eval()  # no further averaging
    x0, x1 = torch.tensor([[2.0]]), torch.tensor([[1.0]])
    y0, y1 = mmtm(x0, x1, 1, "own")  # branch 1 cares: its gate is frozen, branch 0 keeps its live gate
    assert float(y1.detach()) == pytest.approx(1.0 * avg1)
    assert float(y0.detach()) == pytest.approx(2.0 * _sigmoid(9.0))


def test_released_average_gate_uses_the_first_branch_for_both():
    mmtm = _mmtm_by_hand().train()
    mmtm(torch.tensor([[2.0]]), torch.tensor([[1.0]]), None, "released")
    assert float(mmtm.avg_gate_1) == pytest.approx(_sigmoid(9.0)) == float(mmtm.avg_gate_0)


def test_bdr_difference_by_hand():
    # log10(2 / 0.2) - log10(1 / 1) = 1
    assert bdr_difference((2.0, 1.0), (0.2, 1.0)) == pytest.approx(1.0)
    assert bdr_difference((1.0, 3.0), (1.0, 0.03)) == pytest.approx(-2.0)


def test_state_machine_opens_a_window_for_the_right_branch_and_closes_it_after_window_steps():
    state = (False, 0, 0)
    state = next_curation_state(*state, 0.005, 0.01, 3)
    assert state == (False, 0, 0)  # |d| <= epsilon
    state = next_curation_state(*state, -0.02, 0.01, 3)
    assert state == (True, 1, 0)  # d < 0: BDR_0 < BDR_1, branch 1 leans on the bypass
    for expected in [(True, 1, 1), (True, 1, 2), (False, 1, 3)]:
        state = next_curation_state(*state, None, 0.01, 3)
        assert state == expected
    assert next_curation_state(False, 1, 3, 0.5, 0.01, 3) == (True, 0, 0)


def test_relative_grad_sums_by_hand():
    a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))  # ||a||^2 = 5
    b = torch.nn.Parameter(torch.tensor([3.0]))  # ||b||^2 = 9
    a.grad, b.grad = torch.tensor([1.0, 0.0]), torch.tensor([3.0])
    assert relative_grad_sums([a, b]) == pytest.approx(1 / 5 + 9 / 9)


def _setup(rows=48):
    specs = (ModalitySpec("a", (6,)), ModalitySpec("b", (5,)))
    description = DataDescription(specs, num_classes=3, num_train=rows)
    torch.manual_seed(0)
    labels = torch.arange(rows) % 3
    inputs = {"a": torch.randn(rows, 6), "b": torch.randn(rows, 5)}
    inputs["a"][:, :3] += 3 * F.one_hot(labels, 3).float()  # a is easy, b is noise: the branches learn unevenly
    return description, Batch(inputs, labels, torch.arange(rows), torch.ones(rows, 2, dtype=torch.bool))


def test_loss_is_the_sum_of_branch_cross_entropies_and_prediction_their_mean():
    method = Greedy()
    description, batch = _setup()
    model = method.build(description).eval()
    with torch.no_grad():
        logits = model(batch.inputs)
        loss = method.loss(model, batch, StepContext(0, 1, 0, 1, 0)).loss
        pred = method.predict(model, batch)
    assert float(loss) == pytest.approx(sum(float(F.cross_entropy(z, batch.label)) for z in logits.values()))
    assert torch.allclose(pred.logits, (logits["a"] + logits["b"]) / 2)


def test_windows_open_during_training_and_accumulators_grow():
    method = Greedy(starting_epoch=0, epsilon=0.01, window=2)
    description, batch = _setup()
    torch.manual_seed(1)
    model = method.build(description)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    windows = 0
    for step in range(40):
        ctx = StepContext(0, 1, step, 40, step)
        out = method.loss(model, batch, ctx)
        optimizer.zero_grad()
        out.loss.backward()
        was = model.curation
        method.after_backward(model, out, ctx)
        windows += int(model.curation and not was)
        optimizer.step()
    assert windows > 0
    assert (model.m_bypass > 0).all() and (model.m_main > 0).all()


def test_before_the_starting_epoch_no_window_opens():
    method = Greedy(epsilon=1e-9)  # any difference would open one
    description, batch = _setup()
    model = method.build(description).train()
    for step in range(3):
        ctx = StepContext(1, 5, step, 3, step)  # epoch 1 < starting_epoch 2
        out = method.loss(model, batch, ctx)
        model.zero_grad()
        out.loss.backward()
        method.after_backward(model, out, ctx)
        assert not model.curation
    assert float(model.m_main.sum()) > 0  # the speeds still accumulate


def test_applicability():
    method = Greedy()
    three = DataDescription(tuple(ModalitySpec(n, (4,)) for n in "abc"), 3, 10)
    images = DataDescription((ModalitySpec("a", (1, 8, 8), "image"), ModalitySpec("b", (4,))), 3, 10)
    assert "3 modalities" in method.applicable(three)
    assert "image" in method.applicable(images)
    assert method.applicable(DataDescription((ModalitySpec("a", (4,)), ModalitySpec("b", (4,))), 3, 10)) is None


def test_one_epoch_through_cells():
    record = one_epoch_record("greedy", "synthetic_2m")
    assert record["status"] == "ok", record["reason"]
    assert set(record["metrics"]["per_modality_accuracy"]) == {"strong", "weak"}


def test_registered_with_official_defaults():
    assert registered_defaults("greedy") == Greedy(epsilon=0.01, window=5, starting_epoch=2, average_gate="own")
