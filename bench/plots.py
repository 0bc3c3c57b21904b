"""Moved to :mod:`bench.tables.plots`; this alias keeps the old import path working."""
import sys

from bench.tables import plots

sys.modules[__name__] = plots
