"""Moved to :mod:`bench.tables.leaderboard`; this alias keeps the old import path working."""
import sys

from bench.tables import leaderboard

sys.modules[__name__] = leaderboard
