"""Moved to :mod:`bench.tables.common`; this alias keeps the old import path working."""
import sys

from bench.tables import common

sys.modules[__name__] = common
