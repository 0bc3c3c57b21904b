"""UME parity: the ensemble (mean of logits or of probabilities over the present modalities) against
hand-derived values; members train independently (each gets exactly the training of the trained-alone
baseline); one epoch on the imbalance and synthetic data."""

from __future__ import annotations

import math

import pytest
import torch

from bench.loop import run_cell
from bench.methods.ume import ensemble
from bench.testing import one_epoch_record, tiny_spec

torch.set_num_threads(1)

LOGITS = {"a": torch.tensor([[2.0, 0.0], [0.0, 1.0]]), "b": torch.tensor([[0.0, 4.0], [1.0, 1.0]])}


def test_logit_ensemble_is_the_mean_over_present_modalities():
    both = torch.ones(2, 2, dtype=torch.bool)
    assert ensemble(LOGITS, both, "logits").tolist() == [[1.0, 2.0], [0.5, 1.0]]
    mask = torch.tensor([[True, False], [True, True]])  # sample 0 lacks b: a alone
    assert ensemble(LOGITS, mask, "logits").tolist() == [[2.0, 0.0], [0.5, 1.0]]
    none = torch.tensor([[False, False], [True, True]])  # nothing present: every member
    assert ensemble(LOGITS, none, "logits").tolist() == [[1.0, 2.0], [0.5, 1.0]]


def test_probability_ensemble_averages_softmax_outputs():
    both = torch.ones(2, 2, dtype=torch.bool)
    e2 = math.exp(2.0)
    e4 = math.exp(4.0)
    p_a0 = [e2 / (e2 + 1), 1 / (e2 + 1)]
    p_b0 = [1 / (1 + e4), e4 / (1 + e4)]
    got = ensemble(LOGITS, both, "probabilities")
    assert got[0].tolist() == pytest.approx([(p_a0[0] + p_b0[0]) / 2, (p_a0[1] + p_b0[1]) / 2])
    # sample 1: a = softmax(0, 1), b = uniform
    e1 = math.e
    assert got[1].tolist() == pytest.approx([(1 / (1 + e1) + 0.5) / 2, (e1 / (1 + e1) + 0.5) / 2])


def test_members_train_exactly_as_the_trained_alone_baseline():
    """Same model and the same per-modality gradients as ``unimodal``: per-epoch member accuracies agree."""
    ume = run_cell(tiny_spec("ume", epochs=3))
    alone = run_cell(tiny_spec("unimodal", epochs=3))
    assert [h["val_per_modality"] for h in ume["history"]] == [h["val_per_modality"] for h in alone["history"]]
    assert [h["train_loss"] for h in ume["history"]] == pytest.approx([h["train_loss"] for h in alone["history"]])


@pytest.mark.parametrize("dataset", ["imbalance_2m", "synthetic_3m"])
def test_one_epoch_on_embedded_data(dataset):
    record = one_epoch_record("ume", dataset)
    assert record["status"] == "ok", record.get("error")
    assert len(record["metrics"]["per_modality_accuracy"]) == (2 if dataset.endswith("2m") else 3)
