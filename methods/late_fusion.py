"""Joint training with late fusion: the "Normal" baseline of the OGM-GE and MLA repositories."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import nn

from bench.hparams import MethodConfig
from bench.nn import FusionNet, SlicedFusionNet, fusion_not_applicable, sliced_prediction
from bench.protocol import Batch, DataDescription, LossOut, Prediction, StepContext
from bench.registry import variant


@dataclass(frozen=True)
class LateFusion(MethodConfig):
    """Joint late fusion trained with one cross-entropy on the fused logits.

    ``fusion="concat"`` (default) is the ``ConcatFusion`` that both official repositories use for their
    "Normal" baseline: z = W[h_1; ...; h_M] + b, a sum of per-modality linear heads with one shared bias.
    ``fusion="sum"`` is their ``SumFusion``, one bias per modality. Per-modality accuracy is measured
    inside the jointly trained model by slicing the head (concat: W_m h_m + b/M, as OGM-GE ``main.py``
    does for its audio/visual columns; sum: each modality's own head).

    The other heads of :mod:`bench.nn.fusion` (each cites its paper there): ``"gated"`` (Kiela et al., AAAI
    2018), ``"film"`` (Perez et al., AAAI 2018), ``"gmu"`` (Arevalo et al., ICLR-W 2017), ``"tensor"``
    (TFN, Zadeh et al., EMNLP 2017), ``"lmf"`` (Liu et al., ACL 2018) and ``"xattn"`` (MulT-style
    cross-attention, Tsai et al., ACL 2019, over the encoders' sequences; not applicable where a modality
    has no sequence). Of these only ``gmu`` is a sum of per-modality terms and fills the per-modality
    columns; the others leave them "n/a".
    """

    fusion: Literal["concat", "sum", "gated", "film", "gmu", "tensor", "lmf", "xattn"] = "concat"

    def build(self, description: DataDescription) -> nn.Module:
        if self.fusion in ("concat", "sum"):
            return SlicedFusionNet(description, self.fusion)  # the model of the committed records, unchanged
        return FusionNet(description, self.fusion)

    def applicable(self, description: DataDescription) -> str | None:
        """None, or why the chosen head cannot fuse these modalities (cross-attention needs sequences)."""
        return fusion_not_applicable(self.fusion, description)

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits, features = model(batch.inputs)
        return LossOut(F.cross_entropy(logits, batch.label), {"features": features, "logits": logits})

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        return sliced_prediction(model, batch.inputs)


LATE_FUSION_SUM = variant(LateFusion, fusion="sum")


def _head_variant(fusion: str, summary: str):
    """The joint baseline with another head; ``summary`` is the line ``bench ls methods`` shows."""
    factory = variant(LateFusion, fusion=fusion)
    factory.__doc__ = f"{summary} (LateFusion with fusion={fusion!r})"
    return factory


FUSION_GATED = _head_variant("gated", "Joint training, gated fusion head (Kiela et al., AAAI 2018)")
FUSION_FILM = _head_variant("film", "Joint training, FiLM fusion head (Perez et al., AAAI 2018)")
FUSION_GMU = _head_variant("gmu", "Joint training, gated multimodal unit head (Arevalo et al., ICLR-W 2017)")
FUSION_TENSOR = _head_variant("tensor", "Joint training, tensor fusion head (TFN, Zadeh et al., EMNLP 2017)")
FUSION_LMF = _head_variant("lmf", "Joint training, low-rank multimodal fusion head (LMF, Liu et al., ACL 2018)")
FUSION_XATTN = _head_variant(
    "xattn", "Joint training, cross-attention over sequences (MulT-style, Tsai et al., ACL 2019)"
)
