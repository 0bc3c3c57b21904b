"""G-Blending: Gradient-Blending (Wang, Tran, Feiszli, "What Makes Training Multi-Modal Classification
Networks Hard?", CVPR 2020).

A fused head and one unimodal head per modality on shared encoders, trained with the blended loss
L = sum_k w_k L_k (Eq. 7) whose weights minimise the overfitting-to-generalization ratio:
w_k = G_k / O_k^2 / Z (Eq. 6 and Algorithm 1), with, between checkpoints N and N + n, the generalization
G = L^V_N - L^V_{N+n} and the overfitting change O = O_{N+n} - O_N, O = L^V - L^T (Eq. 3); L^V is the loss
on a held-out part V of the *training* set (Sec. 2.4), L^T the loss on the training data.

When and from which data the weights are estimated (online G-Blending, Algorithm 3, re-estimated every
super-epoch):

* The loop holds out ``holdout_fraction`` of the training split (stratified, seeded with the cell seed)
  and trains on the rest; the validation and test splits are never used. The held-out part changes nothing
  else: the test-time noise scale (``--noise``) comes from the whole training split, as for every other method.
* Before epoch 0 and at every super-epoch boundary (epochs ``first_super_epoch``,
  ``first_super_epoch + super_epoch``, ...) ``start_epoch`` measures each head's mean cross-entropy on the
  training part (L^T, the paper's T') and on the held-out part (L^V), in eval mode.
* At each boundary after the first, G_k and O_k over the super-epoch just finished give the weights for
  the next one. The first super-epoch trains with equal weights 1/(M + 1) (the paper warms up with a
  longer first super-epoch, 10 epochs, then 5).

Differences from the paper, forced by the one training loop and documented here:

* Algorithm 1 trains a separate copy of each uni-modal network and of the naive multi-modal network from
  the checkpoint for n epochs and measures G and O on those copies (a look-ahead that costs M + 1 extra
  trainings per super-epoch). Here G and O come from the heads of the jointly trained multi-head model
  over the super-epoch just trained (a look-back, no extra training).
* Weights are normalised to sum to 1, the constraint of Proposition 1 (the paper's Z = sum_k G_k / (2 O_k^2)
  would make them sum to 2); a head whose held-out loss rose (G_k < 0) gets weight 0, and if no head
  generalised the weights become equal. BalanceBenchmark (``balancemm/trainer/GBlending_trainer.py``)
  uses |G / O^2|, measures L^V on the validation split and L^T as a sum over an epoch's batches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import Choice, MethodConfig, SearchRanges, check_at_least, check_fraction
from bench.nn import FusionWithUnimodalHeads
from bench.protocol import Batch, DataDescription, EpochContext, LossOut, Prediction, StepContext

__all__ = ["FUSED", "GBlending", "GBlendingNet", "blend_weights", "head_losses", "ogr_terms"]

#: Name of the fused (multi-modal) head among the heads; it comes last, as the paper's k + 1-th loss.
FUSED = "fused"
#: Guards O^2 = 0 (a head whose overfitting did not change at all) against division by zero.
MIN_SQUARED_OVERFITTING = 1e-12


# --------------------------------------------------------------------------------------------------
# The math, as pure functions (pinned by tests/test_parity_gblending.py)


def ogr_terms(
    train_before: torch.Tensor, holdout_before: torch.Tensor, train_after: torch.Tensor, holdout_after: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(G, O) per head between two checkpoints (Eq. 3): G = L^V_N - L^V_{N+n}, O = O_{N+n} - O_N."""
    generalization = holdout_before - holdout_after
    overfitting = (holdout_after - train_after) - (holdout_before - train_before)
    return generalization, overfitting


def blend_weights(generalization: torch.Tensor, overfitting: torch.Tensor) -> torch.Tensor:
    """w_k proportional to max(G_k, 0) / O_k^2, summing to 1; equal weights when no head generalised."""
    raw = generalization.clamp_min(0) / overfitting.pow(2).clamp_min(MIN_SQUARED_OVERFITTING)
    total = raw.sum()
    if not total > 0:
        return torch.full_like(raw, 1.0 / raw.numel())
    return raw / total


