"""bench: one protocol for multimodal-learning methods.

Importing ``bench`` is cheap and never imports torch: the leaderboard code must run on a machine that has
never trained anything. The training side lives in :mod:`bench.loop`, the plugin contracts in
:mod:`bench.protocol`.
"""

import os
import platform
from importlib.metadata import PackageNotFoundError, version

# Fewer distinct float results across x86 machines: torch, MKL and oneDNN otherwise pick AVX-512 kernels
# where the CPU has them and AVX2 kernels where it does not, and the two sum floats in different orders
# (measured: an AV-MNIST QMF cell gave 0.96 test accuracy on an AVX2 machine and 0.9567 on an AVX-512 one;
# with these three settings the AVX-512 machine reproduced 0.96). It does not make every CPU agree (vendor-
# and model-specific code paths remain; bench.cells.cpu_identity has the measurement), which is why records
# name their CPU. Set before torch is imported; a user's own value wins.
if platform.machine().lower() in ("x86_64", "amd64"):
    for _name, _value in (("ATEN_CPU_CAPABILITY", "avx2"), ("MKL_CBWR", "AVX2"), ("ONEDNN_MAX_CPU_ISA", "AVX2")):
        os.environ.setdefault(_name, _value)

try:
    __version__ = version("bench-mml")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

#: Bumped whenever a change to the loop, masks, splits or metrics can change a number in a record.
PROTOCOL_VERSION = 1

__all__ = ["PROTOCOL_VERSION", "__version__", "load_records"]


def load_records(results="results"):
    """Every record under a results directory as a ``pandas.DataFrame``, one flat row per cell (columns:
    docs/records.md). Imports pandas on first use only; see :func:`bench.frame.load_records`."""
    from bench.frame import load_records as _load_records

    return _load_records(results)
