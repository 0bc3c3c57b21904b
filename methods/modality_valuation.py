"""Sample-level modality valuation (Wei, Feng, Wang, Hu, "Enhancing Multimodal Cooperation via Sample-level
Modality Valuation", CVPR 2024, arXiv 2309.06255; official code ``GeWu-Lab/Valuate-and-Enhance-Multimodal-
Cooperation``, ``code/sample_level.py`` and ``code/datasets/dataloader.py``).

A late-fusion model is trained with one cross-entropy on the fused logits. After ``warmup`` epochs, before
every epoch, each modality's contribution to each training sample is valued with the Shapley value of the
model's correctness:

    phi_m(x) = sum over S subset of M \\ {m} of |S|! (n - |S| - 1)! / n! * (v(S u {m}) - v(S)),

where v(S) scores the prediction of the fused head fed only the features of the modalities in S (the
others' features zeroed, the official ``exec_drop``): v(S) = |S| when that prediction is right and 0
otherwise, v(empty) = 0 (``sample_level.py`` scores the full model 2 and a single modality 1 on its two
modalities; |S| is that rule for any number of modalities). With two modalities phi_a = (v_a + v_ab - v_b) / 2.

The epoch then trains on the whole training split *plus* copies of low-contribution (sample, modality)
pairs, each copy keeping only that modality (the others dropped, as the official ``drop`` flag does):
1 copy when 0.4 < phi < 1, 2 when -0.1 < phi < 0.4, 3 when phi < -0.1, none otherwise (the thresholds of
``dataloader.py``, ``AV_KS_Dataset_sample_level``). The loop's ``resample`` hook (bench/protocol.py) hands
the epoch its rows and kept modalities.

Flags and choices:

* ``value = "size"`` is the official v(S) = |S| * correct; ``"correct"`` is BalanceBenchmark's v(S) = correct
  (``GeWu-Lab/BalanceBenchmark`` ``balancemm/evaluation/modalitys.py``, ``Calculate_Shapley_Sample``), which
  generalises the method to three modalities with the same thresholds.
* ``warmup = 5``: the official default (``--warmup``); valuation starts with epoch ``warmup``, from the
  model trained for ``warmup`` epochs (the official code values at the end of epoch ``warmup - 1``).
* The optimiser fields are the shared defaults of every method here, not the official Adam at 5e-5.
* Missing modalities (not in the paper): an absent modality's features are zeroed like a dropped one's, in
  training and at test time, and a modality absent from a sample is never copied for it.
* The official code also has a modality-level variant (``code/modality_level.py``: a random part of the
  training set valued, the whole set resampled by the modalities' gap); it is not implemented here.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import IntRange, MethodConfig, SearchRanges, check_at_least
from bench.nn import SlicedFusionNet
from bench.protocol import Batch, DataDescription, EpochContext, LossOut, Prediction, StepContext

__all__ = ["ModalityValuation", "copies_for", "resample_plan", "shapley_values", "subset_logits"]


# --------------------------------------------------------------------------------------------------
# The math (pinned by tests/test_parity_modality_valuation.py)


def shapley_values(
    correct: dict[tuple[int, ...], torch.Tensor], num_modalities: int, value: str = "size"
) -> torch.Tensor:
    """(N, M) Shapley values from ``correct[S]`` ((N,) bool: the prediction from the modalities in S is right)
    for every non-empty subset S (sorted tuples of modality positions); v(S) = |S| * correct ("size") or
    correct ("correct"), v(empty) = 0."""
    n = num_modalities
    some = next(iter(correct.values()))

    def v(subset: tuple[int, ...]) -> torch.Tensor:
        if not subset:
            return torch.zeros(some.shape, dtype=torch.float64, device=some.device)
        scale = float(len(subset)) if value == "size" else 1.0
        return scale * correct[subset].to(torch.float64)

    phi = torch.zeros((*some.shape, n), dtype=torch.float64, device=some.device)
    for m in range(n):
        others = [k for k in range(n) if k != m]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in itertools.combinations(others, size):
                phi[:, m] += weight * (v(tuple(sorted((*subset, m)))) - v(subset))
    return phi


def copies_for(phi: torch.Tensor) -> torch.Tensor:
    """Copies of a (sample, modality) pair by its value: 1 in (0.4, 1), 2 in (-0.1, 0.4), 3 below -0.1, else 0."""
    copies = torch.zeros(phi.shape, dtype=torch.int64, device=phi.device)
    copies[(phi > 0.4) & (phi < 1)] = 1
    copies[(phi > -0.1) & (phi < 0.4)] = 2
    copies[phi < -0.1] = 3
    return copies


def resample_plan(phi: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, keep) for the loop: every training row once with its modalities, then, sample by sample and
    modality by modality, ``copies_for(phi)`` copies keeping only that modality (none where it is absent)."""
    n, m = phi.shape
    copies = copies_for(phi) * present.to(torch.int64)
    rows = [torch.arange(n)]
    keep = [torch.ones(n, m, dtype=torch.bool)]
    flat = copies.cpu().reshape(-1)
    sample = torch.arange(n).repeat_interleave(m).repeat_interleave(flat)
    modality = torch.arange(m).repeat(n).repeat_interleave(flat)
    rows.append(sample)
    keep.append(F.one_hot(modality, m).bool())
    return torch.cat(rows), torch.cat(keep)


