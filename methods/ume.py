"""UME: Uni-Modal Ensemble (Du, Teng, Li, Liu, Yuan, Wang, Yuan, Zhao, "On Uni-Modal Feature Learning in
Supervised Multi-Modal Learning", ICML 2023, arXiv 2305.01233).

The paper's alternative to UMT for tasks whose paired (cross-modal) features matter little: train one
uni-modal model per modality, independently, and ensemble their predictions at test time, so no modality is
lazy because none is trained jointly with another.

Here: one encoder and Linear head per modality (:class:`bench.nn.classifiers.PerModalityClassifiers`), trained with
the sum of the per-modality cross-entropies. The parameters are disjoint, so each model gets exactly the
gradient of training alone (SGD momentum, weight decay and Adam act per parameter). The ensemble's
prediction is the mean of the uni-modal outputs over the modalities present in the sample:

* ``combine = "logits"`` (default): the mean of the logits;
* ``combine = "probabilities"``: the mean of the softmax probabilities.

The paper ensembles the uni-modal models' outputs; its text as we read it does not pin down whether before
or after the softmax, hence the field. Choices of this implementation: the epoch is selected on the
ensemble's validation accuracy (one selection for all members, as the one loop selects one epoch per
cell); a sample's missing modality is left out of its ensemble (its zero-filled input carries nothing) and,
in training, out of that modality's cross-entropy. The per-modality columns are each member's own accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import Choice, MethodConfig, SearchRanges
from bench.methods.umt import present_cross_entropy
from bench.nn import PerModalityClassifiers
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext

__all__ = ["UME", "ensemble"]


def ensemble(logits: dict[str, torch.Tensor], mask: torch.Tensor, combine: str) -> torch.Tensor:
    """Mean over the present modalities (``mask`` (B, M), order of ``logits``) of each member's logits or
    softmax probabilities; a sample with no modality present gets the mean over all members."""
    outputs = torch.stack([z if combine == "logits" else F.softmax(z.float(), dim=1) for z in logits.values()], 1)
    weights = mask.to(outputs.dtype)
    none = weights.sum(1) == 0
    weights = torch.where(none[:, None], torch.ones_like(weights), weights)
    return (outputs * weights[:, :, None]).sum(1) / weights.sum(1, keepdim=True)


@dataclass(frozen=True)
class UME(MethodConfig):
    """UME: uni-modal models trained independently, predictions ensembled (mean over present modalities).

    Fields: ``combine`` = ``"logits"`` or ``"probabilities"`` (module docstring)."""

    combine: Literal["logits", "probabilities"] = "logits"

    def build(self, description: DataDescription) -> nn.Module:
        return PerModalityClassifiers(description)

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits = model(batch.inputs)
        losses = [present_cross_entropy(z, batch.label, batch.mask[:, m]) for m, z in enumerate(logits.values())]
        return LossOut(torch.stack(losses).sum(), {"logits": logits})

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        logits = model(batch.inputs)
        return Prediction(ensemble(logits, batch.mask, self.combine), logits)

    search_ranges: ClassVar[SearchRanges] = {"combine": Choice("logits", "probabilities")}
