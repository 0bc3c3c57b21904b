"""Diagnosing & Re-learning parity: purity, min-max scaling, k-means on separable data, the strength
alpha = tanh(lambda |P_D - P_V|), the soft re-initialisation theta = (1 - alpha) theta + alpha theta_init,
the official schedule, and start_epoch's diagnosis on given training and held-out batches against values
computed here; one epoch on the imbalance and synthetic data."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.loop import run_cell
from bench.methods.relearning import (
    Relearning,
    kmeans,
    minmax_scale,
    purity,
    reinit_strength,
    soft_reinit,
)
from bench.protocol import Batch, DataDescription, EpochContext, ModalitySpec
from bench.testing import one_epoch_record, tiny_spec

torch.set_num_threads(1)


def test_purity_labels_each_cluster_by_its_majority():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    clusters = torch.tensor([0, 0, 0, 1, 1, 1])
    # cluster 0 = {0, 0, 1}: 2 right; cluster 1 = {1, 1, 2}: 2 right
    assert purity(labels, clusters) == pytest.approx(4 / 6)
    assert purity(labels, torch.tensor([5, 5, 3, 3, 3, 9])) == 1.0


def test_minmax_scale_maps_each_column_onto_minus_one_one():
    x = torch.tensor([[0.0, 10.0, 3.0], [5.0, 20.0, 3.0], [10.0, 15.0, 3.0]])
    assert minmax_scale(x).tolist() == [[-1.0, -1.0, -1.0], [0.0, 1.0, -1.0], [1.0, 0.0, -1.0]]


def test_kmeans_recovers_well_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = torch.arange(3).repeat_interleave(20)
    x = centres[labels] + 0.3 * torch.randn(60, 2, generator=gen)
    clusters = kmeans(x, 3, seed=0)
    assert purity(labels, clusters) == 1.0
    assert len(torch.unique(clusters)) == 3
    assert torch.equal(clusters, kmeans(x, 3, seed=0))  # seeded


def test_strength_is_tanh_of_lambda_times_the_purity_gap():
    assert reinit_strength(0.9, 0.7, 3.0) == pytest.approx(math.tanh(0.6))
    assert reinit_strength(0.5, 0.8, 3.0) == pytest.approx(math.tanh(0.9))
    assert reinit_strength(0.6, 0.6, 3.0) == 0.0


def test_soft_reinit_interpolates_towards_the_initial_parameters():
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 3.0]]))
        layer.bias.fill_(2.0)
    initial = {"weight": torch.tensor([[0.0, 1.0]]), "bias": torch.tensor([-2.0])}
    soft_reinit(layer, initial, 0.25)
    assert layer.weight.tolist() == [[0.75, 2.5]]  # 0.75 * current + 0.25 * initial
    assert layer.bias.tolist() == [1.0]


def test_official_schedule():
    method = Relearning()  # every 20 epochs, 3 times
    assert [e for e in range(100) if method.reinit_due(e)] == [21, 41, 61]
    assert [e for e in range(10) if Relearning(reinit_epoch=2, reinit_num=2).reinit_due(e)] == [3, 5]


def test_start_epoch_diagnoses_each_modality_and_reinitialises_its_encoder():
    description = DataDescription((ModalitySpec("a", (4,)), ModalitySpec("b", (3,))), num_classes=2, num_train=40)
    method = Relearning(reinit_epoch=1, move_lambda=3.0)
    torch.manual_seed(0)
    model = method.build(description).eval()
    start = {n: {k: v.clone() for k, v in model.initial(n).items()} for n in ("a", "b")}
    with torch.no_grad():  # stands in for training: move every encoder away from its initialisation
        for p in model.encoders.parameters():
            p.add_(0.5 * torch.randn_like(p))
    moved = {n: {k: v.clone() for k, v in model.encoders[n].named_parameters()} for n in ("a", "b")}

    def batch(seed, n):
        gen = torch.Generator().manual_seed(seed)
        y = torch.arange(2).repeat(n // 2)
        return Batch(
            {"a": torch.randn(n, 4, generator=gen) + 2 * y[:, None], "b": torch.randn(n, 3, generator=gen)},
            y,
            torch.arange(n),
            torch.ones(n, 2, dtype=torch.bool),
        )

    train, held = batch(1, 40), batch(2, 20)
    context = EpochContext(2, 5, lambda name: iter([train if name == "train" else held]))
    with torch.no_grad():
        alphas = method.diagnose(model, context)
        _, f_train = model(train.inputs)
        _, f_held = model(held.inputs)
    for name in ("a", "b"):
        p_train = purity(train.label, kmeans(minmax_scale(f_train[name].double()), 2, seed=0))
        p_held = purity(held.label, kmeans(minmax_scale(f_held[name].double()), 2, seed=0))
        assert alphas[name] == pytest.approx(math.tanh(3.0 * abs(p_train - p_held)))
    with torch.no_grad():
        method.start_epoch(model, context)
    assert int(model.reinits_done) == 1
    for name in ("a", "b"):
        for key, p in model.encoders[name].named_parameters():
            expected = (1 - alphas[name]) * moved[name][key] + alphas[name] * start[name][key]
            assert torch.allclose(p, expected, atol=1e-6)


def test_training_with_reinitialisation_runs_and_differs_from_without():
    spec_on = tiny_spec("relearning", epochs=4, overrides={"reinit_epoch": 1, "reinit_num": 2, "lr": 0.05})
    spec_off = tiny_spec("relearning", epochs=4, overrides={"reinit_epoch": 1, "reinit_num": 0, "lr": 0.05})
    on, off = run_cell(spec_on), run_cell(spec_off)
    assert on["notes"]["split_sizes"]["holdout"] > 0
    assert [h["train_loss"] for h in on["history"]][:2] == [h["train_loss"] for h in off["history"]][:2]
    assert [h["train_loss"] for h in on["history"]][2:] != [h["train_loss"] for h in off["history"]][2:]


@pytest.mark.parametrize("dataset", ["imbalance_2m", "synthetic_3m"])
def test_one_epoch_on_embedded_data(dataset):
    record = one_epoch_record("relearning", dataset)
    assert record["status"] == "ok", record.get("error")
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
