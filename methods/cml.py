"""CML: Calibrating Multimodal Learning (Ma, Zhang, Zhang, Wu, Fu, Zhou and Hu, ICML 2023).

The paper's principle: the confidence of a multimodal prediction should not increase when a modality is removed.
CML adds a regulariser that penalises the confidence of the model with a modality removed exceeding the
confidence of the full model, next to the cross-entropies of the full and the reduced models. With a concat
(sum-of-modalities) head, removing modality m is subtracting its slice: z^(-m) = z - W_m h_m.

Reference implementation: GeWu-Lab/BalanceBenchmark ``balancemm/trainer/CML_trainer.py`` (``conf_loss``,
``train_loop`` and ``training_step``) and ``configs/trainer_config.yaml`` (``CML: lam: 0.1``). The paper's own
equations and code were not available here; the method follows that trainer, with one documented flag.

Each step (M modalities, removal order a random permutation drawn once per epoch, as the trainer's
``random.shuffle`` before each epoch):

* z^(0) = z, the fused logits; for k = 1..M-1, z^(k) = z^(k-1) - W_{m_k} h_{m_k} (the removed modality's slice
  without its bias share, so every reduced model keeps the full bias, as the trainer's ``out_s -
  unimodal_result[m] + bias / M``). Removals are nested: z^(2) lacks two modalities.
* L = (1/M) sum_{k=0}^{M-1} CE(z^(k), y) + lam * sum_{k=1}^{M-1} R(z^(k-1), z^(k)), with
  conf(z) = max_c softmax(z)_c (the predicted class's probability, not the true class's).
* ``hinge = "batch"`` (the trainer's ``conf_loss``): R = max(0, sum_i [conf(z^(k)_i) - conf(z^(k-1)_i)]), one hinge
  on the batch *sum* of the confidence increases; ``"sample"``: R = sum_i max(0, conf(z^(k)_i) - conf(z^(k-1)_i)),
  the principle applied to every sample. The trainer also counts ``sign`` ("trick 1": samples not turned wrong by
  the removal) but never uses it, so neither does this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import LogUniform, MethodConfig, SearchRanges, check_at_least
from bench.nn import SlicedFusionNet, sliced_prediction
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext

__all__ = ["CML", "confidence", "confidence_penalty", "removal_logits"]


# --------------------------------------------------------------------------------------------------
# The math, as pure functions (pinned by tests/test_parity_cml.py)


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """conf_i = max_c softmax(z_i)_c. Shape (B,)."""
    return logits.softmax(dim=1).max(dim=1).values


def confidence_penalty(full: torch.Tensor, reduced: torch.Tensor, hinge: str) -> torch.Tensor:
    """R for one removal: ``batch`` max(0, sum_i (conf(reduced_i) - conf(full_i))); ``sample`` the sum of the
    per-sample hinges. Both are 0 when no confidence rises; ``sample`` >= ``batch`` always."""
    rise = confidence(reduced) - confidence(full)
    if hinge == "batch":
        return torch.relu(rise.sum())
    if hinge == "sample":
        return torch.relu(rise).sum()
    raise ValueError(f"unknown hinge {hinge!r}; use 'batch' or 'sample'")


def removal_logits(
    fused: torch.Tensor, sliced: dict[str, torch.Tensor], order: list[str], bias_share: torch.Tensor
) -> list[torch.Tensor]:
    """[z, z - (s_{m1} - b/M), z - (s_{m1} - b/M) - (s_{m2} - b/M), ...]: the fused logits and the M-1 nested
    reductions, removing modalities in ``order`` (``sliced`` are the head's per-modality logits, each holding the
    bias share ``bias_share``)."""
    out = [fused]
    for name in order[:-1]:
        out.append(out[-1] - sliced[name] + bias_share)
    return out


# --------------------------------------------------------------------------------------------------
# Method


@dataclass(frozen=True)
class CML(MethodConfig):
    """CML regulariser on joint late fusion: confidence must not rise when a modality is removed.

    Fields:

    * ``lam = 0.1``: the regulariser's weight (BalanceBenchmark's ``lam``).
    * ``hinge = "batch"``: the released hinge on the batch sum; ``"sample"`` per sample (see the module docstring).

    The concat head is the released model (``fc_out`` over concatenated features). Inference: the fused logits;
    per-modality columns: the head's slices (W_m h_m + b/M). Missing modalities are not handled: zero-filled inputs
    go through their encoder like any other sample.
    """

    lam: float = 0.1
    hinge: Literal["batch", "sample"] = "batch"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 0, "lam")

    def build(self, description: DataDescription) -> nn.Module:
        model = SlicedFusionNet(description, "concat")
        model.removal_order = list(model.encoders)  # redrawn at the first step of every epoch
        model.removal_epoch = -1
        return model

    def _order(self, model: nn.Module, epoch: int) -> list[str]:
        if model.removal_epoch != epoch:
            names = list(model.encoders)
            model.removal_order = [names[i] for i in torch.randperm(len(names)).tolist()]
            model.removal_epoch = epoch
        return model.removal_order

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits, features = model(batch.inputs)
        sliced = model.head.sliced(features)
        share = model.head.fc.bias / len(sliced)
        chain = removal_logits(logits, sliced, self._order(model, ctx.epoch), share)
        ce = sum(F.cross_entropy(z, batch.label) for z in chain) / len(sliced)
        penalty = sum(confidence_penalty(full, reduced, self.hinge) for full, reduced in zip(chain, chain[1:]))
        return LossOut(ce + self.lam * penalty, {"penalty": penalty.detach()})

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        return sliced_prediction(model, batch.inputs)

    #: lr, weight decay and lam log-uniform in [0.01, 1] (around the released 0.1).
    search_ranges: ClassVar[SearchRanges] = {"lam": LogUniform(0.01, 1.0)}
