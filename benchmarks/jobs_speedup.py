"""Wall time of `bench run --jobs 1` against `--jobs N` on the same cells, each into a fresh results directory.

Default cells: late fusion, QMF and MLA on the synthetic family, seeds 0-2, missing rates 0, 0.25, 0.5
(54 cells). Both runs include starting Python, planning and, for N > 1, spawning the workers: the speed-up a
user sees. Prints both times and their ratio (goal on 2 cores: >= 1.8).
Run: python benchmarks/jobs_speedup.py [--jobs 2] [--methods late_fusion,qmf,mla]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time


def timed_run(methods: str, jobs: int) -> float:
    with tempfile.TemporaryDirectory() as results:
        command = [sys.executable, "-m", "bench", "run", "--methods", methods, "--results", results, "--jobs", str(jobs)]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--methods", default="late_fusion,qmf,mla")
    args = parser.parse_args()
    sequential = timed_run(args.methods, 1)
    parallel = timed_run(args.methods, args.jobs)
    print(f"--jobs 1: {sequential:.1f} s, --jobs {args.jobs}: {parallel:.1f} s, speed-up {sequential / parallel:.2f}x "
          f"(goal >= 1.8 on 2 cores)")


if __name__ == "__main__":
    main()
