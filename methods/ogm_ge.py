"""OGM-GE: On-the-fly Gradient Modulation with Generalization Enhancement (Peng et al., CVPR 2022).

Joint late fusion trained with one cross-entropy on the fused logits; after ``backward()`` the encoder
gradients of the modality that currently dominates are scaled down, and Gaussian noise with the
gradient's own standard deviation is added to every modulated encoder tensor.
References: ``GeWu-Lab/OGM-GE_CVPR2022`` ``main.py`` (two modalities) and the MLA repository's
``main.py`` (three modalities, IEMOCAP).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import Choice, LogUniform, MethodConfig, SearchRanges, check_epoch_window, check_positive
from bench.nn import SlicedFusionNet, sliced_prediction
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext
from bench.registry import variant

__all__ = [
    "OGM",
    "OGMGE",
    "discrepancy_ratios",
    "modulate_gradient",
    "modulated_parameters",
    "ogm_coefficients",
    "true_class_scores",
]

#: Added to the noise std so a zero gradient still gets (tiny) noise, as in OGM-GE ``main.py``.
NOISE_STD_EPS = 1e-8


# --------------------------------------------------------------------------------------------------
# The math, as pure functions (pinned by tests/test_parity_ogm.py)


def true_class_scores(logits: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """s_m = sum_i softmax(z_m,i)[y_i]: a batch *sum*, not a mean. Shape (M,)."""
    rows = labels.unsqueeze(1)
    return torch.stack([z.softmax(dim=1).gather(1, rows).sum() for z in logits])


def discrepancy_ratios(scores: torch.Tensor) -> torch.Tensor:
    """rho_m = s_m / sum of the other modalities' scores.

    For two modalities this is rho_v = s_v / s_a and rho_a = 1 / rho_v (OGM-GE ``main.py``); for three it
    is the MLA repository's s_v / (s_a + s_t) etc. The clamp only guards an all-underflow
    batch; softmax probabilities are otherwise strictly positive.
    """
    others = (scores.sum() - scores).clamp_min(torch.finfo(scores.dtype).tiny)
    return scores / others


def _suppressed_modality(ratios: torch.Tensor) -> int:
    """Which modality the official cascade slows down.

    MLA ``main.py`` (3 modalities): if rho_2 > 1 the second, elif rho_3 > 1 the third, else the first, even
    when rho_1 <= 1. With two modalities this is OGM-GE's "rho_v > 1 -> visual, else audio", so at rho = 1
    exactly the first modality is suppressed. For M > 3 the cascade continues through modalities 2..M in
    dataset order before falling back to the first; since rho_m > 1 means s_m exceeds the sum of all the
    others, at most one modality can qualify, so the checking order never matters except for the fallback.
    """
    for m in range(1, len(ratios)):
        if ratios[m] > 1:
            return m
    return 0


def ogm_coefficients(scores: torch.Tensor, alpha: float, rule: str = "official") -> torch.Tensor:
    """Per-modality gradient coefficients k_m from the batch scores s_m. Shape (M,).

    ``official``: 1 - tanh(alpha * rho) for the one modality the cascade suppresses, 1 for the others
    (OGM-GE ``main.py`` since commit a974f3c: ``1 - tanh(alpha * relu(ratio))`` inside ``if ratio > 1``).
    The coefficient jumps from 1 to 1 - tanh(alpha) as rho crosses 1.
    ``paper``: 1 - tanh(alpha * relu(rho_m - 1)) for every modality (the repository's March 2022 form);
    smooth at rho = 1, and 1 for every modality whose score does not exceed the others'.
    """
    ratios = discrepancy_ratios(scores)
    if rule == "paper":
        return 1 - torch.tanh(alpha * torch.relu(ratios - 1))
    if rule != "official":
        raise ValueError(f"unknown OGM coefficient rule {rule!r}; use 'official' or 'paper'")
    coefficients = torch.ones_like(ratios)
    m = _suppressed_modality(ratios)
    coefficients[m] = 1 - torch.tanh(alpha * ratios[m])
    return coefficients


def modulate_gradient(grad: torch.Tensor, coefficient: float, noise: bool) -> torch.Tensor:
    """k * g (OGM), plus N(0, (std(g) + 1e-8)^2) noise per element (GE).

    The std is that of the *unmodulated* gradient over the whole tensor (OGM-GE ``main.py``), so the noise
    restores some of the magnitude the scaling took away. Drawn from torch's global generator, which the
    loop seeds with the cell seed, so a run is reproducible.

    The noise is drawn into a *contiguous* tensor of the gradient's shape, as the official
    ``torch.zeros_like(parms.grad).normal_(0, std)`` does on its (contiguous) model: element [o, i, h, w] gets
    the same draw whatever the gradient's memory format. ``randn_like`` of a channels-last gradient (bench's
    ResNet-18s) would instead take torch's element-by-element sampler, which gives other values and is about
    8x slower (the draws were 17 % of a bf16 CREMA-D epoch; BENCHMARKS.md, figure 5).
    """
    scaled = grad * coefficient
    if not noise:
        return scaled
    std = grad.std() + NOISE_STD_EPS
    return scaled + torch.randn(grad.shape, dtype=grad.dtype, device=grad.device) * std


def modulated_parameters(encoder: nn.Module, rule: str) -> Iterator[nn.Parameter]:
    """The encoder tensors OGM touches.

    ``conv_only``: 4-D tensors (conv kernels), the official rule; on the MLP encoders of vector data it
    selects *nothing*, so OGM-GE degenerates to plain late fusion (the M3AE no-op).
    ``all_weights``: every tensor that is not 1-D (conv kernels and Linear weights, not BatchNorm affine
    parameters or biases), BalanceBenchmark's rule, which makes OGM-GE act on MLP encoders.
    """
    for p in encoder.parameters():
        if (p.dim() == 4) if rule == "conv_only" else (p.dim() > 1):
            yield p


# --------------------------------------------------------------------------------------------------
# Model and method


@dataclass(frozen=True)
class OGMGE(MethodConfig):
    """OGM-GE: fused cross-entropy, then per-modality gradient modulation of the encoders.

    Each step: L = CE(z, y) on the fused logits; after ``backward()``, scores s_m from the head's sliced
    per-modality logits (concat: W_m h_m + b/M, the bias share the official code uses; sum: each modality's
    own head), coefficients k_m from :func:`ogm_coefficients`, and within the epoch window every selected
    encoder gradient becomes k_m * g (+ noise). BatchNorm parameters, biases and the fusion head are never
    modulated. Only training changes; inference is the fused logits.

    Fields:

    * ``alpha = 0.3``: the MLA repository's default, under which the MLA paper compared OGM-GE; the OGM-GE README
      suggests 0.8 on CREMA-D and 0.1 on VGGSound, so it is tuned per dataset.
    * ``modulation_start = 0``, ``modulation_end = 50``: inclusive epoch window, the defaults of both
      official repositories (``--modulation_starts/--modulation_ends``).
    * ``coefficient = "official"``: gated 1 - tanh(alpha * rho) as released (OGM-GE ``main.py`` after
      a974f3c); ``"paper"`` is 1 - tanh(alpha * relu(rho - 1)).
    * ``noise = True``: the GE part. The ``ogm`` preset turns it off (plain OGM).
    * ``param_rule = "all_weights"``: every non-1-D encoder tensor. The official ``"conv_only"`` rule
      modulates nothing on MLP encoders (vector datasets), which would make OGM-GE identical to late fusion.
    * ``fusion = "concat"``: the official default ``ConcatFusion``; ``"sum"`` is ``SumFusion``.

    Missing modalities are not handled by OGM-GE: zero-filled inputs go through their
    encoder and count in the scores like any other sample.
    """

    alpha: float = 0.3
    modulation_start: int = 0
    modulation_end: int = 50
    coefficient: Literal["official", "paper"] = "official"
    noise: bool = True
    param_rule: Literal["all_weights", "conv_only"] = "all_weights"
    fusion: Literal["concat", "sum"] = "concat"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "alpha")
        check_epoch_window(self.modulation_start, self.modulation_end)

    def build(self, description: DataDescription) -> nn.Module:
        return SlicedFusionNet(description, self.fusion)

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits, features = model(batch.inputs)
        # The per-modality logits feed only the scores, never a loss.
        unimodal = {name: z.detach() for name, z in model.head.sliced(features).items()}
        return LossOut(F.cross_entropy(logits, batch.label), {"unimodal_logits": unimodal, "labels": batch.label})

    def in_window(self, epoch: int) -> bool:
        return self.modulation_start <= epoch <= self.modulation_end

    @torch.no_grad()
    def after_backward(self, model: nn.Module, out: LossOut, ctx: StepContext) -> None:
        if not self.in_window(ctx.epoch):
            return
        unimodal = out.extras["unimodal_logits"]
        scores = true_class_scores([unimodal[name] for name in model.encoders], out.extras["labels"])
        coefficients = ogm_coefficients(scores, self.alpha, self.coefficient).tolist()
        for (_, encoder), k in zip(model.encoders.items(), coefficients):
            # Noise goes to every modality's tensors, including the one with k = 1 (official behaviour).
            for p in modulated_parameters(encoder, self.param_rule):
                if p.grad is not None:
                    p.grad = modulate_gradient(p.grad, k, self.noise)

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        return sliced_prediction(model, batch.inputs)

    #: alpha log-uniform [0.05, 3] (0.1 to 2.6 across official setups) and the window.
    #:
    #: ``noise`` is not searched: OGM and OGM-GE are separate registered rows. ``modulation_end = 1000``
    #: stands for "every epoch" (no budget here is that long).
    search_ranges: ClassVar[SearchRanges] = {
        "alpha": LogUniform(0.05, 3.0),
        "modulation_start": Choice(0, 10),
        "modulation_end": Choice(30, 50, 70, 1000),
    }


#: Plain OGM: the same modulation without the Gaussian noise.
OGM = variant(OGMGE, noise=False)
