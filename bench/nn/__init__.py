"""Building blocks for method authors: encoders, fusion heads and the classifier networks built from them.

* :mod:`bench.nn.encoders`: one encoder per modality, chosen from its kind (:func:`build_encoders`).
* :mod:`bench.nn.fusion`: fusion heads, features of every modality in, class logits out
  (:data:`FUSION_HEADS`, :class:`ConcatHead`, :class:`SumHead`), and :class:`FusionNet`.
* :mod:`bench.nn.classifiers`: whole networks (:class:`SlicedFusionNet`, :class:`FusionWithUnimodalHeads`,
  :class:`PerModalityClassifiers`) and :func:`sliced_prediction`.
* :mod:`bench.nn.backbones`: the media encoders (ResNet-18s, a local text model); not imported here, since
  they need the optional extras (the encoder factories import it when a modality of their kind is built).

What a method may know of the data is the :class:`~bench.protocol.DataDescription` it is built from; the
method contract itself is :mod:`bench.protocol` (see docs/adding_a_method.md).
"""

from bench.nn.classifiers import (
    FusionWithUnimodalHeads,
    PerModalityClassifiers,
    SlicedFusionNet,
    sliced_prediction,
)
from bench.nn.encoders import (
    ENCODER_FACTORIES,
    SEQUENCE_LENGTHS,
    ConvEncoder,
    MLPEncoder,
    build_encoders,
    encode,
    kind_argument,
    sequence_length,
)
from bench.nn.fusion import FUSION_HEADS, ConcatHead, FusionHead, FusionNet, SumHead, fusion_not_applicable

__all__ = [
    "ENCODER_FACTORIES",
    "FUSION_HEADS",
    "SEQUENCE_LENGTHS",
    "ConcatHead",
    "ConvEncoder",
    "FusionHead",
    "FusionNet",
    "FusionWithUnimodalHeads",
    "MLPEncoder",
    "PerModalityClassifiers",
    "SlicedFusionNet",
    "SumHead",
    "build_encoders",
    "encode",
    "fusion_not_applicable",
    "kind_argument",
    "sequence_length",
    "sliced_prediction",
]
