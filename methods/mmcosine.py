"""MMCosine: multi-modal cosine loss (Xu, Feng, Zhang and Hu, ICASSP 2023, "MMCosine: Multi-Modal Cosine Loss
Towards Balanced Audio-Visual Fine-Grained Learning").

Each modality's logit for class c is a scaled cosine between its feature and that modality's slice of the
fused head's class-c weight, z_m,c = s * <h_m, w_m,c> / (||h_m|| ||w_m,c||), and the fused logits are their sum,
trained with one cross-entropy. Normalising features and weights per modality keeps a modality whose features
grow fast (the dominant one) from taking over the fused logit by its norm alone. The head has no bias: a bias
would be neither a cosine nor attributable to a modality. References: ``GeWu-Lab/MMCosine_ICASSP23`` (README
only, code "under construction"); ``GeWu-Lab/BalanceBenchmark`` ``balancemm/trainer/MMCosine_trainer.py``
(``training_step`` and ``validation_step``) and ``configs/trainer_config.yaml`` (``MMCosine: scaling: 15``).

Where this differs from BalanceBenchmark's trainer:

* BalanceBenchmark trains the plain concat head (with its bias) outside an epoch window (default 0-80, i.e.
  always inside any budget here) while always *evaluating* with the cosine logits; here training and evaluation
  both use the cosine logits, which is what that window gives for every budget up to 80 epochs.
* Its head is a ``Linear`` with a bias that the cosine logits never use (so the bias gets no gradient); here the
  unused bias is not built.
* The paper's optional contrastive term (a commented-out ``NCELoss`` in the trainer) is not part of the method
  here, as in BalanceBenchmark.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import LogUniform, MethodConfig, SearchRanges, check_positive
from bench.nn import build_encoders, encode
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext

__all__ = ["CosineHead", "MMCosine", "cosine_logits"]


def cosine_logits(features: torch.Tensor, weight: torch.Tensor, scaling: float) -> torch.Tensor:
    """s * cos(h_i, w_c) for every sample i and class c: (B, d) features, (C, d) class weights -> (B, C).

    Each feature row and each class row is L2-normalised (``F.normalize``, eps 1e-12, so a zero feature gives
    zero logits instead of NaN)."""
    return scaling * F.normalize(features, dim=1) @ F.normalize(weight, dim=1).T


class CosineHead(nn.Module):
    """One (C, d_m) weight per modality, initialised as ``nn.Linear`` would initialise the concat head's slice;
    ``sliced`` gives the per-modality cosine logits, ``forward`` their sum."""

    def __init__(self, dims: Mapping[str, int], num_classes: int, scaling: float) -> None:
        super().__init__()
        self.scaling = scaling
        fan_in = sum(dims.values())
        bound = 1 / math.sqrt(fan_in)  # nn.Linear's kaiming_uniform(a=sqrt(5)) bound for the whole concat head
        self.weights = nn.ParameterDict(
            {name: nn.Parameter(torch.empty(num_classes, dim).uniform_(-bound, bound)) for name, dim in dims.items()}
        )

    def sliced(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: cosine_logits(features[name], w, self.scaling) for name, w in self.weights.items()}

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(self.sliced(features).values())).sum(0)


class CosineFusionNet(nn.Module):
    def __init__(self, description: DataDescription, scaling: float) -> None:
        super().__init__()
        self.encoders = build_encoders(description)
        dims = {name: enc.out_dim for name, enc in self.encoders.items()}
        self.head = CosineHead(dims, description.num_classes, scaling)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features = encode(self.encoders, inputs)
        return self.head(features), features


@dataclass(frozen=True)
class MMCosine(MethodConfig):
    """MMCosine: fused logits = sum over modalities of s * cos(feature, class weight); one cross-entropy.

    Fields:

    * ``scaling = 15.0``: s, BalanceBenchmark's ``configs/trainer_config.yaml`` value. It bounds every
      per-modality logit to [-s, s], so it acts as an inverse temperature; with M modalities the fused logits
      lie in [-M s, M s].

    Per-modality columns are each modality's cosine logits (their sum is exactly the fused logits). Missing
    modalities are not handled: a zero-filled input goes through its encoder like any other sample.
    """

    scaling: float = 15.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "scaling")

    def build(self, description: DataDescription) -> nn.Module:
        return CosineFusionNet(description, self.scaling)

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits, _ = model(batch.inputs)
        return LossOut(F.cross_entropy(logits, batch.label))

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        features = encode(model.encoders, batch.inputs)
        per_modality = model.head.sliced(features)
        return Prediction(torch.stack(list(per_modality.values())).sum(0), per_modality)

    #: lr, weight decay and the scale s log-uniform in [5, 50] (around the released 15).
    search_ranges: ClassVar[SearchRanges] = {"scaling": LogUniform(5.0, 50.0)}
