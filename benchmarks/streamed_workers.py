"""Streamed splits: training time with data-loader workers against gathering in the training process.

    BENCH_DATA=../shared/data python benchmarks/streamed_workers.py [--dataset avmnist] [--method late_fusion]
        [--epochs 2] [--workers 0,2]

A split larger than ``BENCH_RESIDENT_BYTES`` is not copied to the device: each batch is gathered from the
memory-mapped prepared cache. This script forces that path (``RESIDENT_BYTES = 0``) and times one cell per
setting: resident (the whole split copied once), streamed with each worker count. It prints each cell's
training seconds, the ratio to the resident cell, the data path alone (iterating the training batches
without a model) and checks that every setting gives the same metrics, as the records must.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from bench import data as data_module
from bench.grid import GridRequest, expand
from bench.loop import run_cell


def _data_only_seconds(spec, data_root: Path | None) -> float:
    data = data_module.cell_data(spec, data_root=data_root, zero_fill=True, device=torch.device("cpu"))
    started = time.perf_counter()
    for _ in data_module.iterate_batches(data.train, spec.batch_size, generator=torch.Generator().manual_seed(0)):
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="avmnist")
    parser.add_argument("--method", default="late_fusion")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts for the streamed cells")
    parser.add_argument("--data-root", default=os.environ.get("BENCH_DATA"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(args.data_root) if args.data_root else None
    spec = expand(
        GridRequest(
            methods=args.method,
            datasets=args.dataset,
            seeds=(0,),
            missing_rates=(0.3,),
            epochs=args.epochs,
            data_root=root,
        )
    ).specs[0]

    settings = [("resident", 2**62, 0)] + [(f"streamed, {w} workers", 0, int(w)) for w in args.workers.split(",")]
    rows = []
    for name, resident_bytes, workers in settings:
        data_module.RESIDENT_BYTES = resident_bytes
        os.environ["BENCH_DATA_WORKERS"] = str(workers)
        result = run_cell(spec, data_root=root)
        rows.append((name, result["timings"]["train_seconds"], _data_only_seconds(spec, root), result["metrics"]))

    print(f"{spec.label}: {args.epochs} epoch(s), batch {spec.batch_size}, 1 torch thread")
    base = rows[0][1]
    for name, train, data_only, metrics in rows:
        same = "same metrics" if metrics == rows[0][3] else "DIFFERENT METRICS"
        print(f"{name:22s} train {train:7.2f} s  ratio {train / base:5.3f}  data path alone {data_only:6.3f} s  {same}")


if __name__ == "__main__":
    main()