def head_losses(model: FusionWithUnimodalHeads, batches: Iterable[Batch]) -> torch.Tensor:
    """Mean cross-entropy of every head (unimodal heads in modality order, then the fused head). Shape (M + 1,)."""
    totals, count = None, 0
    for batch in batches:
        logits, features = model(batch.inputs)
        heads = [*model.unimodal_logits(features).values(), logits]
        sums = torch.stack([F.cross_entropy(z.float(), batch.label, reduction="sum") for z in heads])
        totals = sums if totals is None else totals + sums
        count += len(batch)
    if totals is None:
        raise ValueError("head_losses needs at least one batch")
    return totals / count


# --------------------------------------------------------------------------------------------------
# Model and method


class GBlendingNet(FusionWithUnimodalHeads):
    """The multi-head model and G-Blending's state (buffers): the current blend weights (M + 1,), the
    train and held-out losses of every head at the last boundary, and whether one was measured."""

    def __init__(self, description: DataDescription, fusion: str) -> None:
        super().__init__(description, fusion)
        heads = len(self.encoders) + 1
        self.register_buffer("blend", torch.full((heads,), 1.0 / heads))
        self.register_buffer("boundary_train_loss", torch.zeros(heads))
        self.register_buffer("boundary_holdout_loss", torch.zeros(heads))
        self.register_buffer("has_boundary", torch.zeros((), dtype=torch.bool))

    def head_names(self) -> list[str]:
        return [*self.encoders, FUSED]


@dataclass(frozen=True)
class GBlending(MethodConfig):
    """G-Blending: multi-head model trained with L = sum_k w_k CE(z_k, y), w re-estimated every super-epoch.

    Heads: one Linear per modality on its encoder's features and the fused head (concat), see
    :class:`~bench.nn.classifiers.FusionWithUnimodalHeads`. Inference: the fused head; the per-modality columns are
    the unimodal heads. The schedule and the estimate are described in the module docstring.

    Fields:

    * ``super_epoch = 5``, ``first_super_epoch = 10``: the paper's Kinetics schedule (Sec. 3.3).
    * ``holdout_fraction = 0.1``: share of the training split held out for L^V (the paper: 8% on Kinetics
      and mini-Sports, 13% on mini-AudioSet). Read by the loop.
    * ``fusion = "concat"``: the fused head on concatenated features.

    Missing modalities are not handled: zero-filled inputs reach every head like any other sample.
    """

    super_epoch: int = 5
    first_super_epoch: int = 10
    holdout_fraction: float = 0.1
    fusion: Literal["concat", "sum"] = "concat"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 1, "super_epoch", "first_super_epoch")
        check_fraction(self, "holdout_fraction")

    def build(self, description: DataDescription) -> nn.Module:
        return GBlendingNet(description, self.fusion)

    def is_boundary(self, epoch: int) -> bool:
        """Epoch 0, then ``first_super_epoch``, then every ``super_epoch`` epochs."""
        if epoch == 0:
            return True
        return epoch >= self.first_super_epoch and (epoch - self.first_super_epoch) % self.super_epoch == 0

    def start_epoch(self, model: nn.Module, epoch: EpochContext) -> None:
        if not self.is_boundary(epoch.epoch):
            return
        train = head_losses(model, epoch.batches("train"))
        holdout = head_losses(model, epoch.batches("holdout"))
        if bool(model.has_boundary):
            generalization, overfitting = ogr_terms(
                model.boundary_train_loss, model.boundary_holdout_loss, train, holdout
            )
            model.blend.copy_(blend_weights(generalization, overfitting))
        model.boundary_train_loss.copy_(train)
        model.boundary_holdout_loss.copy_(holdout)
        model.has_boundary.fill_(True)

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits, features = model(batch.inputs)
        heads = [*model.unimodal_logits(features).values(), logits]
        losses = torch.stack([F.cross_entropy(z, batch.label) for z in heads])
        weights = model.blend.detach()
        return LossOut((weights * losses).sum(), {"weights": dict(zip(model.head_names(), weights.tolist()))})

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        logits, features = model(batch.inputs)
        return Prediction(logits, model.unimodal_logits(features))

    #: lr, weight decay and the schedule (the held-out share is part of the protocol, not searched).
    search_ranges: ClassVar[SearchRanges] = {
        "super_epoch": Choice(2, 5, 10),
        "first_super_epoch": Choice(2, 5, 10),
    }
