"""MMCosine parity: scaled cosine logits by hand, their invariance to feature and weight norms, the fused sum,
and the training loss against an independent numpy computation; one epoch through bench.cells.

Expected values are worked out here by hand or with numpy, not by the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from parity_problems import one_epoch_scoring_every_modality, registered_defaults, seeded_problem

from bench.methods.mmcosine import MMCosine, cosine_logits
from bench.protocol import StepContext

torch.set_num_threads(1)


def test_cosine_logits_by_hand():
    # h = (3, 4), |h| = 5; class 0 weight (1, 0) -> cos 3/5; class 1 weight (0, 2) -> cos 4/5; s = 10
    z = cosine_logits(torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 2.0]]), 10.0)
    assert z[0].tolist() == pytest.approx([6.0, 8.0])


def test_cosine_logits_ignore_feature_and_weight_norms_and_are_bounded_by_the_scale():
    torch.manual_seed(0)
    h, w = torch.randn(5, 7), torch.randn(3, 7)
    base = cosine_logits(h, w, 15.0)
    scaled = cosine_logits(
        h * torch.tensor([[2.0], [0.1], [7.0], [1.0], [30.0]]), w * torch.tensor([[4.0], [0.5], [9.0]]), 15.0
    )
    assert torch.allclose(base, scaled, atol=1e-5)
    assert float(base.abs().max()) <= 15.0 + 1e-5
    # a feature parallel to a class weight hits the bound exactly
    assert cosine_logits(w[1:2] * 3, w, 15.0)[0, 1].item() == pytest.approx(15.0, abs=1e-5)


def test_zero_feature_gives_zero_logits_not_nan():
    z = cosine_logits(torch.zeros(1, 4), torch.randn(3, 4), 15.0)
    assert torch.equal(z, torch.zeros(1, 3))


def _setup(num_modalities: int):
    method = MMCosine()
    return method, *seeded_problem(method, num_modalities, num_classes=3, num_samples=12, seed=2)


@pytest.mark.parametrize("num_modalities", [2, 3])
def test_loss_is_cross_entropy_of_summed_scaled_cosines(num_modalities):
    method, model, batch = _setup(num_modalities)
    model.eval()  # fixed BatchNorm statistics, so the features below are the ones the loss sees
    with torch.no_grad():
        loss = float(method.loss(model, batch, StepContext(0, 1, 0, 1, 0)).loss)
        features = {name: enc(batch.inputs[name]).double().numpy() for name, enc in model.encoders.items()}
    fused = 0.0
    for name, h in features.items():
        w = model.head.weights[name].detach().double().numpy()
        cos = (h @ w.T) / (np.linalg.norm(h, axis=1, keepdims=True) * np.linalg.norm(w, axis=1)[None, :])
        fused = fused + 15.0 * cos
    labels = batch.label.numpy()
    log_softmax = fused - np.log(np.exp(fused).sum(axis=1, keepdims=True))
    expected = -log_softmax[np.arange(len(labels)), labels].mean()
    assert loss == pytest.approx(expected, rel=1e-5)


def test_prediction_columns_sum_to_the_fused_logits_and_the_head_has_no_bias():
    method, model, batch = _setup(3)
    model.eval()
    with torch.no_grad():
        pred = method.predict(model, batch)
        logits, _ = model(batch.inputs)
    assert torch.allclose(pred.logits, logits)
    assert torch.allclose(sum(pred.per_modality.values()), logits, atol=1e-5)
    assert not [n for n, _ in model.head.named_parameters() if "bias" in n]


def test_bad_scaling_is_rejected():
    with pytest.raises(ValueError, match="scaling"):
        MMCosine(scaling=0.0)


@pytest.mark.parametrize("dataset", ["synthetic_2m", "synthetic_3m"])
def test_one_epoch_through_cells(dataset):
    record = one_epoch_scoring_every_modality("mmcosine", dataset)
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0


def test_registered_with_released_defaults():
    assert registered_defaults("mmcosine") == MMCosine(scaling=15.0)
