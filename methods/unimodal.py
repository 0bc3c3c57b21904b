"""Unimodal baselines: every modality trained alone, side by side in one cell."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import MethodConfig
from bench.nn import PerModalityClassifiers
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext


@dataclass(frozen=True)
class Unimodal(MethodConfig):
    """Each modality's encoder and head trained alone (the "Unimodal-m" rows of BalanceBenchmark's table).

    The loss is the sum of the per-modality cross-entropies over disjoint parameters, so each classifier gets
    exactly the gradient it would get if trained on its own (SGD momentum and weight decay act per
    parameter too). The per-modality columns are therefore the *trained-alone* reference to set against the
    same modality inside a jointly trained model. The fused column is the product of the experts (sum of
    log-probabilities); the epoch is selected on its validation accuracy, shared by all classifiers.
    """

    #: Read by the harness: this method's per-modality columns are the trained-alone reference.
    per_modality_trained_alone: ClassVar[bool] = True

    def build(self, description: DataDescription) -> nn.Module:
        return PerModalityClassifiers(description)

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits = model(batch.inputs)
        return LossOut(sum(F.cross_entropy(z, batch.label) for z in logits.values()), {"logits": logits})

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        logits = model(batch.inputs)
        fused = torch.stack([F.log_softmax(z, dim=1) for z in logits.values()]).sum(0)
        return Prediction(fused, logits)
