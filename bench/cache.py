"""Moved to :mod:`bench.media.cache`; this alias keeps the old import path working."""

import sys

from bench.media import cache

sys.modules[__name__] = cache
