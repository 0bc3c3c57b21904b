"""One cell, start to finish: run it, turn any failure into a record, and skip, claim or write it.

Every executor (the sequential loop, ``--jobs`` worker processes, Ray tasks) calls :func:`process_cell`, so
they all produce the same records.
"""

from __future__ import annotations

import platform
import subprocess
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import __version__
from bench.errors import CellFailure, UsageError
from bench.registry import DATASETS, default_method
from bench.spec import CellSpec
from bench.store import claim_cell, read_record, record_path, write_record

__all__ = ["CellOutcome", "environment", "process_cell", "run_one"]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment() -> dict[str, Any]:
    import torch

    return {
        "bench": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        # The kernel family decides float summation order, hence the bits of a record (bench/__init__.py).
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "git_commit": _git_commit(),
    }


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
