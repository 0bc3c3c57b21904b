"""Native CPU kernels against the AVX2 pin, in fp32 and bf16 autocast.

Each setting runs in its own process (the kernel variables are read when torch loads): native, or
``BENCH_CPU_KERNELS=avx2``. Two workloads, one torch thread: a training step of bench's ResNet-18 spectrogram
encoder (batch 8, 1x128x128, the convolutional case where kernels matter most) and a training step of a
3-layer MLP (batch 256, 512-1024-1024-10, the vector datasets' case). Prints the median step time of each
setting and the ratios native/pinned per precision and bf16/fp32 per setting; ratios > 1 mean the first is
slower. Run: python benchmarks/cpu_kernels.py [--steps 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "BENCH_CPU_KERNELS")

CHILD = r"""
import json, statistics, sys, time
import bench  # applies BENCH_CPU_KERNELS before torch loads
import torch
from bench.nn.backbones import ResNet18Audio

torch.set_num_threads(1)
torch.manual_seed(0)
precision, steps = sys.argv[1], int(sys.argv[2])

def timed(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    times = []
    for i in range(steps + 1):  # the first step warms up (oneDNN primitive creation)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            loss = torch.nn.functional.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)

class Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk, self.head = ResNet18Audio(channels_last=True), torch.nn.Linear(512, 10)
    def forward(self, x):
        return self.head(self.trunk(x))

conv = Conv()
mlp = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                          torch.nn.ReLU(), torch.nn.Linear(1024, 10))
result = {
    "kernels": torch.backends.cpu.get_cpu_capability(),
    "conv": timed(conv, torch.randn(8, 1, 128, 128), torch.randint(0, 10, (8,))),
    "mlp": timed(mlp, torch.randn(256, 512), torch.randint(0, 10, (256,))),
}
print(json.dumps(result))
"""


def measure(kernels: str, precision: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}
    if kernels == "avx2":
        env["BENCH_CPU_KERNELS"] = "avx2"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, precision, str(steps)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per setting and workload")
    parser.add_argument("--repeats", type=int, default=2, help="processes per setting (alternated); best kept")
    args = parser.parse_args()
    settings = [(k, p) for p in ("fp32", "bf16") for k in ("native", "avx2")]
    best: dict[tuple[str, str], dict] = {}
    for _ in range(args.repeats):
        for setting in settings:
            seen = measure(*setting, args.steps)
            old = best.get(setting)
            best[setting] = (
                seen
                if old is None
                else {"kernels": seen["kernels"], **{w: min(seen[w], old[w]) for w in ("conv", "mlp")}}
            )
    print(f"CPU: {cpu_name()}; one torch thread; best of {args.repeats} processes, median of {args.steps} steps")
    for (kernels, precision), seen in best.items():
        print(
            f"  {kernels:6s} {precision}: torch kernels {seen['kernels']:7s} "
            f"ResNet-18 step {seen['conv'] * 1e3:8.1f} ms"
            f"  MLP step {seen['mlp'] * 1e3:7.2f} ms"
        )
    for workload in ("conv", "mlp"):
        b = {s: v[workload] for s, v in best.items()}
        name = "ResNet-18" if workload == "conv" else "MLP"
        print(
            f"{name}: pinned/native fp32 {b['avx2', 'fp32'] / b['native', 'fp32']:.2f}x, "
            f"pinned/native bf16 {b['avx2', 'bf16'] / b['native', 'bf16']:.2f}x, "
            f"bf16/fp32 native {b['native', 'bf16'] / b['native', 'fp32']:.2f}x, "
            f"bf16/fp32 pinned {b['avx2', 'bf16'] / b['avx2', 'fp32']:.2f}x"
        )


if __name__ == "__main__":
    main()
