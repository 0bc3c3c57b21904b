"""One cell, start to finish: run it, turn any failure into a record, and skip, claim or write it.

Every executor (the sequential loop, ``--jobs`` worker processes, Ray tasks) calls :func:`process_cell`, so
they all produce the same records.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import __version__
from bench.errors import CellFailure, UsageError
from bench.kernels import kernel_env
from bench.registry import DATASETS, default_method
from bench.spec import CellSpec
from bench.store import claim_cell, read_record, record_path, write_record

__all__ = ["CellOutcome", "cpu_identity", "environment", "numerics", "process_cell", "recorded_numerics", "run_one"]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


#: CPU features that change which kernels torch, MKL and oneDNN may choose, hence float summation order.
_NUMERIC_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile")


@functools.cache  # read once per process: every record of a grid names the same CPU
def cpu_identity() -> str:
    """The CPU as far as float results depend on it: vendor, family/model and the vector extensions.

    The kernel pin (bench/__init__.py) is not enough for bit-identical records across CPUs. Measured: 72
    committed multi-view, cub and synthetic cells made on other machines (AMD EPYC AVX2 ones for most, and
    one Intel AVX-512 one with the pin) re-run on an Intel AVX-512/AMX machine with the pin: 43 identical, 29
    not, single-cell accuracy moved by up to 7.4 points; none of the 22-27 settings of the three pinned
    variables tried on two of the 29 reproduced them. MKL and some torch kernels choose code paths by vendor
    and model, not only by instruction set. So records name their CPU, and `bench verify` demands identical
    bits only from a record made on the same one.
    """
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break  # the first processor is enough: a machine's cores are alike
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        return f"{platform.machine()} {platform.processor()}".strip()
    flags = set(fields.get("flags", "").split())
    extensions = " ".join(flag for flag in _NUMERIC_FLAGS if flag in flags)
    return f"{fields.get('vendor_id', '?')} {fields.get('cpu family', '?')}/{fields.get('model', '?')} {extensions}"


def environment() -> dict[str, Any]:
    import torch

    return {
        "bench": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_identity(),
        # The kernel family decides float summation order, hence the bits of a record (bench.kernels).
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        # The kernel variables this run had set ({}: native kernels); bench verify re-runs under them.
        "cpu_kernel_env": kernel_env(),
        "git_commit": _git_commit(),
    }


def numerics(environment: dict[str, Any], threads: int | None) -> tuple[Any, ...] | None:
    """What must agree for two runs of one cell to be bit-identical: CPU, kernel family, torch, threads.
    None for a record that predates ``environment.cpu``: its CPU is unknown."""
    if "cpu" not in environment:
        return None
    return environment["cpu"], environment.get("cpu_kernels"), environment.get("torch"), threads


def recorded_numerics(record: dict[str, Any]) -> tuple[Any, ...] | None:
    """:func:`numerics` of the run that wrote ``record``."""
    return numerics(record["environment"], record["notes"].get("threads"))


def _failure_record(spec: CellSpec, reason: str) -> dict[str, Any]:
    return {"status": "failed", "reason": reason, "metrics": None, "timings": None, "notes": {}}


def run_one(spec: CellSpec, *, data_root: Path | None, device: str | None = None) -> dict[str, Any]:
    """One cell -> its record (``status`` ok or failed). Usage errors propagate; everything else is
    caught, because a crashing plugin must not take the grid down."""
    from bench.loop import run_cell

    try:
        body = {"status": "ok", "reason": None, **run_cell(spec, data_root=data_root, device=device)}
        body["notes"]["modalities"] = list(DATASETS.get(spec.dataset).info.modalities)
        # Methods whose per-modality columns are modalities trained alone say so; the tables then use
        # them as the reference for the same modality inside jointly trained models.
        method_cls = type(default_method(spec.method))
        body["notes"]["per_modality_trained_alone"] = bool(getattr(method_cls, "per_modality_trained_alone", False))
    except UsageError:
        raise
    except CellFailure as exc:
        body = _failure_record(spec, str(exc))
    except Exception as exc:  # noqa: BLE001 - recorded with its traceback's last line
        last = traceback.format_exc().strip().splitlines()[-1]
        body = _failure_record(spec, f"{type(exc).__name__} in cell: {last}")
    return {"schema_version": 1, "key": spec.key, "spec": spec.to_dict(), **body, "environment": environment()}


@dataclass(frozen=True)
class CellOutcome:
    label: str
    status: str  # ok | failed | cached | busy
    reason: str | None = None
    problem: str | None = None  # a damaged record that was replaced


def process_cell(spec: CellSpec, results_dir: Path, *, data_root: Path | None, overwrite: bool = False,
                 device: str | None = None) -> CellOutcome:
    """Skip a cell with a valid record, else claim it, run it and write its record."""
    path = record_path(results_dir, spec)
    problem = None
    if path.exists() and not overwrite:
        existing = read_record(path)
        if isinstance(existing, dict):
            return CellOutcome(spec.label, "cached")
        problem = str(existing)
    claim = claim_cell(results_dir, spec)
    if claim is None:
        return CellOutcome(spec.label, "busy", problem=problem)
    try:
        if not overwrite and path.exists() and isinstance(read_record(path), dict):
            return CellOutcome(spec.label, "cached")  # another runner finished it while we were checking
        record = run_one(spec, data_root=data_root, device=device)
        write_record(results_dir, record)
    finally:
        claim.release()
    return CellOutcome(spec.label, record["status"], record["reason"], problem)
