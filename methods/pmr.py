"""PMR: Prototypical Modal Rebalance (Fan, Xu, Wang, Wang, Guo, CVPR 2023).

Joint late fusion plus, per modality, a non-parametric prototype classifier: the logits of a sample are
minus the Euclidean distances of its encoder features to the class prototypes (class means of the
training features). The modalities' batch scores on these classifiers give the imbalance ratio; the
prototypical cross-entropy (PCE) of every slower modality is added to the loss with a coefficient that
grows with its lag, and in the first epochs the dominant modality's prototype entropy is maximised
(prototypical entropy regularisation, PER) to keep it from converging prematurely. References:
``fanyunfeng-bit/Modal-Imbalance-PMR`` ``main_Prototype_grad.py`` (``EU_dist``, ``train_epoch``,
``calculate_prototype``) and GeWu-Lab/BalanceBenchmark ``balancemm/trainer/PMR_trainer.py``.

Choices and differences from the code bases:

* ``coefficient="proportional"`` (default): the PCE weight of the slower modality is alpha * clip(rho - 1, 0,
  1), and PER is on (``mu``, ``entropy_epochs``). This is the two-modality rule of *earlier* commits of
  BalanceBenchmark's ``PMR_trainer.py``: the clipped coefficient from its first version (8590121, 2024-04-26)
  to 01458a1 (2024-11-26), PER with weight mu * (that clipped lag) on the dominant modality from 548ede7
  (2024-10-11; the first 16 epochs, from 0cea99c while ``epoch <= modulation_starts + norm_epoch``, ``mu``
  0.01, ``norm_epoch`` 10, i.e. 11 epochs; here ``entropy_epochs`` epochs). It is *not* what BalanceBenchmark
  runs today: from 59c3446 (2024-11-28) to its current code (39ed569) two modalities use the released rule
  below without PER (``mu`` and ``norm_epoch`` were first left unused, then removed), and more than two add
  no prototype loss at all (OGM-GE-style gradient scaling 1 - tanh(eta * ratio) with noise instead).
* ``coefficient="step"`` is the released code's coefficient: alpha for the slower modality whenever the
  ratio differs from 1, whatever its size, 0 when it is exactly 1. The released code (and BalanceBenchmark's
  current code) has no PER term, so the released method is ``coefficient="step"`` *with* ``mu=0``; with the
  default ``mu = 0.01`` the step rule also switches PER on (weight mu whenever the ratio differs from 1).
* Prototypes are recomputed before every epoch (before the first from the initial model) from the whole
  training split, in eval mode, and mixed with the previous ones: c <- (1 - momentum) c_new + momentum
  c_old. The released code averages only the first tenth of the shuffled training batches (a cost
  shortcut; a class absent from them gives NaN) and, on AVE and CG-MNIST, the validation or test split.
  Only samples whose modality is present enter that modality's prototypes; a class with no such sample
  keeps its previous prototype.
* For M > 2 modalities the ratio of modality m is rho_m = s_max / s_m against the best-scoring modality;
  for two it is the paper's s_a / s_v for the slower one. PER acts on the best-scoring modality with
  weight mu * f(s_max / s_min - 1). The entropy is a batch mean (BalanceBenchmark sums over the batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import Choice, LogUniform, MethodConfig, SearchRanges, check_at_least, check_epoch_window
from bench.nn import SlicedFusionNet, sliced_prediction
from bench.protocol import Batch, DataDescription, EpochContext, LossOut, Prediction, StepContext

__all__ = [
    "PMR",
    "PMRNet",
    "class_means",
    "imbalance_coefficients",
    "momentum_update",
    "prototype_entropy",
    "prototype_logits",
    "prototype_scores",
]


# --------------------------------------------------------------------------------------------------
# The math, as pure functions (pinned by tests/test_parity_pmr.py)


def prototype_logits(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """-||h_i - c_k||_2, shape (B, C): the released ``-EU_dist`` (a distance, not its square).

    The squared distance is clamped away from 0 before the square root, so a feature sitting exactly on
    its prototype gets a zero gradient instead of NaN.
    """
    squared = (features.unsqueeze(1) - prototypes.unsqueeze(0)).pow(2).sum(-1)
    return -squared.clamp_min(torch.finfo(squared.dtype).tiny).sqrt()


def prototype_scores(logits: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """s_m = sum_i softmax(-d(h_m,i, c_m))[y_i], a batch sum as released. Shape (M,)."""
    rows = labels.unsqueeze(1)
    return torch.stack([z.softmax(dim=1).gather(1, rows).sum() for z in logits])


def _lag(ratio: torch.Tensor, rule: str) -> torch.Tensor:
    """f(rho - 1): clip(rho - 1, 0, 1) for ``proportional``, 1[rho > 1] for ``step``."""
    if rule == "proportional":
        return torch.clamp(ratio - 1, 0.0, 1.0)
    if rule == "step":
        return (ratio > 1).to(ratio.dtype)
    raise ValueError(f"unknown PMR coefficient rule {rule!r}; use 'proportional' or 'step'")


def imbalance_coefficients(scores: torch.Tensor, alpha: float, rule: str) -> torch.Tensor:
    """PCE weight of each modality: alpha * f(s_max / s_m - 1); 0 for the best-scoring modality."""
    return alpha * _lag(scores.max() / scores, rule)


def entropy_weight(scores: torch.Tensor, mu: float, rule: str) -> float:
    """PER weight on the best-scoring modality: mu * f(s_max / s_min - 1) (0 when balanced)."""
    return float(mu * _lag(scores.max() / scores.min(), rule))


def prototype_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Batch mean of the entropy of softmax(logits) over classes."""
    return -(logits.softmax(dim=1) * logits.log_softmax(dim=1)).sum(dim=1).mean()


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-class feature sums (C, d), per-class counts (C,)); their ratio is the class mean."""
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).to(features.dtype)
    return sums, counts


def momentum_update(old: torch.Tensor, new: torch.Tensor, momentum: float, seen: torch.Tensor) -> torch.Tensor:
    """(1 - momentum) new + momentum old for classes ``seen`` this time; unseen classes keep ``old``."""
    mixed = (1 - momentum) * new + momentum * old
    return torch.where(seen.unsqueeze(1), mixed, old)


# --------------------------------------------------------------------------------------------------
# Model and method


class PMRNet(SlicedFusionNet):
    """Late fusion plus one prototype matrix (C, d_m) per modality, in the dataset's modality order, and a
    flag saying whether they have been computed (buffers, saved with the weights)."""

    def __init__(self, description: DataDescription, fusion: str) -> None:
        super().__init__(description, fusion)
        for m, encoder in enumerate(self.encoders.values()):
            self.register_buffer(f"prototypes_{m}", torch.zeros(description.num_classes, encoder.out_dim))
        self.register_buffer("prototypes_ready", torch.zeros((), dtype=torch.bool))

    def prototypes(self) -> list[torch.Tensor]:
        return [getattr(self, f"prototypes_{m}") for m in range(len(self.encoders))]


@dataclass(frozen=True)
class PMR(MethodConfig):
    """PMR: late fusion + prototypical cross-entropy on the slower modalities + early entropy regularisation.

    Before each epoch (``start_epoch``): prototypes from the training split. Each step: z, h_m = model(x);
    p_m = :func:`prototype_logits` (h_m, c_m); s_m = :func:`prototype_scores`; inside the window
    L = CE(z) + sum_m :func:`imbalance_coefficients`_m CE(p_m) - [during the first ``entropy_epochs`` of the
    window] mu f(s_max / s_min - 1) H(p_dominant), else L = CE(z). Gradients reach the encoders, never the
    prototypes. Inference: the fused logits; per-modality columns by slicing the head, as in late fusion.

    Fields:

    * ``alpha = 1.0``: the released ``--alpha`` default (BalanceBenchmark's ``configs/trainer_config.yaml``: 0.6).
    * ``momentum = 0.2``: the released ``--momentum_coef`` (BalanceBenchmark: 0.2, 0.5 in its current config).
    * ``mu = 0.01``, ``entropy_epochs = 10``: PER weight and duration (``mu``, ``norm_epoch`` of the
      BalanceBenchmark commits of October-November 2024; the released code has no PER: ``mu = 0``).
    * ``modulation_start = 0``, ``modulation_end = 100``: inclusive epoch window (released defaults).
    * ``coefficient = "proportional"``: see the module docstring; ``"step"`` with ``mu = 0`` is the released
      method.
    * ``fusion = "concat"``: the released default ``--fusion_method``.
    """

    alpha: float = 1.0
    momentum: float = 0.2
    mu: float = 0.01
    entropy_epochs: int = 10
    modulation_start: int = 0
    modulation_end: int = 100
    coefficient: Literal["proportional", "step"] = "proportional"
    fusion: Literal["concat", "sum"] = "concat"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 0, "alpha")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got momentum={self.momentum}")
        check_at_least(self, 0, "mu", "entropy_epochs")
        check_epoch_window(self.modulation_start, self.modulation_end)

    def build(self, description: DataDescription) -> nn.Module:
        return PMRNet(description, self.fusion)

    def start_epoch(self, model: nn.Module, epoch: EpochContext) -> None:
        """Class means of each modality's training features (present samples only), then the momentum mix."""
        num_classes = model.prototypes_0.shape[0]
        sums = [torch.zeros_like(c) for c in model.prototypes()]
        counts = [torch.zeros(num_classes, device=c.device) for c in model.prototypes()]
        for batch in epoch.batches("train"):
            _, features = model(batch.inputs)
            for m, h in enumerate(features.values()):
                present = batch.mask[:, m]
                s, n = class_means(h[present].to(sums[m].dtype), batch.label[present], num_classes)
                sums[m] += s
                counts[m] += n
        ready = bool(model.prototypes_ready)
        for m, old in enumerate(model.prototypes()):
            seen = counts[m] > 0
            new = sums[m] / counts[m].clamp_min(1).unsqueeze(1)
            old.copy_(
                momentum_update(old, new, self.momentum, seen) if ready else torch.where(seen.unsqueeze(1), new, old)
            )
        model.prototypes_ready.fill_(True)

    def in_window(self, epoch: int) -> bool:
        return self.modulation_start <= epoch <= self.modulation_end

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits, features = model(batch.inputs)
        loss = F.cross_entropy(logits, batch.label)
        if not (self.in_window(ctx.epoch) and bool(model.prototypes_ready)):
            return LossOut(loss, {})
        proto_logits = [prototype_logits(h, c) for h, c in zip(features.values(), model.prototypes())]
        scores = prototype_scores([z.detach().float() for z in proto_logits], batch.label)
        coefficients = imbalance_coefficients(scores, self.alpha, self.coefficient).tolist()
        for z, k in zip(proto_logits, coefficients):
            if k > 0:
                loss = loss + k * F.cross_entropy(z, batch.label)
        if ctx.epoch < self.modulation_start + self.entropy_epochs:
            weight = entropy_weight(scores, self.mu, self.coefficient)
            if weight > 0:
                loss = loss - weight * prototype_entropy(proto_logits[int(scores.argmax())])
        names = list(features)
        return LossOut(
            loss,
            {"prototype_scores": dict(zip(names, scores.tolist())), "coefficients": dict(zip(names, coefficients))},
        )

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        return sliced_prediction(model, batch.inputs)

    #: alpha log-uniform [0.05, 2] (0.6 and 1 in the code bases), the prototype momentum and mu.
    search_ranges: ClassVar[SearchRanges] = {
        "alpha": LogUniform(0.05, 2.0),
        "momentum": Choice(0.0, 0.2, 0.5),
        "mu": Choice(0.0, 0.01, 0.1),
    }
