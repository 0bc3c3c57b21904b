"""ReconBoost (Hua, Xu, Bao, Yang, Huang, "ReconBoost: Boosting Can Achieve Modality Reconcilement", ICML
2024, arXiv 2405.09321; official code ``huacong/ReconBoost``, ``train.py``, ``models/dynamic_net.py``,
``schedule.py``).

One learner per modality, f_m(x_m) = g(h_m(x_m)): its encoder h_m and a head g shared by all modalities
(the official ``common_space``: Linear(d, 256)-ReLU-Linear(256, C)). The model is the ensemble
F(x) = beta * sum_m f_m(x_m), beta a learnt boost rate (initial 1, ``boost_rate``). Training alternates
stages in a fixed modality order (``schedule.py``'s ``fixed_mode``); stage s trains modality m = s mod M:

* boosting, ``epochs_per_stage`` epochs: only learner m (its encoder and the shared head) trains, on the
  per-sample loss (``train.py``)

      l = -(w1 / C) log p_m(y) + (w2 / C) q_{-m}(y) log p_m(y),

  p_m = softmax(f_m), q_{-m} = softmax(F_{-m}) of the ensemble of the *other* learners already in it
  (no gradient). A sample the others already get right counts less: the reconcilement of the paper.
  ``w1 = 5``, ``w2 = 1`` (``--weight1``, ``--weight2``). Before any other learner has joined, the official
  ensemble is a constant c0 of shape (B, 1), whose softmax is 1: then q_{-m}(y) = 1.
* global rectification, ``correct_epochs`` epochs: every learner in the ensemble, the head and beta train
  jointly on CE(F(x), y).

Prediction: argmax F over the learners that have joined (a learner joins at its first boosting epoch) and
are present in the sample; the per-modality columns are each learner's f_m. Defaults: the official CREMA-D
command (README): 4 boosting and 4 rectification epochs per stage.

Differences from the official code:

* One optimizer (the shared fields: SGD, lr, momentum, weight decay, StepLR) for the whole run; the official
  code makes a fresh SGD per stage and per rectification (lr 0.01 each, weight decay 5e-4) and divides
  both learning rates by 10 every 30 stages on CREMA-D. Parameters a phase does not train are frozen for
  it (``requires_grad`` off), so they get no gradient, weight decay or momentum step.
* ``train.py`` adds ``alpha * MSE(softmax(f_m), softmax(f_prev))`` (``--use_ga``) with *both* sides
  detached, which gives no gradient; it is left out, which trains identically.
* When encoders give features of different sizes (not in the paper), each modality gets a Linear
  projection to the smallest size before the shared head.
* Missing modalities (not in the paper): a learner's boosting loss averages over the samples where its
  modality is present, and F sums only the present modalities' learners.
* BalanceBenchmark (``balancemm/trainer/ReconBoost_trainer.py``) runs one boosting and one rectification
  epoch per modality in each of its epochs (``T_epochs: 1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import Choice, MethodConfig, SearchRanges, Uniform, check_at_least
from bench.nn import build_encoders
from bench.protocol import Batch, DataDescription, EpochContext, LossOut, Prediction, StepContext

__all__ = ["ReconBoost", "ReconBoostNet", "boosting_loss", "phase_of"]


# --------------------------------------------------------------------------------------------------
# The math (pinned by tests/test_parity_reconboost.py)


def boosting_loss(
    logits: torch.Tensor, others: torch.Tensor | None, label: torch.Tensor, w1: float, w2: float
) -> torch.Tensor:
    """Per-sample -(w1/C) log p(y) + (w2/C) q(y) log p(y), q = softmax(others) (no gradient), q(y) = 1 when
    no other learner has joined (``others`` None)."""
    num_classes = logits.shape[1]
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, label[:, None]).squeeze(1)
    q = (
        torch.ones_like(log_p)
        if others is None
        else F.softmax(others.detach().float(), 1).gather(1, label[:, None]).squeeze(1)
    )
    return (-w1 * log_p + w2 * q * log_p) / num_classes


def phase_of(epoch: int, num_modalities: int, epochs_per_stage: int, correct_epochs: int) -> tuple[str, int]:
    """("boost", m) or ("correct", m) for an epoch: stage s = epoch // (boost + correct epochs) trains modality
    s mod M, first boosting, then rectifying."""
    length = epochs_per_stage + correct_epochs
    stage, within = divmod(epoch, length)
    return ("boost" if within < epochs_per_stage else "correct"), stage % num_modalities


# --------------------------------------------------------------------------------------------------
# Model and method


class ReconBoostNet(nn.Module):
    """Per-modality encoders, the shared head, the boost rate and which learners have joined."""

    def __init__(self, description: DataDescription, boost_rate: float) -> None:
        super().__init__()
        self.encoders = build_encoders(description)
        dims = {name: enc.out_dim for name, enc in self.encoders.items()}
        common = min(dims.values())
        self.project = nn.ModuleDict(
            {name: (nn.Identity() if d == common else nn.Linear(d, common)) for name, d in dims.items()}
        )
        self.head = nn.Sequential(nn.Linear(common, 256), nn.ReLU(), nn.Linear(256, description.num_classes))
        self.boost_rate = nn.Parameter(torch.tensor(float(boost_rate)))
        self.register_buffer("joined", torch.zeros(len(dims), dtype=torch.bool))

    def learners(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: self.head(self.project[name](enc(inputs[name]))) for name, enc in self.encoders.items()}

    def ensemble(self, logits: Mapping[str, torch.Tensor], mask: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        """beta * sum of the learners in ``members`` ((M,) bool) present in each sample (mask (B, M))."""
        use = (mask & members[None, :]).to(next(iter(logits.values())).dtype)
        total = sum(z * use[:, m : m + 1] for m, z in enumerate(logits.values()))
        return self.boost_rate * total

    def freeze_for(self, phase: str, modality: int) -> None:
        """Boosting trains learner ``modality`` and the head; rectification everything that has joined."""
        for m, encoder in enumerate(self.encoders.values()):
            on = (m == modality) if phase == "boost" else bool(self.joined[m])
            encoder.requires_grad_(on)
            list(self.project.values())[m].requires_grad_(on)
        self.head.requires_grad_(True)
        self.boost_rate.requires_grad_(phase == "correct")


@dataclass(frozen=True)
class ReconBoost(MethodConfig):
    """ReconBoost: per-modality learners on a shared head, trained in alternating boosting stages with a
    reconcilement-weighted loss, each followed by a global rectification of the ensemble.

    Fields: ``epochs_per_stage = 4``, ``correct_epochs = 4``, ``weight1 = 5``, ``weight2 = 1``,
    ``boost_rate = 1`` (the official CREMA-D command and ``train.py`` defaults).
    """

    epochs_per_stage: int = 4
    correct_epochs: int = 4
    weight1: float = 5.0
    weight2: float = 1.0
    boost_rate: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 1, "epochs_per_stage")
        check_at_least(self, 0, "correct_epochs")
        if self.weight1 < 0 or self.weight2 < 0:
            raise ValueError(f"weight1 and weight2 must be >= 0, got weight1={self.weight1}, weight2={self.weight2}")

    def build(self, description: DataDescription) -> nn.Module:
        return ReconBoostNet(description, self.boost_rate)

    def phase(self, epoch: int, num_modalities: int) -> tuple[str, int]:
        return phase_of(epoch, num_modalities, self.epochs_per_stage, self.correct_epochs)

    def start_epoch(self, model: nn.Module, epoch: EpochContext) -> None:
        kind, m = self.phase(epoch.epoch, len(model.encoders))
        if kind == "boost":
            model.joined[m] = True

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        kind, m = self.phase(ctx.epoch, len(model.encoders))
        if not bool(model.joined[m]):  # the loop's start_epoch marks it; direct callers get the same state
            model.joined[m] = True
        model.freeze_for(kind, m)
        if kind == "correct":
            logits = model.learners(batch.inputs)
            fused = model.ensemble(logits, batch.mask, model.joined)
            return LossOut(F.cross_entropy(fused, batch.label), {"phase": kind, "modality": m})
        name = list(model.encoders)[m]
        learner = model.head(model.project[name](model.encoders[name](batch.inputs[name])))
        others_joined = model.joined.clone()
        others_joined[m] = False
        others = None
        if bool(others_joined.any()):
            with torch.no_grad():
                logits = model.learners(batch.inputs)
                others = model.ensemble(logits, batch.mask, others_joined)
        per_sample = boosting_loss(learner, others, batch.label, self.weight1, self.weight2)
        present = batch.mask[:, m]
        loss = per_sample[present].mean() if bool(present.any()) else 0.0 * per_sample.sum()
        return LossOut(loss, {"phase": kind, "modality": m})

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        logits = model.learners(batch.inputs)
        members = model.joined if bool(model.joined.any()) else torch.ones_like(model.joined)
        return Prediction(model.ensemble(logits, batch.mask, members), logits)

    #: lr, weight decay, the stage lengths and the two loss weights.
    search_ranges: ClassVar[SearchRanges] = {
        "epochs_per_stage": Choice(1, 2, 4),
        "correct_epochs": Choice(1, 2, 4),
        "weight1": Uniform(1.0, 10.0),
        "weight2": Uniform(0.0, 5.0),
    }
