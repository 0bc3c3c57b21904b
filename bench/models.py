"""Split into :mod:`bench.nn.encoders` (the encoders and their factories), :mod:`bench.nn.fusion`
(``ConcatHead``, ``SumHead``) and :mod:`bench.nn.classifiers` (the networks and ``sliced_prediction``); this
alias keeps the old import path working.

The old module's public names are the very same objects here (``ENCODER_FACTORIES`` is the registry itself, so
a kind added through ``bench.models`` reaches every encoder), but a module attribute *rebound* here (a
monkeypatched ``CHANNELS_LAST``) does not reach :mod:`bench.nn.encoders`: patch that module instead.
"""

from bench.nn.classifiers import (
    FusionWithUnimodalHeads,
    PerModalityClassifiers,
    SlicedFusionNet,
    sliced_prediction,
)
from bench.nn.encoders import (  # noqa: F401 - CHANNELS_LAST was a public name of the old module
    CHANNELS_LAST,
    ENCODER_FACTORIES,
    SEQUENCE_LENGTHS,
    ConvEncoder,
    MLPEncoder,
    build_encoders,
    encode,
    kind_argument,
    sequence_length,
)
from bench.nn.fusion import ConcatHead, SumHead

__all__ = [
    "ENCODER_FACTORIES",
    "SEQUENCE_LENGTHS",
    "ConcatHead",
    "ConvEncoder",
    "FusionWithUnimodalHeads",
    "MLPEncoder",
    "PerModalityClassifiers",
    "SlicedFusionNet",
    "sliced_prediction",
    "SumHead",
    "build_encoders",
    "encode",
    "kind_argument",
    "sequence_length",
]
