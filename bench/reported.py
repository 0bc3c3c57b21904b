"""Moved to :mod:`bench.tables.papers`; this alias keeps the old import path working."""
import sys

from bench.tables import papers

sys.modules[__name__] = papers
