"""OPM parity: drop probabilities from the score ratio, the expected dropped fraction, the feature rescale, the
drop rate a step realises, and the window; a cell with the drop active.

Expected values are worked out here with the ``math`` module or by counting, not by the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from parity_problems import registered_defaults

from bench.methods.opm import OPM, drop_features, drop_probabilities, expected_drop_fraction
from bench.protocol import Batch, DataDescription, ModalitySpec, StepContext
from bench.testing import one_epoch_record, run_cell, tiny_spec

torch.set_num_threads(1)


def _q(scores, q_base=0.5, lam=0.5):
    return drop_probabilities(torch.tensor(scores, dtype=torch.float64), q_base, lam).tolist()


def test_only_the_leading_modality_gets_a_drop_probability():
    # s = (4, 2): r_1 = tanh(relu(4/2 - 1)) = tanh(1); q_1 = 0.5 (1 + 0.5 tanh 1); r_2 = tanh(relu(-0.5)) = 0
    assert _q([4.0, 2.0]) == pytest.approx([0.5 * (1 + 0.5 * math.tanh(1.0)), 0.0])
    assert _q([2.0, 4.0]) == pytest.approx([0.0, 0.5 * (1 + 0.5 * math.tanh(1.0))])
    assert _q([3.0, 3.0]) == [0.0, 0.0]  # a tie: nobody leads, nothing is dropped


def test_three_modalities_compare_with_the_sum_of_the_others():
    # s = (6, 1, 2): r_1 = tanh(6/3 - 1) = tanh(1); 1/8 and 2/7 are below 1
    assert _q([6.0, 1.0, 2.0], q_base=0.4) == pytest.approx([0.4 * (1 + 0.5 * math.tanh(1.0)), 0.0, 0.0])
    # a modality that beats each other one but not their sum is not dropped
    assert _q([3.0, 2.0, 2.0]) == [0.0, 0.0, 0.0]


def test_probabilities_are_clipped_to_one():
    # r = tanh(9) ~ 1: 0.9 (1 + 1 * 1) = 1.8 -> 1
    assert _q([10.0, 1.0], q_base=0.9, lam=1.0) == pytest.approx([1.0, 0.0])


def test_expected_fraction_and_rescale_by_hand():
    q = torch.tensor([0.6, 0.0])
    theta = float(expected_drop_fraction(q, torch.tensor([64.0, 32.0])))
    assert theta == pytest.approx(0.6 * 64 / 96)  # 0.4
    features = {"a": torch.ones(3, 2), "b": torch.full((3, 1), 2.0)}
    keep = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    out = drop_features(features, keep, theta)
    assert out["a"][:, 0].tolist() == pytest.approx([5 / 3, 0.0, 5 / 3])
    assert out["b"][:, 0].tolist() == pytest.approx([10 / 3] * 3)


def _setup(num_modalities: int, rows: int = 64):
    specs = tuple(ModalitySpec(name, (d,)) for name, d in list(zip("abc", (5, 4, 6)))[:num_modalities])
    description = DataDescription(specs, num_classes=3, num_train=rows)
    torch.manual_seed(0)
    labels = torch.arange(rows) % 3
    inputs = {s.name: torch.randn(rows, s.shape[0]) for s in specs}
    inputs["a"][:, :3] += 4 * F.one_hot(labels, 3).float()  # modality a reveals the label: it leads
    batch = Batch(inputs, labels, torch.arange(rows), torch.ones(rows, num_modalities, dtype=torch.bool))
    return description, batch


def _train_briefly(method, description, batch, steps=30):
    torch.manual_seed(1)
    model = method.build(description)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):  # plain late fusion, so modality a takes the lead
        logits, _ = model(batch.inputs)
        optimizer.zero_grad()
        F.cross_entropy(logits, batch.label).backward()
        optimizer.step()
    return model


def test_a_step_drops_the_leading_modality_at_rate_q_and_never_the_other():
    method = OPM(modulation_start=0, p_exe=1.0)
    description, batch = _setup(2)
    model = _train_briefly(method, description, batch)
    model.train()
    dropped = kept_total = 0
    torch.manual_seed(5)
    for _ in range(40):
        out = method.loss(model, batch, StepContext(0, 1, 0, 1, 0))
        assert out.extras["dropped"]
        q = out.extras["q"]
        assert float(q[1]) == 0.0 and 0.5 <= float(q[0]) <= 0.75  # a leads; q in [q_base, q_base (1 + lam)]
        keep = out.extras["keep"]
        assert keep[:, 1].eq(1).all()  # the other modality is never dropped, so every row stays in the loss
        dropped += int((keep[:, 0] == 0).sum())
        kept_total += keep.shape[0]
    q_mean = float(q[0])  # the scores barely move without optimizer steps
    sd = math.sqrt(q_mean * (1 - q_mean) / kept_total)
    assert abs(dropped / kept_total - q_mean) < 5 * sd


def test_loss_is_the_fused_cross_entropy_of_the_rescaled_kept_features():
    method = OPM(modulation_start=0, p_exe=1.0)
    description, batch = _setup(2)
    model = _train_briefly(method, description, batch)
    model.eval()  # fixed BatchNorm statistics: the same features in both passes
    torch.manual_seed(3)
    out = method.loss(model, batch, StepContext(0, 1, 0, 1, 0))
    keep, q = out.extras["keep"], out.extras["q"]
    theta = float(q[0]) * 64 / 128  # both encoders give 64 features
    with torch.no_grad():
        h = {name: enc(batch.inputs[name]) for name, enc in model.encoders.items()}
        w, b = model.head.fc.weight, model.head.fc.bias
        z = (h["a"] * keep[:, :1]) @ w[:, :64].T / (1 - theta) + h["b"] @ w[:, 64:].T / (1 - theta) + b
        expected = F.cross_entropy(z, batch.label)
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_no_drop_outside_the_window_or_when_not_executed():
    description, batch = _setup(2)
    for method, epoch in ((OPM(), 5), (OPM(modulation_start=0, p_exe=0.0), 0)):
        model = _train_briefly(method, description, batch, steps=5)
        model.eval()
        out = method.loss(model, batch, StepContext(epoch, 10, 0, 1, 0))
        logits, _ = model(batch.inputs)
        assert not out.extras["dropped"]
        assert float(out.loss.detach()) == pytest.approx(float(F.cross_entropy(logits.detach(), batch.label)))


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="q_base"):
        OPM(q_base=0.8, lam=0.5)  # 0.8 * 1.5 >= 1
    with pytest.raises(ValueError, match="p_exe"):
        OPM(p_exe=1.5)


@pytest.mark.parametrize("dataset", ["_tiny_2m", "_tiny_3m"])
def test_cell_with_the_drop_active_from_epoch_zero(dataset):
    record = run_cell(tiny_spec("opm", dataset=dataset, epochs=2, overrides={"modulation_start": 0, "p_exe": 1.0}))
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0


def test_one_epoch_through_cells():
    record = one_epoch_record("opm", "synthetic_3m")
    assert record["status"] == "ok", record["reason"]


def test_registered_with_the_official_defaults():
    config = registered_defaults("opm")
    assert (config.q_base, config.lam, config.p_exe, config.modulation_start, config.modulation_end) == (
        0.5,
        0.5,
        0.7,
        6,
        80,
    )
