"""Grid wall time on a Ray cluster of 1 node against 2 nodes (``bench run --executor ray --ray-address``).

The cluster runs on this machine (``ray.cluster_utils.Cluster``), one CPU per node, so 2 nodes run 2 cells at
once, as two machines of one core each would (sharing one file system for the results, as a real cluster must).
Grid: late fusion and QMF on synthetic_2m, seeds 0-2, missing rates 0 and 0.5 (12 cells). Each timing is
the whole command against a cluster already started; the records of both runs must be identical.
Prints both times and their ratio (goal on 2 cores: close to 2). Run: python benchmarks/ray_nodes.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = ["--methods", "late_fusion,qmf", "--datasets", "synthetic_2m", "--seeds", "0,1,2", "--missing-rates", "0,0.5"]


def timed(nodes: int, results: Path) -> float:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench",
                "run",
                *GRID,
                "--results",
                str(results),
                "--executor",
                "ray",
                "--ray-address",
                cluster.address,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )
        return time.perf_counter() - started
    finally:
        cluster.shutdown()


def metrics(results: Path) -> dict:
    return {p.name: json.loads(p.read_text())["metrics"] for p in (results / "records").rglob("*.json")}


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        one = timed(1, Path(scratch) / "one")
        two = timed(2, Path(scratch) / "two")
        same = metrics(Path(scratch) / "one") == metrics(Path(scratch) / "two")
        if not same:
            raise SystemExit("records differ between the 1-node and the 2-node run")
        print(
            f"{len(metrics(Path(scratch) / 'one'))} cells: 1 node {one:.1f} s, 2 nodes {two:.1f} s, "
            f"speed-up {one / two:.2f}x (records identical)"
        )


if __name__ == "__main__":
    main()
