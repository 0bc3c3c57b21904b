"""MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance (Wei & Hu, ICML 2024).

A fused head and one unimodal head per modality are trained together (L = L_mm + sum_m L_m). Each
modality's encoder receives two gradients, g_mm from the multimodal loss and g_m from its own unimodal
loss. When they conflict (cosine <= 0 over the whole encoder) they are integrated with the Pareto
(MGDA min-norm) weights; otherwise with equal weights. The integrated gradient's magnitude is then
restored and enhanced, tensor by tensor. Reference: ``GeWu-Lab/MMPareto_ICML2024`` ``code/MMPareto.py``
(``train_epoch``) and ``code/min_norm_solvers.py`` (``MinNormSolver._min_norm_element_from2``, the
two-task case of Sener & Koltun, NeurIPS 2018, Alg. 1). Heads are never modulated.

Where the re-implementations differ from the released code (kept as the released code here):

* BalanceBenchmark (``balancemm/trainer/MMPareto_trainer.py``) assigns the min-norm solution to its loop
  variable instead of the weights, so it always uses equal weights, and it backpropagates the unimodal
  losses one after the other without zeroing, so its "multimodal" gradient also holds the unimodal ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import MethodConfig, SearchRanges, Uniform, check_positive
from bench.nn import FusionWithUnimodalHeads
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext

__all__ = ["MMPareto", "integrated_gradient", "min_norm_weights", "pareto_weights", "rescale"]


# --------------------------------------------------------------------------------------------------
# The math, as pure functions (pinned by tests/test_parity_mmpareto.py)


def min_norm_weights(g_multi: torch.Tensor, g_uni: torch.Tensor) -> tuple[float, float]:
    """argmin over a in [0, 1] of ||a g_multi + (1 - a) g_uni||^2, as (a, 1 - a).

    Closed form a = <g_uni - g_multi, g_uni> / ||g_multi - g_uni||^2, clipped to [0, 1] (MGDA's two-task
    solution). The released solver returns 0.999/0.001 instead of 1/0 at the ends; the ends are reached only
    when the gradients do not conflict, where MMPareto uses equal weights anyway.
    """
    diff = g_multi - g_uni
    denominator = float(diff.dot(diff))
    if denominator == 0.0:  # identical gradients: every blend is the same vector
        return 0.5, 0.5
    a = min(max(float((g_uni - g_multi).dot(g_uni)) / denominator, 0.0), 1.0)
    return a, 1.0 - a


def pareto_weights(g_multi: torch.Tensor, g_uni: torch.Tensor) -> tuple[float, float]:
    """Equal weights (1/2, 1/2) when cos(g_multi, g_uni) > 0, the min-norm weights otherwise.

    Both vectors are one modality's whole encoder gradient, flattened (the ``"concat"`` entries of the
    released code).
    """
    if float(F.cosine_similarity(g_multi, g_uni, dim=0)) > 0:
        return 0.5, 0.5
    return min_norm_weights(g_multi, g_uni)


def integrated_gradient(g_multi: torch.Tensor, g_uni: torch.Tensor, weights: tuple[float, float]) -> torch.Tensor:
    """h = 2 (a_mm g_multi + a_m g_uni): with equal weights this is the plain sum g_multi + g_uni."""
    return 2 * (weights[0] * g_multi + weights[1] * g_uni)


def rescale(h: torch.Tensor, g_sum: torch.Tensor, gamma: float) -> torch.Tensor:
    """One parameter tensor's final gradient: gamma * max(1, ||g_sum|| / ||h||) * h.

    ``g_sum`` is the tensor's gradient of the summed loss (g_multi + g_uni), so the integrated direction
    keeps at least the magnitude the uniform sum would have had, enhanced by ``gamma`` (the released
    ``diff = three_norm / new_norm``; ``if diff > 1: diff * new_grad * gamma else new_grad * gamma``).
    A zero ``h`` stays zero.
    """
    h_norm = torch.linalg.vector_norm(h)
    if h_norm == 0:
        return h * gamma
    ratio = torch.linalg.vector_norm(g_sum) / h_norm
    return h * gamma * torch.clamp(ratio, min=1.0)


# --------------------------------------------------------------------------------------------------
# Method


def _flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def _grads(loss: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor]:
    """d loss / d params, zeros where a parameter does not reach the loss."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.detach() for g, p in zip(grads, params)]


@dataclass(frozen=True)
class MMPareto(MethodConfig):
    """MMPareto: multimodal + unimodal losses, Pareto-integrated encoder gradients with enhanced magnitude.

    Each step: z = fused head, z_m = unimodal heads, L = CE(z) + sum_m CE(z_m). For each modality m,
    g_mm = dL_mm/dtheta_m and g_m = dL_m/dtheta_m over every parameter of encoder m (BatchNorm included);
    weights from :func:`pareto_weights`; each encoder tensor's gradient becomes :func:`rescale` of
    :func:`integrated_gradient`. The fused and unimodal heads keep their plain gradients of L. Inference:
    the fused head; the per-modality columns are the unimodal heads.

    Fields:

    * ``gamma = 1.5``: the magnitude enhancement of the released code (``gamma=1.5`` in ``MMPareto.py``,
      ``alpha: 1.5`` in BalanceBenchmark's config); 1.0 keeps the uniform sum's magnitude.
    * ``fusion = "concat"``: the released ``head = nn.Linear(1024, n_classes)`` on concatenated features.

    Missing modalities are not handled: zero-filled inputs go through every head like any other sample.
    """

    gamma: float = 1.5
    fusion: Literal["concat", "sum"] = "concat"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "gamma")

    def build(self, description: DataDescription) -> nn.Module:
        return FusionWithUnimodalHeads(description, self.fusion)

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits, features = model(batch.inputs)
        unimodal = model.unimodal_logits(features)
        loss_multi = F.cross_entropy(logits, batch.label)
        loss_uni = {name: F.cross_entropy(z, batch.label) for name, z in unimodal.items()}
        grads_multi, grads_uni = {}, {}
        for name, encoder in model.encoders.items():
            params = [p for p in encoder.parameters() if p.requires_grad]
            grads_multi[name] = _grads(loss_multi, params)
            grads_uni[name] = _grads(loss_uni[name], params)
        total = loss_multi + sum(loss_uni.values())
        return LossOut(total, {"grads_multi": grads_multi, "grads_uni": grads_uni})

    @torch.no_grad()
    def after_backward(self, model: nn.Module, out: LossOut, ctx: StepContext) -> None:
        for name, encoder in model.encoders.items():
            g_multi, g_uni = out.extras["grads_multi"][name], out.extras["grads_uni"][name]
            weights = pareto_weights(_flat(g_multi), _flat(g_uni))
            params = [p for p in encoder.parameters() if p.requires_grad]
            for p, gm, gu in zip(params, g_multi, g_uni):
                # p.grad is the summed loss's gradient, g_mm + g_m: no other loss reaches encoder m.
                g_sum = p.grad if p.grad is not None else gm + gu
                p.grad = rescale(integrated_gradient(gm, gu, weights), g_sum, self.gamma)

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        logits, features = model(batch.inputs)
        return Prediction(logits, model.unimodal_logits(features))

    #: lr, weight decay and the magnitude factor (1 = no enhancement, up to 2).
    search_ranges: ClassVar[SearchRanges] = {"gamma": Uniform(1.0, 2.0)}
