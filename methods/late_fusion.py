"""Joint training with late fusion: the "Normal" baseline of the OGM-GE and MLA repositories."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch.nn.functional as F
from torch import nn

from bench.hparams import MethodConfig
from bench.models import SlicedFusionNet
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext
from bench.registry import variant


@dataclass(frozen=True)
class LateFusion(MethodConfig):
    """Joint late fusion trained with one cross-entropy on the fused logits.

    ``fusion="concat"`` (default) is the ``ConcatFusion`` that both official repositories use for their
    "Normal" baseline: z = W[h_1; ...; h_M] + b, a sum of per-modality linear heads with one shared bias.
    ``fusion="sum"`` is their ``SumFusion``, one bias per modality. Per-modality accuracy is measured
    inside the jointly trained model by slicing the head (concat: W_m h_m + b/M, as OGM-GE ``main.py``
    does for its audio/visual columns; sum: each modality's own head).
    """

    fusion: Literal["concat", "sum"] = "concat"

    def build(self, description: DataDescription) -> nn.Module:
        return SlicedFusionNet(description, self.fusion)

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits, features = model(batch.inputs)
        return LossOut(F.cross_entropy(logits, batch.label), {"features": features, "logits": logits})

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        logits, features = model(batch.inputs)
        return Prediction(logits, model.head.sliced(features))

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return MethodConfig.search_space(trial)


LATE_FUSION_SUM = variant(LateFusion, fusion="sum")
