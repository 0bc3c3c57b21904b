"""AGM: Adaptive Gradient Modulation (Li, Li, Hu, Wang et al., "Boosting Multi-modal Model Performance
with Adaptive Gradient Modulation", ICCV 2023).

Joint late fusion whose fused logits are decomposed into Shapley mono-modal responses phi_m computed from
the model's outputs with modalities masked (zero-filled). Each response's gradient is scaled by a
coefficient k_m that compares the modality's current mono-modal cross-entropy with its running average,
relative to the other modalities. References: ``lihong2303/AGM`` ``run/CREMAD_main.py`` (``train``: scores,
ratios, coefficients, running averages), ``model/CREMAD_net.py`` (``GradMod``: masked forward passes,
responses, backward hooks that scale each response's gradient) and ``run/MOSEI_main.py`` (the
mean-of-the-others form of the ratio); BalanceBenchmark ``balancemm/trainer/AGM_trainer.py`` (M modalities).

How this follows the released code, and where re-implementations differ:

* The empty coalition is worth 0 (the released two-modality response 0.5 (f(a,v) - f(0,v) + f(a,0)) and
  BalanceBenchmark's three-modality one), so the responses sum exactly to the fused logits and the loss
  CE(sum_m phi_m) equals late fusion's in value. BalanceBenchmark's M-modality ``newGrad`` drops the
  empty-coalition term altogether, and its ratio exp(M/(M-1) (s_m - mean s)) has the opposite sign.
* Masked passes run with the model in eval mode (BatchNorm running statistics, as ``GradMod.forward``)
  and keep their gradients (the CREMA-D code; BalanceBenchmark computes them under ``no_grad``).
* Outside the modulation window the coefficients are 1. The released code keeps the last coefficients
  (``update_scale`` is only called inside the window).
* ``grad_clip`` (off by default): the released code clips the gradient norm of every parameter to 1 when
  an entry of the fusion head's weight gradient leaves [-1, 1].
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import Choice, LogUniform, MethodConfig, SearchRanges, check_epoch_window, check_positive
from bench.nn import SlicedFusionNet, encode
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext

__all__ = [
    "AGM",
    "AGMNet",
    "agm_coefficients",
    "coalition_logits",
    "mono_scores",
    "running_mean_update",
    "scale_gradient",
    "shapley_responses",
]

#: The released code caps the exponent alpha * (eta - r) at alpha * 10, so exp never overflows.
EXPONENT_CAP = 10.0
#: Probabilities below this count as this in the mono-modal cross-entropy (released ``1e-8`` guard).
MIN_PROBABILITY = 1e-8


# --------------------------------------------------------------------------------------------------
# The math, as pure functions (pinned by tests/test_parity_agm.py)


def shapley_responses(values: Mapping[frozenset, torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """phi_m = sum over S without m of |S|! (M - |S| - 1)! / M! (v(S + m) - v(S)).

    ``values[S]`` is the model's output with exactly the modalities in S present; the empty coalition
    may be absent, in which case it is worth 0 (the released code's convention).
    """
    total = len(names)
    responses = {}
    for name in names:
        others = [n for n in names if n != name]
        phi = 0
        for size in range(total):
            weight = math.factorial(size) * math.factorial(total - size - 1) / math.factorial(total)
            for subset in itertools.combinations(others, size):
                coalition = frozenset(subset)
                phi = phi + weight * (values[coalition | {name}] - values.get(coalition, 0))
        responses[name] = phi
    return responses


def mono_scores(responses: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """s_m = batch mean of -log softmax(phi_m)[y], with probabilities below 1e-8 counted as 1e-8. Shape (M,)."""
    rows = labels.unsqueeze(1)
    return torch.stack([-(z.softmax(dim=1).gather(1, rows).clamp_min(MIN_PROBABILITY).log()).mean() for z in responses])


def _relative(scores: torch.Tensor) -> torch.Tensor:
    """mean of the other modalities' scores minus the modality's own: for two modalities s_other - s_m."""
    count = scores.numel()
    return (scores.sum() - scores) / (count - 1) - scores


def agm_coefficients(scores: torch.Tensor, running: torch.Tensor, alpha: float) -> torch.Tensor:
    """k_m = exp(alpha * min(eta_m - r_m, 10)), r_m = exp(mean_{j != m} s_j - s_m) from this batch,
    eta_m = exp(mean_{j != m} s^_j - s^_m) from the running averages (before this batch enters them).

    A modality whose loss is currently lower than usual relative to the others (r_m > eta_m) is slowed
    down (k_m < 1), one that lags behind its usual level is sped up.
    """
    ratio = torch.exp(_relative(scores))
    target = torch.exp(_relative(running))
    return torch.exp(alpha * torch.clamp(target - ratio, max=EXPONENT_CAP))


def running_mean_update(running: torch.Tensor, scores: torch.Tensor, step: int) -> torch.Tensor:
    """s^ <- s^ (t - 1) / t + s / t at the t-th training step (t from 1): the mean of every batch so far."""
    return running * (step - 1) / step + scores / step


def scale_gradient(x: torch.Tensor, coefficient: float) -> torch.Tensor:
    """x in value, coefficient * (incoming gradient) backward: the released backward hook on a response."""
    return coefficient * x + (1 - coefficient) * x.detach()


# --------------------------------------------------------------------------------------------------
# Model and method


class AGMNet(SlicedFusionNet):
    """Late fusion with AGM's state: the running mean of each modality's mono-modal score and the step
    count (buffers, saved with the weights)."""

    def __init__(self, description: DataDescription, fusion: str) -> None:
        super().__init__(description, fusion)
        self.register_buffer("running_scores", torch.zeros(len(self.encoders)))
        self.register_buffer("score_steps", torch.zeros((), dtype=torch.long))


def coalition_logits(model: SlicedFusionNet, inputs: Mapping[str, torch.Tensor]) -> dict[frozenset, torch.Tensor]:
    """v(S) for every non-empty S: the full coalition from the model as it is, every other one from the
    model in eval mode with the modalities outside S zero-filled (``GradMod.forward``)."""
    names = list(model.encoders)
    full_logits, _ = model(inputs)
    values = {frozenset(names): full_logits}
    was_training = model.training
    model.eval()
    present = encode(model.encoders, inputs)
    absent = encode(model.encoders, {name: torch.zeros_like(x) for name, x in inputs.items()})
    for size in range(1, len(names)):
        for subset in itertools.combinations(names, size):
            features = {name: present[name] if name in subset else absent[name] for name in names}
            values[frozenset(subset)] = model.head(features)
    model.train(was_training)
    return values


@dataclass(frozen=True)
class AGM(MethodConfig):
    """AGM: Shapley mono-modal responses whose gradients are scaled by adaptive coefficients.

    Each step: phi_m from :func:`coalition_logits` and :func:`shapley_responses`; scores s_m
    (:func:`mono_scores`); inside the epoch window, k_m from :func:`agm_coefficients` with the running
    means before this batch, else 1; the running means take this batch in (every step, as released);
    L = CE(sum_m k_m-scaled phi_m, y), so dL/dphi_m is multiplied by k_m on its way to the encoders and
    head. Inference: the full-input fused logits; per-modality columns are the responses phi_m.

    Fields:

    * ``alpha = 1.0``: the released ``--alpha`` default (the README's AV-MNIST command uses 2.5,
      BalanceBenchmark's config 0.1), so it is tuned.
    * ``modulation_start = 0``, ``modulation_end = 20``: inclusive epoch window, the released defaults.
    * ``grad_clip = False``: see the module docstring.
    * ``fusion = "concat"``: the released late-fusion ``ConcatFusion``.

    Cost: 2^M - 1 head evaluations and 3 encoder passes per modality per step. Missing modalities are not
    handled beyond the zero-filling the masked passes also use.
    """

    alpha: float = 1.0
    modulation_start: int = 0
    modulation_end: int = 20
    grad_clip: bool = False
    fusion: Literal["concat", "sum"] = "concat"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "alpha")
        check_epoch_window(self.modulation_start, self.modulation_end)

    def build(self, description: DataDescription) -> nn.Module:
        return AGMNet(description, self.fusion)

    def responses(self, model: AGMNet, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return shapley_responses(coalition_logits(model, inputs), list(model.encoders))

    def coefficients(self, model: AGMNet, scores: torch.Tensor, epoch: int) -> torch.Tensor:
        """k_m for this step, then the running means take this batch's scores in."""
        if self.modulation_start <= epoch <= self.modulation_end:
            coefficients = agm_coefficients(scores, model.running_scores, self.alpha)
        else:
            coefficients = torch.ones_like(scores)
        model.score_steps += 1
        model.running_scores.copy_(running_mean_update(model.running_scores, scores, int(model.score_steps)))
        return coefficients

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        phi = self.responses(model, batch.inputs)
        scores = mono_scores([z.detach().float() for z in phi.values()], batch.label)
        coefficients = self.coefficients(model, scores, ctx.epoch).tolist()
        fused = sum(scale_gradient(z, k) for z, k in zip(phi.values(), coefficients))
        extras = {"coefficients": dict(zip(phi, coefficients)), "scores": dict(zip(phi, scores.tolist()))}
        return LossOut(F.cross_entropy(fused, batch.label), extras)

    @torch.no_grad()
    def after_backward(self, model: nn.Module, out: LossOut, ctx: StepContext) -> None:
        if not self.grad_clip:
            return
        head_grad = _head_weight_grad(model)
        if head_grad is not None and head_grad.abs().max() > 1:
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        logits, _ = model(batch.inputs)
        return Prediction(logits, self.responses(model, batch.inputs))

    #: alpha log-uniform [0.05, 5] (0.1 to 2.5 across released setups) and the window's end.
    search_ranges: ClassVar[SearchRanges] = {
        "alpha": LogUniform(0.05, 5.0),
        "modulation_end": Choice(10, 20, 1000),
    }


def _head_weight_grad(model: nn.Module) -> torch.Tensor | None:
    """The fusion head's weight gradient (concat: one matrix; sum: the per-modality matrices side by side)."""
    weights = [p for name, p in model.head.named_parameters() if name.endswith("weight") and p.grad is not None]
    return torch.cat([w.grad.reshape(-1) for w in weights]) if weights else None
