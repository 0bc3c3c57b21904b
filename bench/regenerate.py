"""Moved to :mod:`bench.tables.regenerate`; this alias keeps the old import path working."""
import sys

from bench.tables import regenerate

sys.modules[__name__] = regenerate
