"""LFM: dynamically learning the modality gap (Yang, Wan, Jiang, Xu, "Facilitating Multimodal Classification
via Dynamically Learning Modality Gap", NeurIPS 2024; official code ``njustkmg/NeurIPS24-LFM``,
``Crema_epoch.py``).

One encoder and Linear classifier per modality; the fused logits are the mean of the per-modality logits.
The loss integrates a supervised and an unsupervised term with weights that move over training:

    L = 2 * (alpha_1(e) * CE(mean_m z_m, y) + alpha_2(e) * mean over modality pairs (i, j) of D(p_i, p_j)),

p_m = softmax(z_m) and D the code's "JS" divergence through the mixture m = (p_i + p_j) / 2 (batch mean;
see ``divergence`` below). The weights are
the official heuristic ("learning-fitted") integration: two degree-5 polynomials of the epoch fitted by the
authors (``getAlpha_Learnable_Fitted``), alpha_1(0) = 0.205 rising and alpha_2 = 1 - alpha_1.

Flags and choices:

* The paper calls the unsupervised term contrastive; the released code computes it from the modalities'
  predicted distributions, and that is what is implemented (we could not check the paper's equations
  against the code). ``divergence = "official"``: the code's ``Alignment``, (KL(m || p) + KL(m || q)) / 2,
  since ``F.kl_div(p.log(), m)`` is KL(m || p); ``"js"``: the Jensen-Shannon divergence
  (KL(p || m) + KL(q || m)) / 2 its name promises.
* ``schedule = "epoch"`` (official) evaluates the polynomials at the epoch index; they were fitted over the
  official 200 epochs (``data/crema.json``). ``"rescaled"`` evaluates them at e * 200 / num_epochs, so a
  shorter budget sweeps the whole fitted curve.
* The learnt integration (``Crema_epoch_learnable.py``, bi-level hyper-gradients on validation batches;
  BalanceBenchmark's ``getAlpha_Learnable`` in ``balancemm/trainer/LFM_trainer.py``) is not implemented: it
  needs validation data, which the harness never hands to a method.
* More than two modalities: the JS term is averaged over all pairs, as BalanceBenchmark does.
* Missing modalities (not in the paper): a sample's fused logits average its present modalities, and a pair's
  JS term averages over the samples where both are present.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import Choice, MethodConfig, SearchRanges
from bench.methods.ume import ensemble
from bench.nn import PerModalityClassifiers
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext

__all__ = ["ALPHA1_COEFFICIENTS", "FITTED_EPOCHS", "LFM", "fitted_weights", "gap_divergence"]

#: ``Crema_epoch.py``, ``getAlpha_Learnable_Fitted``: alpha_1(e) = sum_i c_i e^i (alpha_2 has the complements).
ALPHA1_COEFFICIENTS = (2.04623704e-01, 3.35472727e-03, 1.22989557e-04, -2.92947416e-06, 2.23835486e-08, -5.39717505e-11)
#: The official training length over which the polynomials were fitted (``data/crema.json``, ``epoch_dict``).
FITTED_EPOCHS = 200


def fitted_weights(epoch: float) -> tuple[float, float]:
    """(alpha_1, alpha_2) of the official fitted schedule at ``epoch``; alpha_2 = 1 - alpha_1."""
    alpha1 = sum(c * epoch**i for i, c in enumerate(ALPHA1_COEFFICIENTS))
    return alpha1, 1.0 - alpha1


def gap_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor, kind: str = "official") -> torch.Tensor:
    """The batch-mean divergence between softmax p and softmax q through their mixture m = (p + q) / 2:
    ``"official"``: (KL(m || p) + KL(m || q)) / 2, what ``Crema_epoch.py``'s ``Alignment`` computes
    (``F.kl_div(p.log(), m)`` is KL(m || p)); ``"js"``: the Jensen-Shannon divergence
    (KL(p || m) + KL(q || m)) / 2 that the function is named after."""
    p, q = F.softmax(p_logits.float(), 1), F.softmax(q_logits.float(), 1)
    m = 0.5 * (p + q)
    log_p, log_q, log_m = p.clamp_min(1e-12).log(), q.clamp_min(1e-12).log(), m.clamp_min(1e-12).log()
    if kind == "official":
        per_sample = 0.5 * ((m * (log_m - log_p)).sum(1) + (m * (log_m - log_q)).sum(1))
    else:
        per_sample = 0.5 * ((p * (log_p - log_m)).sum(1) + (q * (log_q - log_m)).sum(1))
    return per_sample.mean()


@dataclass(frozen=True)
class LFM(MethodConfig):
    """LFM: per-modality classifiers, CE on their mean logits plus the JS gap between their predictions,
    weighted by the official fitted schedule. Fields: ``schedule`` = ``"epoch"`` (official) or
    ``"rescaled"``; ``divergence`` = ``"official"`` or ``"js"`` (module docstring)."""

    schedule: Literal["epoch", "rescaled"] = "epoch"
    divergence: Literal["official", "js"] = "official"

    def build(self, description: DataDescription) -> nn.Module:
        return PerModalityClassifiers(description)

    def weights(self, ctx: StepContext) -> tuple[float, float]:
        epoch = ctx.epoch if self.schedule == "epoch" else ctx.epoch * FITTED_EPOCHS / max(1, ctx.num_epochs)
        return fitted_weights(epoch)

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits = model(batch.inputs)
        ce = F.cross_entropy(ensemble(logits, batch.mask, "logits"), batch.label)
        z = list(logits.values())
        terms = []
        for i, j in itertools.combinations(range(len(z)), 2):
            both = batch.mask[:, i] & batch.mask[:, j]
            terms.append(
                gap_divergence(z[i][both], z[j][both], self.divergence)
                if bool(both.any())
                else 0.0 * (z[i].sum() + z[j].sum())
            )
        gap = torch.stack(terms).mean()
        alpha1, alpha2 = self.weights(ctx)
        return LossOut(2 * (alpha1 * ce + alpha2 * gap), {"ce": ce.detach(), "gap": gap.detach(), "alpha1": alpha1})

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        logits = model(batch.inputs)
        return Prediction(ensemble(logits, batch.mask, "logits"), logits)

    search_ranges: ClassVar[SearchRanges] = {
        "schedule": Choice("epoch", "rescaled"),
        "divergence": Choice("official", "js"),
    }
