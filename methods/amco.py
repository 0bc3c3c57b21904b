"""AMCo: Adaptive Mask Co-optimization (Zhou, Liang, Zheng, Xuan and Kumada, ICASSP 2023, "Adaptive Mask
Co-optimization for Modal Dependence in Multimodal Learning"), as BalanceBenchmark implements it.

The paper's abstract: an adaptive mask makes the modalities the model depends on harder to learn, so that it fits
the others better, and co-optimization (unimodal losses next to the multimodal one) keeps the dependent modalities'
own performance. Its equations were not available here; the only implementation found is GeWu-Lab/BalanceBenchmark
``balancemm/trainer/AMCo_trainer.py`` (``train_loop``, ``training_step``), ``balancemm/models/avclassify_model.py``
(``BaseClassifierAMCoModel``) and ``configs/trainer_config.yaml`` (``AMCo: sigma 0.5, eps 0.3, U 512``), which
this follows:

* z_m = W_m h_m + b/M, the concat head's slices. A modality is *dependent* when its share of the softmax over
  the concatenated logits [z_1; ...; z_M] (M C entries), averaged over the batch, exceeds ``sigma``
  (:func:`dependent_modalities`). The decision of one step applies to the next; the first step has none.
* The mask of a step: N = int(p_t C) of the C class logits set to zero, at random positions, one draw per step shared
  by all samples, with p_t = sin(pi/2 * min(eps, l_t) / eps) and l_t = (batch index) x epoch / 10, which restarts
  every epoch (:func:`mask_ratio`): nothing is masked during epoch 0, and from epoch 1 on p_t reaches 1 within a
  few batches, so the dependent modality's logits are then masked entirely.
* Dependent modalities' logits are multiplied by the mask; the fused logits are a learned C x C map (``linear_star``)
  of their sum; L = CE(fused) + sum_m CE(z_m), the z_m masked where dependent (the trainer masks them in place).
  Inference: no mask, fused logits = linear_star(z).

Deviations from the trainer: its mask is expanded to two rows and multiplied with (B, C) logits, which broadcasts
only for batches of one or two samples; here the one mask row applies to every sample, which is what the expansion
evidently intends. The config's ``U: 512`` (a feature-unit count) and ``alpha`` are never read by the trainer, so
they are not fields here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import (
    LogUniform,
    MethodConfig,
    SearchRanges,
    Uniform,
    check_epoch_window,
    check_fraction,
    check_positive,
)
from bench.nn import SlicedFusionNet
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext

__all__ = ["AMCo", "dependent_modalities", "mask_ratio"]


# --------------------------------------------------------------------------------------------------
# The math, as pure functions (pinned by tests/test_parity_amco.py)


def mask_ratio(batch_index: int, epoch: int, eps: float) -> float:
    """p_t = sin(pi/2 * min(eps, l_t) / eps) with l_t = batch_index * epoch / 10 (the trainer's ``l_t``)."""
    l_t = batch_index * epoch / 10
    return math.sin(math.pi / 2 * min(eps, l_t) / eps)


def dependent_modalities(sliced: Mapping[str, torch.Tensor], sigma: float) -> dict[str, bool]:
    """m is dependent when mean_i sum_{c} softmax([z_1,i; ...; z_M,i])_{(m, c)} > sigma."""
    shares = torch.cat(list(sliced.values()), dim=1).softmax(dim=1)
    num_classes = next(iter(sliced.values())).shape[1]
    return {
        name: bool(shares[:, m * num_classes : (m + 1) * num_classes].sum(dim=1).mean() > sigma)
        for m, name in enumerate(sliced)
    }


# --------------------------------------------------------------------------------------------------
# Model and method


class AMCoNet(SlicedFusionNet):
    """Concat late fusion followed by ``linear_star``, a C x C map of the fused logits (``BaseClassifierAMCoModel``)."""

    def __init__(self, description: DataDescription) -> None:
        super().__init__(description, "concat")
        self.linear_star = nn.Linear(description.num_classes, description.num_classes)
        self.dependent = {name: False for name in self.encoders}

    def masked(
        self, features: Mapping[str, torch.Tensor], mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(fused logits, per-modality logits) with the dependent modalities' logits times ``mask``."""
        sliced = self.head.sliced(features)
        if mask is not None:
            sliced = {name: z * mask if self.dependent[name] else z for name, z in sliced.items()}
        return self.linear_star(torch.stack(list(sliced.values())).sum(0)), sliced


@dataclass(frozen=True)
class AMCo(MethodConfig):
    """AMCo: mask the logits of the modalities the model depends on (a sine curriculum), co-train unimodal losses.

    Fields:

    * ``sigma = 0.5``: dependence threshold on a modality's softmax share (BalanceBenchmark config).
    * ``eps = 0.3``: the curriculum's length in l_t units (BalanceBenchmark config).
    * ``modulation_start = 0``, ``modulation_end = 80``: inclusive epoch window (BalanceBenchmark config); outside it
      the loss is the fused cross-entropy alone and nothing is masked.

    Inference: the fused logits (through ``linear_star``); per-modality columns: the head's slices z_m.
    Missing modalities are not handled: zero-filled inputs go through their encoder like any other sample.
    """

    sigma: float = 0.5
    eps: float = 0.3
    modulation_start: int = 0
    modulation_end: int = 80

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction(self, "sigma")
        check_positive(self, "eps")
        check_epoch_window(self.modulation_start, self.modulation_end)

    def build(self, description: DataDescription) -> nn.Module:
        return AMCoNet(description)

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        features = {name: enc(batch.inputs[name]) for name, enc in model.encoders.items()}
        if not self.modulation_start <= ctx.epoch <= self.modulation_end:
            fused, _ = model.masked(features, None)
            return LossOut(F.cross_entropy(fused, batch.label))
        num_classes = model.linear_star.in_features
        dropped = int(mask_ratio(ctx.batch_index, ctx.epoch, self.eps) * num_classes)
        mask = torch.ones(num_classes)
        mask[torch.randperm(num_classes)[:dropped]] = 0.0
        fused, sliced = model.masked(features, mask)
        loss = F.cross_entropy(fused, batch.label) + sum(F.cross_entropy(z, batch.label) for z in sliced.values())
        with torch.no_grad():  # the next step's dependent modalities, from this step's (masked) logits
            model.dependent = dependent_modalities({k: v.detach() for k, v in sliced.items()}, self.sigma)
        return LossOut(loss, {"mask": mask, "dependent": dict(model.dependent)})

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        features = {name: enc(batch.inputs[name]) for name, enc in model.encoders.items()}
        fused, sliced = model.masked(features, None)
        return Prediction(fused, sliced)

    #: sigma in [0.3, 0.8] (around the released 0.5; an even split gives each modality 1/M) and eps log-uniform
    #: in [0.1, 3] (how fast the curriculum reaches a full mask).
    search_ranges: ClassVar[SearchRanges] = {
        "sigma": Uniform(0.3, 0.8),
        "eps": LogUniform(0.1, 3.0),
    }
