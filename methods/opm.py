"""OPM: On-the-fly Prediction Modulation (Wei, Hu, Du and Wen, TPAMI 2024, "On-the-fly Modulation for Balanced
Multimodal Learning"; the journal extension of OGM-GE).

Joint late fusion whose *forward pass* is modulated: each step, the discrepancy between the modalities' batch
scores (as in OGM-GE) gives every modality a drop probability q_m, non-zero only for the dominant one; with
probability p_exe the step drops, per sample, each modality's whole feature vector with probability q_m, rescales
the kept features by 1 / (1 - theta) (theta = the expected dropped fraction of the concatenated feature) and
trains the fused head on the samples that kept at least one modality. Evaluation never drops.

References: ``GeWu-Lab/BML_TPAMI2024`` ``code/models/Classifier.py`` (``calcu_q``, ``Modality_drop``,
``Classifier.forward``), ``code/main.py`` (``train``: the warm-up and the sample selection) and
``code/scripts/train_opm.sh`` (``--q_base 0.5 --lam 0.5 --p_exe 0.7``); BalanceBenchmark
``balancemm/trainer/OPM_trainer.py`` (three modalities). The paper's equations were not available here; the
method follows the released code.

Where the two releases differ (flags, default = the official TPAMI code):

* ``modulation_start = 6``: the official ``train`` sets ``warm_up = 1 if epoch <= 5`` and drops nothing during
  epochs 0-5; BalanceBenchmark modulates from epoch 0 (``modulation_start=0``).
* ``q_base = 0.5``: the official run script; ``code/config.py`` and BalanceBenchmark use 0.4.
* Three or more modalities: only BalanceBenchmark has them, with s_m over the *sum* of the others' scores (the
  OGM-GE three-modality ratio); with two this is the official s_1 / s_2. BalanceBenchmark also adds 1e-5 to
  the ratio's denominator and to 1 - theta, which the official code does not (nor this one).

The TPAMI paper's OGM half is ``ogm_ge`` (methods/ogm_ge.py) with nothing to add: the TPAMI ``main.py`` computes the
same gated coefficient 1 - tanh(alpha * relu(rho)) for the leading modality, on 4-D tensors only (``ogm_ge``'s
``param_rule=conv_only``), with the same epochs-0-5 warm-up (``ogm_ge``'s ``modulation_start=6``) and, at an exact
tie of the scores, slows the second modality where OGM-GE's code slows the first (a measure-zero event).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import (
    Choice,
    MethodConfig,
    SearchRanges,
    Uniform,
    check_at_least,
    check_epoch_window,
    check_fraction,
)
from bench.methods.ogm_ge import true_class_scores
from bench.nn import SlicedFusionNet, sliced_prediction
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext

__all__ = ["OPM", "drop_features", "drop_probabilities", "expected_drop_fraction"]


# --------------------------------------------------------------------------------------------------
# The math, as pure functions (pinned by tests/test_parity_opm.py)


def drop_probabilities(scores: torch.Tensor, q_base: float, lam: float) -> torch.Tensor:
    """q_m from the batch scores s_m (OGM-GE's sum of true-class probabilities). Shape (M,).

    r_m = tanh(relu(s_m / sum_{k != m} s_k - 1)); q_m = clip(q_base * (1 + lam * r_m), 0, 1) when r_m > 0, else 0
    (``calcu_q``). Only a modality whose score exceeds the sum of all the others' gets a non-zero q, so at most
    one modality is ever dropped, with probability between q_base and q_base * (1 + lam).
    """
    others = (scores.sum() - scores).clamp_min(torch.finfo(scores.dtype).tiny)
    ratios = torch.tanh(torch.relu(scores / others - 1))
    q = torch.where(ratios > 0, q_base * (1 + lam * ratios), torch.zeros_like(ratios))
    return q.clamp(0.0, 1.0)


def expected_drop_fraction(q: torch.Tensor, dims: torch.Tensor) -> torch.Tensor:
    """theta = sum_m d_m q_m / sum_m d_m: the expected fraction of the concatenated feature that is dropped
    (``Modality_drop.execute_drop``, ``dim_list`` = the feature widths)."""
    return (dims * q).sum() / dims.sum()


def drop_features(features: Mapping[str, torch.Tensor], keep: torch.Tensor, theta: float) -> dict[str, torch.Tensor]:
    """h_m * keep[:, m] / (1 - theta) for every modality (``keep`` is (B, M), 1 = kept). The rescale is a
    constant: gradients are scaled by the same 1 / (1 - theta) (the official ``custom_autograd``)."""
    scale = 1.0 / (1.0 - theta)
    return {name: h * keep[:, m : m + 1].to(h.dtype) * scale for m, (name, h) in enumerate(features.items())}


# --------------------------------------------------------------------------------------------------
# Method


@dataclass(frozen=True)
class OPM(MethodConfig):
    """OPM: drop the dominant modality's features in the forward pass with a probability from its score ratio.

    Each step inside the window: s_m = sum_i softmax(z_m,i)[y_i] from the concat head's slices (W_m h_m + b/M,
    detached), q = :func:`drop_probabilities`; with probability ``p_exe`` a (B, M) keep mask with
    keep[i, m] ~ Bernoulli(1 - q_m) is drawn, the features become :func:`drop_features`, and the loss is the fused
    head's cross-entropy on the samples that kept a modality. Otherwise (and outside the window) it is plain late
    fusion. Only the fused loss is backpropagated (the official ``train`` computes the unimodal losses only to log
    them). Draws use torch's global generator, which the loop seeds with the cell seed.

    Fields:

    * ``q_base = 0.5``, ``lam = 0.5``, ``p_exe = 0.7``: ``train_opm.sh`` (BalanceBenchmark: 0.4, ``alpha`` 0.5, 0.7).
    * ``modulation_start = 6``, ``modulation_end = 80``: inclusive epoch window; the official warm-up is epochs
      0-5, its ``--modulation_ends`` default 80 (BalanceBenchmark: 0 and 80).
    * ``fusion = "concat"``: the official ``ConcatFusion``; ``"sum"`` is the ``SumFusion`` head.

    Missing modalities are not handled: zero-filled inputs go through their encoder and count in the scores.
    """

    q_base: float = 0.5
    lam: float = 0.5
    p_exe: float = 0.7
    modulation_start: int = 6
    modulation_end: int = 80
    fusion: Literal["concat", "sum"] = "concat"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction(self, "q_base")
        check_at_least(self, 0, "lam")
        if not 0 <= self.p_exe <= 1:
            raise ValueError(f"p_exe must be in [0, 1], got p_exe={self.p_exe}")
        if self.q_base * (1 + self.lam) >= 1:
            raise ValueError(
                f"q_base * (1 + lam) must be < 1 (else the dominant modality is always dropped and "
                f"1 - theta can reach 0), got q_base={self.q_base}, lam={self.lam}"
            )
        check_epoch_window(self.modulation_start, self.modulation_end)

    def build(self, description: DataDescription) -> nn.Module:
        return SlicedFusionNet(description, self.fusion)

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits, features = model(batch.inputs)
        if not self.modulation_start <= ctx.epoch <= self.modulation_end:
            return LossOut(F.cross_entropy(logits, batch.label), {"dropped": False})
        with torch.no_grad():
            sliced = model.head.sliced(features)
            scores = true_class_scores([sliced[name] for name in model.encoders], batch.label)
            q = drop_probabilities(scores, self.q_base, self.lam)
        if float(torch.rand(())) >= self.p_exe:  # the official "rand >= 1 - p_exe" executes with probability p_exe
            return LossOut(F.cross_entropy(logits, batch.label), {"dropped": False, "q": q})
        keep = torch.bernoulli((1 - q).expand(len(batch), -1))
        dims = torch.tensor([float(h.shape[1]) for h in features.values()])
        theta = float(expected_drop_fraction(q, dims))
        rows = keep.sum(dim=1) > 0
        cleaned = drop_features(features, keep, theta)
        fused = model.head({name: h[rows] for name, h in cleaned.items()})
        return LossOut(F.cross_entropy(fused, batch.label[rows]), {"dropped": True, "q": q, "keep": keep})

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        return sliced_prediction(model, batch.inputs)

    #: q_base in [0.1, 0.6], lam in [0, 0.6] (so q stays below 1), p_exe in [0.3, 1], and the warm-up.
    search_ranges: ClassVar[SearchRanges] = {
        "q_base": Uniform(0.1, 0.6),
        "lam": Uniform(0.0, 0.6),
        "p_exe": Uniform(0.3, 1.0),
        "modulation_start": Choice(0, 3, 6),
    }
