"""Wall time of `bench run --jobs 1` against `--jobs N` on the same cells, each into a fresh results directory.

Three grids. ``small``: 4 short cells (late fusion on synthetic_2m, seeds 0-1, missing rates 0 and 0.5, 2
epochs), where starting worker processes used to cost more than the cells; ``large``: late fusion, QMF and MLA
on the default datasets, seeds 0-2, missing rates 0, 0.25, 0.5 (54 cells); ``long``: 4 cells of several
seconds each (late fusion on imbalance_2m, seeds 0-1, rates 0 and 0.5, 400 epochs), where a worker still
starting when this process took its first cell used to idle until that cell ended. Every run includes
starting Python, planning and, for N > 1, spawning the workers: the time a user waits. Prints both times and
their ratio per grid (goals on 2 cores: small >= 1.0, i.e. never slower; large >= 1.8; long >= 1.6, where
the workers' start-up is paid once against 2 cells' time).
Run: python benchmarks/jobs_speedup.py [--grid small|large|long|all] [--jobs 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRIDS = {
    "small": [
        "--methods",
        "late_fusion",
        "--datasets",
        "synthetic_2m",
        "--seeds",
        "0,1",
        "--missing-rates",
        "0,0.5",
        "--epochs",
        "2",
    ],
    "large": ["--methods", "late_fusion,qmf,mla"],
    "long": [
        "--methods",
        "late_fusion",
        "--datasets",
        "imbalance_2m",
        "--seeds",
        "0,1",
        "--missing-rates",
        "0,0.5",
        "--epochs",
        "400",
    ],
}
GOALS = {"small": 1.0, "large": 1.8, "long": 1.6}


def timed_run(grid: list[str], jobs: int) -> tuple[float, dict[str, dict]]:
    with tempfile.TemporaryDirectory() as results:
        command = [sys.executable, "-m", "bench", "run", *grid, "--results", results, "--jobs", str(jobs)]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        metrics = {p.name: json.loads(p.read_text())["metrics"] for p in Path(results, "records").rglob("*.json")}
        return seconds, metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grid", choices=(*GRIDS, "all"), default="all")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="alternated runs of each; the best of each kept")
    args = parser.parse_args()
    for name in GRIDS if args.grid == "all" else (args.grid,):
        sequential = parallel = float("inf")
        for _ in range(args.repeats):
            one, records_one = timed_run(GRIDS[name], 1)
            many, records_many = timed_run(GRIDS[name], args.jobs)
            if records_one != records_many:
                raise SystemExit(f"{name}: --jobs {args.jobs} records differ from --jobs 1")
            sequential, parallel = min(sequential, one), min(parallel, many)
        print(
            f"{name} ({len(records_one)} cells): --jobs 1 {sequential:.1f} s, --jobs {args.jobs} {parallel:.1f} s, "
            f"speed-up {sequential / parallel:.2f}x (goal >= {GOALS[name]} on 2 cores; records identical)"
        )


if __name__ == "__main__":
    main()
