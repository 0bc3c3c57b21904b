"""Moved to :mod:`bench.nn.backbones`; this alias keeps the old import path working."""

import sys

from bench.nn import backbones

sys.modules[__name__] = backbones
