"""MBSD: unimodal heads with confidence-weighted agreement terms between modalities, as BalanceBenchmark implements it.

Source: GeWu-Lab/BalanceBenchmark ``balancemm/trainer/MBSD_trainer.py`` (``training_step``), listed among the
"objective" methods of BalanceBenchmark (Xu, Cui, Huang, Wang and Hu, "BalanceBenchmark: A Survey for Multimodal
Imbalance Learning", arXiv 2502.10816). No separate paper or official repository for MBSD was found here, so the
trainer is the only reference and every formula below is that trainer's.

Each step, with z the fused logits of a concat head, z_m = W_m h_m + b/M its slices, p_m = softmax(z_m) and
p_m,i = p_m(x_i)[y_i] the true-class probability of sample i:

* L = CE(z, y) + sum_m CE(z_m, y) + L_RS + L_KL, and for every pair (a, b) of modalities
* w_i = |p_a,i - p_b,i| when modality a or b predicts sample i correctly (argmax), else 0 (the confidence gap);
* RS_i = (1/C) sum_c (u_a,i,c - u_b,i,c)^2 (a squared difference of the two predictions);
* KL_i = pw_i (log pw_i - ps_i) with ps_i = max(p_a,i, p_b,i), pw_i = min(p_a,i, p_b,i): the trainer's
  ``F.kl_div(ps, pw)``, whose first argument torch reads as a *log*-probability;
* L_RS = (1/B) sum_i w_i RS_i and L_KL = (1/B) sum_i w_i KL_i, averaged over the pairs (one pair for two
  modalities; the trainer's mean of three for three).

Gradients flow through w, ps and pw (the trainer builds them by item assignment into fresh tensors, which keeps
the graph). Flags where the trainer is inconsistent or unusual (default = the trainer):

* ``rs_input = "released"``: u = the logits z_m with two modalities and the probabilities p_m with three, as the
  trainer's two branches do; ``"logits"`` or ``"probabilities"`` use one kind for every count.
* ``kl = "released"``: the term above; ``"log"`` passes log ps, giving the Bernoulli-style
  pw (log pw - log ps), a proper log-ratio that is 0 when the two confidences agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import MethodConfig, check_epoch_window
from bench.nn import SlicedFusionNet, sliced_prediction
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext

__all__ = ["MBSD", "agreement_terms", "confidence_gap_weights"]


# --------------------------------------------------------------------------------------------------
# The math, as pure functions (pinned by tests/test_parity_mbsd.py)


def confidence_gap_weights(logits_a: torch.Tensor, logits_b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """w_i = |p_a,i - p_b,i| where either modality's argmax is the label, else 0. Shape (B,)."""
    rows = labels.unsqueeze(1)
    pa = logits_a.softmax(dim=1).gather(1, rows).squeeze(1)
    pb = logits_b.softmax(dim=1).gather(1, rows).squeeze(1)
    correct = (logits_a.argmax(dim=1) == labels) | (logits_b.argmax(dim=1) == labels)
    return torch.where(correct, (pa - pb).abs(), torch.zeros_like(pa))


def agreement_terms(
    logits_a: torch.Tensor, logits_b: torch.Tensor, labels: torch.Tensor, *, rs_on: str, kl: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_RS, L_KL) of one modality pair: (1/B) sum_i w_i RS_i and (1/B) sum_i w_i KL_i (module docstring).

    ``rs_on``: ``"logits"`` or ``"probabilities"``; ``kl``: ``"released"`` or ``"log"``."""
    rows = labels.unsqueeze(1)
    prob_a, prob_b = logits_a.softmax(dim=1), logits_b.softmax(dim=1)
    pa, pb = prob_a.gather(1, rows).squeeze(1), prob_b.gather(1, rows).squeeze(1)
    w = confidence_gap_weights(logits_a, logits_b, labels)
    ua, ub = (logits_a, logits_b) if rs_on == "logits" else (prob_a, prob_b)
    rs = ((ua - ub) ** 2).sum(dim=1) / logits_a.shape[1]
    ps, pw = torch.maximum(pa, pb), torch.minimum(pa, pb)
    kl_terms = F.kl_div(ps if kl == "released" else ps.log(), pw, reduction="none")
    batch = logits_a.shape[0]
    return (w * rs).sum() / batch, (w * kl_terms).sum() / batch


# --------------------------------------------------------------------------------------------------
# Method


@dataclass(frozen=True)
class MBSD(MethodConfig):
    """MBSD: fused + unimodal cross-entropies plus confidence-gap-weighted RS and KL terms between modality pairs.

    Fields:

    * ``modulation_start = 0``, ``modulation_end = 80``: inclusive epoch window of the unimodal and agreement
      terms (BalanceBenchmark's config); outside it the loss is the fused cross-entropy alone.
    * ``rs_input``, ``kl``: see the module docstring.

    Inference: the fused logits; per-modality columns: the concat head's slices, the same logits the unimodal
    cross-entropies train. Missing modalities are not handled: zero-filled inputs go through their encoder.
    """

    modulation_start: int = 0
    modulation_end: int = 80
    rs_input: Literal["released", "logits", "probabilities"] = "released"
    kl: Literal["released", "log"] = "released"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_epoch_window(self.modulation_start, self.modulation_end)

    def build(self, description: DataDescription) -> nn.Module:
        return SlicedFusionNet(description, "concat")

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits, features = model(batch.inputs)
        fused = F.cross_entropy(logits, batch.label)
        if not self.modulation_start <= ctx.epoch <= self.modulation_end:
            return LossOut(fused)
        sliced = model.head.sliced(features)
        unimodal = sum(F.cross_entropy(z, batch.label) for z in sliced.values())
        rs_on = self.rs_input
        if rs_on == "released":
            rs_on = "logits" if len(sliced) == 2 else "probabilities"
        pairs = [
            agreement_terms(sliced[a], sliced[b], batch.label, rs_on=rs_on, kl=self.kl)
            for a, b in combinations(sliced, 2)
        ]
        rs = sum(p[0] for p in pairs) / len(pairs)
        kl = sum(p[1] for p in pairs) / len(pairs)
        return LossOut(fused + unimodal + rs + kl, {"rs": rs.detach(), "kl": kl.detach()})

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        return sliced_prediction(model, batch.inputs)

    # The trainer has no loss weights to tune: lr and weight decay only (the flags are variants, not knobs).
