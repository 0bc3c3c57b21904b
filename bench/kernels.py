"""Which CPU kernels torch, MKL and oneDNN run: native (the default) or pinned to AVX2, and re-running a record
under the kernels it names.

Native kernels use what the CPU has (AVX-512, AMX, AVX-512 bf16). The AVX2 pin (``--cpu-kernels avx2`` or
``BENCH_CPU_KERNELS=avx2``) sets ``ATEN_CPU_CAPABILITY=avx2``, ``MKL_CBWR=AVX2`` and ``ONEDNN_MAX_CPU_ISA=AVX2``
(a variable the user set himself wins). The pin gives fewer distinct float results across x86 machines, not
identical ones (see :func:`bench.cells.cpu_identity`), and costs speed: on an Intel AMX machine native fp32
was 1.3x and native bf16 3.2x faster than the pin, and bf16 under the pin 11x slower than native bf16
(BENCHMARKS.md). The three variables are read once, when torch (MKL, oneDNN) loads, so the setting must be
made before torch is imported: ``import bench`` applies ``BENCH_CPU_KERNELS``, and ``python -m bench`` applies
``--cpu-kernels`` before any torch import (:func:`use`).

Every record names the setting it ran under (``environment.cpu_kernel_env``: the three variables that were
set; ``{}`` for native) beside the kernel family torch reported (``environment.cpu_kernels``).
``bench verify`` re-runs a record under that setting (:func:`rerun`): in its own process when the setting
matches, else in a child process started with the record's variables, so records made with the pin stay
checkable bit for bit on a CPU like the one that made them. Records from before ``cpu_kernel_env`` was
recorded were made with the pin (bench pinned AVX2 by default then; those without ``cpu_kernels`` came from
AVX2 machines), and :func:`recorded_kernel_env` infers it for them.

This module never imports torch at import time.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "CPU_KERNELS",
    "ENV_VARIABLE",
    "KERNEL_VARIABLES",
    "apply_from_environment",
    "bf16_warning",
    "kernel_env",
    "native_bf16",
    "recorded_kernel_env",
    "rerun",
    "use",
]

#: The variables torch (ATen), MKL and oneDNN read when they load.
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")
#: ``--cpu-kernels`` choices and the variables each one sets.
CPU_KERNELS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
ENV_VARIABLE = "BENCH_CPU_KERNELS"
#: CPU flags (``/proc/cpuinfo``) of native bf16 matrix instructions.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def apply_from_environment() -> None:
    """``BENCH_CPU_KERNELS=avx2``: pin (a kernel variable the user set himself wins). Called by ``import bench``;
    another value is left for the command line to report (:func:`use` validates it)."""
    if _x86() and os.environ.get(ENV_VARIABLE, "").strip().lower() == "avx2":
        for name, value in CPU_KERNELS["avx2"].items():
            os.environ.setdefault(name, value)


def kernel_env() -> dict[str, str]:
    """The kernel variables set in this process (``{}``: native kernels)."""
    return {name: os.environ[name] for name in KERNEL_VARIABLES if name in os.environ}


def use(kind: str | None) -> None:
    """Apply ``--cpu-kernels KIND`` (None: ``BENCH_CPU_KERNELS``, else leave the process as it is).

    Raises UsageError for an unknown kind, and when torch is already imported with other settings (the
    variables are read when it loads)."""
    from bench.errors import UsageError

    source = "--cpu-kernels"
    if kind is None:
        kind, source = os.environ.get(ENV_VARIABLE), ENV_VARIABLE
        if kind is None:
            return
    kind = kind.strip().lower()
    if kind not in CPU_KERNELS:
        raise UsageError(
            f"{source} {kind!r} is not one of {', '.join(CPU_KERNELS)} "
            "(native: the CPU's own kernels, the default; avx2: the AVX2 pin)"
        )
    if not _x86():
        return  # the pin is for x86 kernels; elsewhere both choices run the native ones
    wanted = CPU_KERNELS[kind]
    if source == ENV_VARIABLE:  # the environment setting keeps a variable the user set himself
        wanted = {name: os.environ.get(name, value) for name, value in wanted.items()}
    if kernel_env() == wanted:
        return
    if "torch" in sys.modules:
        raise UsageError(
            f"{source} {kind} must be chosen before torch is imported in this process; "
            f"run it as its own command (python -m bench ... --cpu-kernels {kind})"
        )
    for name in KERNEL_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(wanted)


def recorded_kernel_env(record: dict[str, Any]) -> dict[str, str]:
    """The kernel variables the run that wrote ``record`` had set.

    Recorded since ``environment.cpu_kernel_env``; before, bench pinned AVX2 on x86 by default, with a user's
    own ``ATEN_CPU_CAPABILITY`` showing in ``cpu_kernels``; records older still (no ``cpu_kernels``) came from
    AVX2 machines, which the pin reproduces best on newer ones (bench/__init__.py history, README)."""
    env = record.get("environment") or {}
    if isinstance(env.get("cpu_kernel_env"), dict):
        return dict(env["cpu_kernel_env"])
    machine = env.get("platform", "x86_64").lower()
    if "x86_64" not in machine and "amd64" not in machine:
        return {}  # the old pin applied on x86 only
    pinned = dict(CPU_KERNELS["avx2"])
    if env.get("cpu_kernels"):
        pinned["ATEN_CPU_CAPABILITY"] = str(env["cpu_kernels"]).lower()
    return pinned


def _child_command(request: Path, answer: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from bench.kernels import _child; _child(sys.argv[1], sys.argv[2])",
        str(request),
        str(answer),
    ]


def _child(request_path: str, answer_path: str) -> None:
    """Body of a re-run in a child process: run the spec ``runs`` times, write the records as JSON."""
    import torch

    from bench.cells import run_one
    from bench.spec import CellSpec

    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    torch.set_num_threads(request["threads"])
    spec = CellSpec.from_dict(request["spec"])
    data_root = Path(request["data_root"]) if request["data_root"] is not None else None
    records = [run_one(spec, data_root=data_root) for _ in range(request["runs"])]
    Path(answer_path).write_text(json.dumps(records), encoding="utf-8")


def rerun(record: dict[str, Any], *, data_root: Path | None, threads: int, runs: int = 1) -> list[dict[str, Any]]:
    """Re-run the cell of ``record`` ``runs`` times under the kernel setting it names; the fresh records.

    In this process when its kernel variables are the record's (``bench.cells.run_one``), else in one child
    process whose environment has exactly the record's kernel variables."""
    from bench import cells
    from bench.spec import CellSpec

    wanted = recorded_kernel_env(record) if _x86() else {}
    if wanted == kernel_env():
        spec = CellSpec.from_dict(record["spec"])
        return [cells.run_one(spec, data_root=data_root) for _ in range(runs)]
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES and k != ENV_VARIABLE} | wanted
    with tempfile.TemporaryDirectory(prefix="bench-rerun-") as folder:
        request, answer = Path(folder) / "request.json", Path(folder) / "answer.json"
        request.write_text(
            json.dumps(
                {
                    "spec": record["spec"],
                    "runs": runs,
                    "threads": threads,
                    "data_root": str(data_root) if data_root is not None else None,
                }
            )
        )
        done = subprocess.run(_child_command(request, answer), env=env, capture_output=True, text=True)
        if done.returncode != 0 or not answer.exists():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            reason = f"re-run under {wanted or 'native kernels'} exited {done.returncode}: {last}"
            return [{"status": "failed", "reason": reason, "metrics": None, "environment": {}}] * runs
        return json.loads(answer.read_text(encoding="utf-8"))


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def native_bf16(flags: set[str] | None = None) -> bool:
    """Whether the CPU has bf16 matrix instructions (AMX or AVX-512 bf16); unknown (no cpuinfo): True."""
    flags = _cpu_flags() if flags is None else flags
    return not flags or any(flag in flags for flag in BF16_FLAGS)


def bf16_warning(
    precision: str, device: str | None, *, flags: set[str] | None = None, env: dict[str, str] | None = None
) -> str | None:
    """One line when bf16 will run on a CPU without native bf16 or under the AVX2 pin (None otherwise)."""
    if precision != "bf16" or (device is not None and not device.startswith("cpu")):
        return None
    if device is None:
        import torch

        if torch.cuda.is_available():
            return None
    if not native_bf16(flags):
        return (
            "warning: --precision bf16 on a CPU without bf16 instructions (no amx_bf16 or avx512_bf16 in "
            "/proc/cpuinfo) runs many times slower than fp32 (about 10x measured); use fp32 here"
        )
    env = kernel_env() if env is None else env
    if env.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2" or env.get("ATEN_CPU_CAPABILITY", "").lower() == "avx2":
        return (
            "warning: --precision bf16 under the AVX2 kernel pin runs many times slower than native bf16 "
            "(11x measured on an AMX machine); drop --cpu-kernels avx2 / BENCH_CPU_KERNELS for bf16"
        )
    return None
