"""bench: one protocol for multimodal-learning methods.

Importing ``bench`` is cheap and never imports torch: the leaderboard code must run on a machine that has
never trained anything. The training side lives in :mod:`bench.loop`, the plugin contracts in
:mod:`bench.protocol`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bench-mml")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

#: Bumped whenever a change to the loop, masks, splits or metrics can change a number in a record.
PROTOCOL_VERSION = 1

__all__ = ["PROTOCOL_VERSION", "__version__"]
