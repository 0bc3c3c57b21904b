"""UMT parity: the feature-distillation term and the loss (CE + lambda * sum_m MSE) against hand-derived
values; the teachers are trained first in the cell, frozen (weights and BatchNorm statistics) while UMT
trains; with lambda = 0 UMT trains exactly as late fusion; one epoch on the imbalance and synthetic data."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from parity_problems import seeded_model, two_modality_batch, two_modality_description

from bench.data import cell_data
from bench.loop import _fit, _pretrain, autocast_for, build_method, run_cell, task_of
from bench.methods.umt import UMT, distillation_loss, present_cross_entropy
from bench.protocol import StepContext
from bench.testing import one_epoch_record, tiny_spec

torch.set_num_threads(1)

STUDENT = {"a": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([[0.0, 0.0], [1.0, 1.0]])}
TEACHER = {"a": torch.tensor([[1.0, 0.0], [3.0, 3.0]]), "b": torch.tensor([[1.0, 1.0], [1.0, 1.0]])}


def test_distillation_is_the_sum_over_modalities_of_the_mean_squared_feature_error():
    both = torch.ones(2, 2, dtype=torch.bool)
    # a: squared errors 0, 4, 0, 1 -> mean 1.25; b: 1, 1, 0, 0 -> mean 0.5
    assert distillation_loss(STUDENT, TEACHER, both).item() == pytest.approx(1.75)


def test_distillation_averages_only_over_samples_whose_modality_is_present():
    mask = torch.tensor([[True, False], [True, True]])
    # b only for sample 1: squared errors 0, 0 -> 0; a unchanged 1.25
    assert distillation_loss(STUDENT, TEACHER, mask).item() == pytest.approx(1.25)
    mask = torch.tensor([[True, False], [False, False]])
    # a only for sample 0: 0, 4 -> 2; b absent from the batch adds 0
    assert distillation_loss(STUDENT, TEACHER, mask).item() == pytest.approx(2.0)


def test_present_cross_entropy_skips_absent_samples():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    label = torch.tensor([0, 1])
    # only sample 0: -log(e^2 / (e^2 + 1))
    expected = -torch.log(torch.tensor(2.0).exp() / (torch.tensor(2.0).exp() + 1))
    assert present_cross_entropy(logits, label, torch.tensor([True, False])).item() == pytest.approx(expected.item())
    assert present_cross_entropy(logits, label, torch.tensor([False, False])).item() == 0.0


def test_loss_is_cross_entropy_plus_weighted_distillation_from_the_adopted_teachers():
    description = two_modality_description()
    method = UMT(distill_weight=10.0)
    model = seeded_model(method, description)
    stages = {name: stage.build(description) for name, stage in method.pretrain(description).items()}
    assert sorted(stages) == ["teacher_a", "teacher_b"]
    method.adopt_pretrained(model, stages)
    assert not any(p.requires_grad for p in model.teachers.parameters())
    batch = two_modality_batch()
    model.train()
    hand = copy.deepcopy(model)
    with torch.no_grad():
        h_a, h_b = hand.encoders["a"](batch.inputs["a"]), hand.encoders["b"](batch.inputs["b"])
        z = hand.head.fc(torch.cat([h_a, h_b], 1))
        t_a = stages["teacher_a"].encoders["a"].eval()(batch.inputs["a"])
        t_b = stages["teacher_b"].encoders["b"].eval()(batch.inputs["b"])
        expected = F.cross_entropy(z, batch.label) + 10.0 * (((h_a - t_a) ** 2).mean() + ((h_b - t_b) ** 2).mean())
    out = method.loss(model, batch, StepContext(0, 1, 0, 1, 0))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.extras["distill"].item() > 0


def test_teachers_are_trained_first_and_stay_frozen_while_umt_trains():
    spec = tiny_spec("umt", epochs=2, overrides={"lr": 0.05})
    method = build_method(spec)
    cpu = torch.device("cpu")
    data = cell_data(spec, data_root=None, zero_fill=True, device=cpu)
    autocast = autocast_for("fp32", cpu)
    stages, notes, _ = _pretrain(method, data, None, spec, cpu, autocast)
    assert set(notes) == {"teacher_a", "teacher_b"} and all(n["epochs_run"] == 2 for n in notes.values())
    before = {n: copy.deepcopy(m.state_dict()) for n, m in stages.items()}
    fit = _fit(method, task_of(method), data, None, spec, cpu, autocast, pretrained=stages)
    for name in ("a", "b"):
        teacher = fit.model.teachers[name].state_dict()
        trained = {
            k.removeprefix(f"encoders.{name}."): v
            for k, v in before[f"teacher_{name}"].items()
            if k.startswith(f"encoders.{name}.")
        }
        assert teacher.keys() == trained.keys()
        assert all(torch.equal(teacher[k], trained[k]) for k in trained)  # BatchNorm running stats included


def test_without_distillation_umt_trains_exactly_as_late_fusion():
    umt = run_cell(tiny_spec("umt", epochs=3, overrides={"distill_weight": 0.0}))
    late = run_cell(tiny_spec("late_fusion", epochs=3))
    assert umt["metrics"] == late["metrics"]
    assert set(umt["notes"]["pretrained"]) == {"teacher_a", "teacher_b"}


def test_distillation_changes_training():
    umt = run_cell(tiny_spec("umt", epochs=3))
    late = run_cell(tiny_spec("late_fusion", epochs=3))
    assert [h["train_loss"] for h in umt["history"]] != [h["train_loss"] for h in late["history"]]


@pytest.mark.parametrize("dataset", ["imbalance_2m", "synthetic_3m"])
def test_one_epoch_on_embedded_data(dataset):
    record = one_epoch_record("umt", dataset)
    assert record["status"] == "ok", record.get("error")
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
    assert len(record["notes"]["pretrained"]) == (2 if dataset.endswith("2m") else 3)
