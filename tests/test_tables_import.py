"""bench.tables regenerates tables on a machine that has never trained anything: importing it loads no torch."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import bench.tables

#: Every module of the package, found on disk, so that a module added later is checked too.
MODULES = ["bench.tables", "bench.record", "bench.store"] + sorted(
    f"bench.tables.{info.name}" for info in pkgutil.iter_modules([str(Path(bench.tables.__file__).parent)])
)


def _loads_torch(modules: list[str]) -> bool:
    """Whether importing ``modules`` in a fresh interpreter puts torch in ``sys.modules``."""
    code = (
        f"import importlib, sys\nfor name in {modules!r}: importlib.import_module(name)\nprint('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip() == "True"


def test_the_table_modules_are_all_found():
    assert {
        "bench.tables.leaderboard",
        "bench.tables.retrieval",
        "bench.tables.plots",
        "bench.tables.papers",
        "bench.tables.regenerate",
        "bench.tables.common",
        "bench.tables.frame",
    } <= set(MODULES)


def test_importing_bench_tables_and_each_of_its_modules_loads_no_torch():
    assert not _loads_torch(MODULES)
