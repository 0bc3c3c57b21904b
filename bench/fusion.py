"""Moved to :mod:`bench.nn.fusion`; this alias keeps the old import path working."""

import sys

from bench.nn import fusion

sys.modules[__name__] = fusion
