"""Moved to :mod:`bench.tables.frame`; this alias keeps the old import path working."""
import sys

from bench.tables import frame

sys.modules[__name__] = frame
