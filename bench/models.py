"""Split into :mod:`bench.nn.encoders` (the encoders and their factories), :mod:`bench.nn.fusion`
(``ConcatHead``, ``SumHead``) and :mod:`bench.nn.classifiers` (the networks and ``sliced_prediction``); this
alias keeps the old import path working.

The old module's public names are the very same objects here (``ENCODER_FACTORIES`` is the registry itself, so
a kind added through ``bench.models`` reaches every encoder), but a module attribute *rebound* here (a
monkeypatched ``CHANNELS_LAST``) does not reach :mod:`bench.nn.encoders`: patch that module instead.
"""

from bench.nn import *  # noqa: F403 - the old module's names, the very same objects
from bench.nn import __all__ as _NN_NAMES
from bench.nn.encoders import CHANNELS_LAST  # noqa: F401 - a public name of the old module

#: The names of :mod:`bench.nn` that came with it (the fusion-head registry): not the old module's.
_ADDED_SINCE = ("FUSION_HEADS", "FusionHead", "FusionNet", "fusion_not_applicable")
__all__ = [name for name in _NN_NAMES if name not in _ADDED_SINCE]
