"""Epoch time of bench's training loop against a minimal hand-written PyTorch loop.

Same model (late fusion on synthetic_2m), same data tensors, same batch size and optimizer; both shuffle
with a seeded permutation and slice resident tensors. Prints the median epoch time of each and their ratio
(goal: bench / hand-written <= 1.05), and the ratio of the fastest epochs (the least disturbed by other load).
Run: python benchmarks/loop_overhead.py [--epochs 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bench.data import cell_data
from bench.grid import GridRequest, expand
from bench.loop import _make_optimizer, _train_epoch, build_method, seed_everything


def hand_written_epoch(model, optimizer, inputs, labels, batch_size, generator):
    model.train()
    order = torch.randperm(len(labels), generator=generator)
    for start in range(0, len(labels), batch_size):
        rows = order[start : start + batch_size]
        logits, _ = model({k: v[rows] for k, v in inputs.items()})
        loss = F.cross_entropy(logits, labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    spec = expand(GridRequest(methods="late_fusion", datasets="synthetic_2m", seeds=(0,), missing_rates=(0.0,))).specs[
        0
    ]
    method = build_method(spec)
    data = cell_data(spec, data_root=None, zero_fill=True, device=device)
    runs = {}
    for name in ("bench", "hand-written"):
        seed_everything(0)
        model = method.build(data.description).to(device)
        runs[name] = (model, _make_optimizer(method, model), torch.Generator().manual_seed(0))
    times = {"bench": [], "hand-written": []}
    for epoch in range(args.epochs):  # alternate epoch by epoch, so load from other processes hits both alike
        for name in ("bench", "hand-written") if epoch % 2 == 0 else ("hand-written", "bench"):
            model, optimizer, generator = runs[name]
            started = time.perf_counter()
            if name == "bench":
                _train_epoch(method, model, optimizer, data, spec, epoch, generator, 0)
            else:
                hand_written_epoch(model, optimizer, data.train.inputs, data.train.labels, spec.batch_size, generator)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - started)
    bench_t, hand_t = statistics.median(times["bench"]), statistics.median(times["hand-written"])
    bench_min, hand_min = min(times["bench"]), min(times["hand-written"])
    print(
        f"median epoch: bench {1000 * bench_t:.1f} ms, hand-written {1000 * hand_t:.1f} ms, "
        f"ratio {bench_t / hand_t:.3f} (goal <= 1.05); fastest epoch ratio {bench_min / hand_min:.3f}; "
        f"{args.epochs} epochs each, 1 thread, {device}"
    )


if __name__ == "__main__":
    main()
