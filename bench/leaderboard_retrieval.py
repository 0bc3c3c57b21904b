"""Moved to :mod:`bench.tables.retrieval`; this alias keeps the old import path working."""
import sys

from bench.tables import retrieval

sys.modules[__name__] = retrieval
