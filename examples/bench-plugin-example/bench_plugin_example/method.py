"""``mean_logits``: one classifier per modality, trained jointly on the mean of their logits.

This is the late-fusion baseline of the QMF code base (``latefusion``: z = (z_1 + ... + z_M) / M with one
cross-entropy on z), written as a bench plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import MethodConfig
from bench.nn import PerModalityClassifiers
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext


@dataclass(frozen=True)
class MeanLogits(MethodConfig):
    """Mean of per-modality logits, one cross-entropy on the mean (QMF repo's ``latefusion``)."""

    def build(self, description: DataDescription) -> nn.Module:
        return PerModalityClassifiers(description)

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        fused = torch.stack(list(model(batch.inputs).values())).mean(0)
        return LossOut(F.cross_entropy(fused, batch.label))

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        per_modality = model(batch.inputs)
        return Prediction(torch.stack(list(per_modality.values())).mean(0), per_modality)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True)}
