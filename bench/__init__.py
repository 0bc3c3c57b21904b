"""bench: one protocol for multimodal-learning methods.

Importing ``bench`` is cheap and never imports torch: the leaderboard code must run on a machine that has
never trained anything. The training side lives in :mod:`bench.loop`, the plugin contracts in
:mod:`bench.protocol`.
"""

from importlib.metadata import PackageNotFoundError, version

from bench import kernels as _kernels

# CPU kernels: native by default; BENCH_CPU_KERNELS=avx2 pins torch, MKL and oneDNN to AVX2 (fewer distinct
# float results across x86 machines, at a cost in speed). Applied here, before torch is imported; a user's
# own ATEN_CPU_CAPABILITY / MKL_CBWR / ONEDNN_MAX_CPU_ISA wins. See bench.kernels.
_kernels.apply_from_environment()

try:
    __version__ = version("bench-mml")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

#: Bumped whenever a change to the loop, masks, splits or metrics can change a number in a record.
PROTOCOL_VERSION = 1

__all__ = ["PROTOCOL_VERSION", "__version__", "load_records"]


def load_records(results="results"):
    """Every record under a results directory as a ``pandas.DataFrame``, one flat row per cell (columns:
    docs/records.md). Imports pandas on first use only; see :func:`bench.tables.frame.load_records`."""
    from bench.tables.frame import load_records as _load_records

    return _load_records(results)
