"""The tiny grids the CLI tests run and the records they read back (one copy instead of one per test file)."""

from __future__ import annotations

import json
from pathlib import Path


def grid_args(
    methods: str = "late_fusion",
    datasets: str = "synthetic_2m",
    *,
    seeds: str | None = "0",
    missing_rates: str | None = "0",
    epochs: str = "1",
) -> tuple[str, ...]:
    """The options that choose a grid's cells, for `run`, `validate` or `tune`: one seed, one missing rate and one
    epoch unless told otherwise; `seeds=None` / `missing_rates=None` leave the option out (tune takes neither)."""
    args = ["--methods", methods, "--datasets", datasets]
    if seeds is not None:
        args += ["--seeds", seeds]
    if missing_rates is not None:
        args += ["--missing-rates", missing_rates]
    return (*args, "--epochs", epochs)


def record_paths(results: Path) -> list[Path]:
    """Every record file a run wrote under RESULTS/records, in path order."""
    return sorted((results / "records").rglob("*.json"))


def read_records(results: Path) -> list[dict]:
    """Every record a run wrote under RESULTS/records, parsed, in path order."""
    return [json.loads(path.read_text()) for path in record_paths(results)]
