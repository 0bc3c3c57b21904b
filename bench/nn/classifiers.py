"""The classifier networks methods build whole: per-modality encoders (:mod:`bench.nn.encoders`) and a head
(:mod:`bench.nn.fusion`), from a :class:`~bench.protocol.DataDescription`.

* :class:`SlicedFusionNet`: encoders and a concat or sum head, trained jointly; per-modality logits by slicing
  the head (late fusion, OGM-GE and most balancing methods).
* :class:`FusionWithUnimodalHeads`: the same plus one linear classifier per modality (G-Blending, MMPareto).
* :class:`PerModalityClassifiers`: one encoder and head per modality, no fused head (unimodal baselines, QMF).
* :func:`sliced_prediction`: ``Method.predict`` of the joint models.

The other fusion heads have their joint model in :class:`bench.nn.fusion.FusionNet`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from bench.nn.encoders import build_encoders, encode
from bench.nn.fusion import ConcatHead, SumHead
from bench.protocol import DataDescription, Prediction

__all__ = ["FusionWithUnimodalHeads", "PerModalityClassifiers", "SlicedFusionNet", "sliced_prediction"]


def sliced_prediction(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> Prediction:
    """``Method.predict`` of a joint model whose ``forward`` gives (fused logits, features) and whose
    ``head.sliced(features)`` the per-modality logits (:class:`SlicedFusionNet`,
    :class:`bench.nn.fusion.FusionNet`)."""
    logits, features = model(inputs)
    return Prediction(logits, model.head.sliced(features))


class SlicedFusionNet(nn.Module):
    """Per-modality encoders and a concat or sum head; ``forward`` gives (fused logits, features) and
    ``head.sliced(features)`` the per-modality logits. The joint model of late fusion and OGM-GE."""

    def __init__(self, description: DataDescription, fusion: str) -> None:
        super().__init__()
        self.encoders = build_encoders(description)
        dims = {name: enc.out_dim for name, enc in self.encoders.items()}
        self.head = (ConcatHead if fusion == "concat" else SumHead)(dims, description.num_classes)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features = encode(self.encoders, inputs)
        return self.head(features), features


class PerModalityClassifiers(nn.Module):
    """One full classifier per modality (its encoder and its own Linear head); ``forward`` gives the
    per-modality logits. The model of unimodal baselines and of QMF."""

    def __init__(self, description: DataDescription) -> None:
        super().__init__()
        self.encoders = build_encoders(description)
        self.heads = nn.ModuleDict(
            {name: nn.Linear(enc.out_dim, description.num_classes) for name, enc in self.encoders.items()}
        )

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: self.heads[name](h) for name, h in encode(self.encoders, inputs).items()}


class FusionWithUnimodalHeads(SlicedFusionNet):
    """:class:`SlicedFusionNet` plus one ``Linear`` classifier per modality on the same encoder features:
    the multi-head model of G-Blending (Wang et al., CVPR 2020, Fig. 2c) and of MMPareto
    (``GeWu-Lab/MMPareto_ICML2024`` ``code/models/models.py``: ``head``, ``head_audio``, ``head_video``).

    The encoders and fused head are built first, exactly as in :class:`SlicedFusionNet`, so under the same
    seed they start from the same weights as late fusion. ``forward`` gives (fused logits, features)."""

    def __init__(self, description: DataDescription, fusion: str = "concat") -> None:
        super().__init__(description, fusion)
        self.unimodal_heads = nn.ModuleDict(
            {name: nn.Linear(enc.out_dim, description.num_classes) for name, enc in self.encoders.items()}
        )

    def unimodal_logits(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: head(features[name]) for name, head in self.unimodal_heads.items()}