def subset_logits(model: SlicedFusionNet, features: dict[str, torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
    """Fused logits with the features of the modalities not kept ((B, M) bool) set to zero (``exec_drop``)."""
    kept = {name: h * keep[:, m : m + 1].to(h.dtype) for m, (name, h) in enumerate(features.items())}
    return model.head(kept)


# --------------------------------------------------------------------------------------------------
# The method


@dataclass(frozen=True)
class ModalityValuation(MethodConfig):
    """Modality valuation: late fusion trained on the training split plus single-modality copies of each
    sample's low-Shapley-value modalities, re-valued before every epoch after ``warmup``.

    Fields: ``warmup = 5`` (official), ``value`` = ``"size"`` (official) or ``"correct"`` (BalanceBenchmark),
    ``fusion = "concat"`` (the official model). Inference: the fused head; per-modality columns slice it.
    """

    warmup: int = 5
    value: Literal["size", "correct"] = "size"
    fusion: Literal["concat", "sum"] = "concat"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 0, "warmup")

    def build(self, description: DataDescription) -> nn.Module:
        return SlicedFusionNet(description, self.fusion)

    def _forward(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _, features = model(batch.inputs)
        return subset_logits(model, features, batch.mask), features

    def valuate(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """(B, M) Shapley values of the batch's samples (eval mode, no gradients)."""
        _, features = model(batch.inputs)
        n = len(features)
        correct = {}
        for size in range(1, n + 1):
            for subset in itertools.combinations(range(n), size):
                keep = torch.zeros(len(batch), n, dtype=torch.bool, device=batch.mask.device)
                keep[:, list(subset)] = True
                correct[subset] = subset_logits(model, features, keep & batch.mask).argmax(1) == batch.label
        return shapley_values(correct, n, self.value)

    def resample(self, model: nn.Module, epoch: EpochContext) -> tuple[torch.Tensor, torch.Tensor] | None:
        if epoch.epoch < self.warmup:
            return None
        phi, present = [], []
        for batch in epoch.batches("train"):
            phi.append(self.valuate(model, batch).cpu())
            present.append(batch.mask.cpu())
        return resample_plan(torch.cat(phi), torch.cat(present))

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits, _ = self._forward(model, batch)
        return LossOut(F.cross_entropy(logits, batch.label))

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        logits, features = self._forward(model, batch)
        kept = {name: h * batch.mask[:, m : m + 1].to(h.dtype) for m, (name, h) in enumerate(features.items())}
        return Prediction(logits, model.head.sliced(kept))

    #: lr, weight decay and the warm-up length.
    search_ranges: ClassVar[SearchRanges] = {"warmup": IntRange(1, 10)}
