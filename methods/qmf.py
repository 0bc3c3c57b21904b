"""QMF: Quality-aware Multimodal Fusion (Zhang et al., "Provable Dynamic Fusion for Low-Quality
Multimodal Data", ICML 2023).

Every modality has its own classifier. The fused logits weight each modality's logits per sample by an
energy-based confidence, and a ranking regulariser ties that confidence to the sample's cumulative
training loss. References: ``QingyangZhang/QMF``
``text-image-classification/train_qmf.py`` (the default variant here),
``RGBD-scene-recognition/train_QMF_nyud2.py`` and ``models/QMF.py`` (the RGB-D variant), and the MLA
repository's ``main.py`` / ``utils/utils.py`` ``History`` (its re-implementation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import Choice, LogUniform, MethodConfig, SearchRanges, check_at_least, check_positive
from bench.nn import PerModalityClassifiers
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext

__all__ = [
    "QMF",
    "QMFNet",
    "energy_confidence",
    "fuse_by_confidence",
    "normalise_history",
    "rank_loss",
]


# --------------------------------------------------------------------------------------------------
# The math, as pure functions (pinned by tests/test_parity_qmf.py)


def energy_confidence(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """w = -Energy / T = logsumexp_c(z) / T, shape (B,). Unnormalised, may be negative.

    ``torch.logsumexp`` instead of the official log(sum(exp(z))), which overflows for large logits.
    """
    return torch.logsumexp(logits, dim=1) / temperature


def fuse_by_confidence(
    logits: Sequence[torch.Tensor], confidences: Sequence[torch.Tensor], *, detach: bool = True
) -> torch.Tensor:
    """z = sum_m w_m * z_m, each sample weighted by its own confidence (no normalisation across modalities).

    ``detach=True`` is the text-image code and the MLA repository (the fused CE does not train through the
    weights); ``False`` is the RGB-D code (``models/QMF.py``).
    """
    fused = torch.zeros_like(logits[0])
    for z, w in zip(logits, confidences):
        w = w.detach() if detach else w
        fused = fused + w.unsqueeze(1) * z
    return fused


def normalise_history(history: torch.Tensor) -> torch.Tensor:
    """Min-max normalise one modality's whole history array, zeros of unseen samples included.

    The official ``History.correctness_normalize`` divides by (max - min) unguarded, which is 0/0 before
    any loss has been recorded (the RGB-D order, history after rank); all-equal histories then rank no pair,
    which is what zeros give here.
    """
    low, high = history.min(), history.max()
    if not high > low:
        return torch.zeros_like(history)
    return (history - low) / (high - low)


def rank_loss(confidence: torch.Tensor, normalised_history: torch.Tensor) -> torch.Tensor:
    """Sample-wise ranking regulariser of one modality on a batch.

    Pairs are (i, i+1 mod B) (``torch.roll(-1)``). With t = sign(l_i - l_{i+1}) and m = |l_i - l_{i+1}| on
    the normalised cumulative losses l, the pair's loss is max(0, t * (c_i - c_{i+1}) - m), 0 when t = 0;
    this is what MarginRankingLoss(margin 0) computes on the official inputs x1 = c_i, x2 = c_{i+1} + m/t,
    target -t. Averaged over the batch, zero pairs included. ``confidence`` is *not* detached: this term
    trains the encoders and heads.
    """
    partner_confidence = torch.roll(confidence, -1)
    partner_history = torch.roll(normalised_history, -1)
    target = torch.sign(normalised_history - partner_history)
    margin = (normalised_history - partner_history).abs()
    per_pair = torch.relu(target * (confidence - partner_confidence) - margin)
    return torch.where(target == 0, torch.zeros_like(per_pair), per_pair).mean()


# --------------------------------------------------------------------------------------------------
# Model and method


class QMFNet(PerModalityClassifiers):
    """One full classifier per modality (encoder + own Linear head) and the training-loss history.

    ``loss_history[m, n]`` is the cumulative cross-entropy of modality m on training sample n. A buffer,
    so it moves with the model and is saved and restored with its state dict.
    """

    def __init__(self, description: DataDescription) -> None:
        super().__init__(description)
        self.register_buffer("loss_history", torch.zeros(len(self.encoders), description.num_train))

    @torch.no_grad()
    def record_losses(self, index: torch.Tensor, per_sample_losses: Sequence[torch.Tensor]) -> None:
        """history[m, index] += CE_m per sample. Indices within a batch are distinct, so no collisions."""
        for m, losses in enumerate(per_sample_losses):
            self.loss_history[m].index_add_(0, index, losses.detach().to(self.loss_history.dtype))


@dataclass(frozen=True)
class QMF(MethodConfig):
    """QMF: per-modality classifiers fused by energy confidence, with a history-based ranking loss.

    Each step, with z_m the logits of modality m and w_m = logsumexp(z_m) / T:
    L = sum_m CE(z_m) + [CE(sum_m w_m z_m) if ``fused_ce``] + ``rank_weight`` * sum_m R_m, where R_m is
    :func:`rank_loss` on the batch's min-max-normalised cumulative losses. Inference
    is argmax of sum_m w_m z_m with w_m computed on the test sample; per-modality columns are z_m.

    Fields (defaults = the official text-image code, ``train_qmf.py``):

    * ``temperature = 10.0``: the hard-coded "/10" of the confidence.
    * ``rank_weight = 1.0``: text-image official; the RGB-D code (``--lamb``) and the MLA repository's
      ResNet path use 0.1.
    * ``fused_ce = True``: the fused cross-entropy term; off in the MLA repository's M3AE path.
    * ``detach_weights = True``: text-image and MLA code; the RGB-D code trains through the weights.
    * ``history_before_rank = True``: the current batch's losses enter the history before the rank loss
      (text-image and MLA code); ``False`` is the RGB-D order.

    The history lives in the model (``loss_history``) and is updated only by ``loss``, i.e. in training.
    Missing modalities are not masked: a zero-filled modality is meant to get low
    confidence and so a small fusion weight.
    """

    temperature: float = 10.0
    rank_weight: float = 1.0
    fused_ce: bool = True
    detach_weights: bool = True
    history_before_rank: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "temperature")
        check_at_least(self, 0, "rank_weight")

    def build(self, description: DataDescription) -> nn.Module:
        return QMFNet(description)

    def confidences(self, logits: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [energy_confidence(z, self.temperature) for z in logits]

    def rank_losses(self, model: QMFNet, index: torch.Tensor, confidences: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum(rank_loss(w, normalise_history(model.loss_history[m])[index]) for m, w in enumerate(confidences))

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        by_name = model(batch.inputs)
        logits = list(by_name.values())
        confidences = self.confidences(logits)
        per_sample = [F.cross_entropy(z, batch.label, reduction="none") for z in logits]
        if self.history_before_rank:
            model.record_losses(batch.index, per_sample)
        ranking = self.rank_losses(model, batch.index, confidences)
        if not self.history_before_rank:
            model.record_losses(batch.index, per_sample)
        total = sum(ce.mean() for ce in per_sample) + self.rank_weight * ranking
        if self.fused_ce:
            fused = fuse_by_confidence(logits, confidences, detach=self.detach_weights)
            total = total + F.cross_entropy(fused, batch.label)
        extras = {
            "unimodal_logits": {name: z.detach() for name, z in by_name.items()},
            "confidences": {name: w.detach() for name, w in zip(by_name, confidences)},
        }
        return LossOut(total, extras)

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        logits = model(batch.inputs)
        fused = fuse_by_confidence(list(logits.values()), self.confidences(list(logits.values())))
        return Prediction(fused, logits)

    #: rank weight log-uniform [0.01, 1], the confidence scale, and the two code variants.
    search_ranges: ClassVar[SearchRanges] = {
        "rank_weight": LogUniform(0.01, 1.0),
        "temperature": Choice(1.0, 5.0, 10.0, 20.0),
        "fused_ce": Choice(True, False),
        "detach_weights": Choice(True, False),
    }
