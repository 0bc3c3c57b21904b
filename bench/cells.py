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
from typing import TYPE_CHECKING, Any

from bench import __version__
from bench.errors import CellFailure, UsageError
from bench.kernels import kernel_env
from bench.registry import DATASETS, default_method
from bench.spec import CellSpec
from bench.store import (
    RecordProblem,
    claim_cell,
    new_record,
    read_record,
    record_path,
    reusable,
    write_record,
)

if TYPE_CHECKING:
    from bench.artifacts import CellOutputs
    from bench.record import Record

__all__ = [
    "CellOutcome",
    "cpu_identity",
    "dataset_notes",
    "environment",
    "numerics",
    "process_cell",
    "recorded_numerics",
    "run_one",
]


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
    """What must agree for two runs of one cell to be bit-identical: CPU, kernel family, torch, threads and
    the operating system build (``platform``). None for a record that predates ``environment.cpu``.

    The OS build is there because a virtual machine's CPU string can hide different hardware: measured, the 54
    AV-MNIST records (convolutional encoders) made under ``Linux-6.18.44-fc-v1045`` with the CPU string
    ``GenuineIntel 6/167 ... amx_tile`` re-ran to other bits under ``fc-v1252`` with the same string, with the
    pre-layout code as with this one, while the imbalance (MLP) records of that machine that verify sampled re-ran
    identically."""
    if "cpu" not in environment:
        return None
    return (
        environment["cpu"],
        environment.get("cpu_kernels"),
        environment.get("torch"),
        threads,
        environment.get("platform"),
    )


def recorded_numerics(record: dict[str, Any]) -> tuple[Any, ...] | None:
    """:func:`numerics` of the run that wrote ``record``."""
    return numerics(record["environment"], record["notes"].get("threads"))


def dataset_notes(spec: CellSpec) -> dict[str, Any]:
    """The notes every ok record gets from its dataset and method, whatever ran it (a trained cell or a
    ``bench eval`` one): the dataset's modalities, and whether the method's per-modality columns are
    modalities trained alone (the tables then use them as the reference for the same modality inside
    jointly trained models)."""
    method_cls = type(default_method(spec.method))
    return {
        "modalities": list(DATASETS.get(spec.dataset).info.modalities),
        "per_modality_trained_alone": bool(getattr(method_cls, "per_modality_trained_alone", False)),
    }


def run_one(
    spec: CellSpec,
    *,
    data_root: Path | None,
    device: str | None = None,
    outputs: CellOutputs | None = None,
    results_dir: Path | None = None,
) -> Record:
    """One cell -> its record (``status`` ok or failed). Usage errors propagate; everything else is
    caught, because a crashing plugin must not take the grid down.

    ``outputs`` (``run --save-models``, ``--log-samples``, ``--logger``; bench.artifacts) keeps files next to
    the record in ``results_dir`` and names them in the record's ``artifacts``; without it the record is what
    it always was."""
    from bench.loop import run_cell

    artifacts: dict[str, Any] = {}
    hooks: dict[str, Any] = {}
    loggers = []
    if outputs:
        from bench.artifacts import save_outputs
        from bench.loggers import open_loggers

        loggers = open_loggers(outputs.loggers, results_dir, spec)
        if loggers:
            hooks["on_history"] = lambda entry: [logger.log_epoch(entry) for logger in loggers]
        if outputs.save_model or outputs.log_samples:

            def after_test(method, model, data, autocast, whole_train) -> None:
                artifacts.update(save_outputs(results_dir, spec, outputs, method, model, data, autocast, whole_train))

            hooks["after_test"] = after_test
    try:
        trained = run_cell(spec, data_root=data_root, device=device, **hooks)
        body = {
            **trained,
            "status": "ok",
            "notes": {**trained["notes"], **dataset_notes(spec)},
            "artifacts": artifacts or None,
        }
    except UsageError:
        raise
    except CellFailure as exc:
        body = {"status": "failed", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - recorded with its traceback's last line
        last = traceback.format_exc().strip().splitlines()[-1]
        body = {"status": "failed", "reason": f"{type(exc).__name__} in cell: {last}"}
    finally:
        for logger in loggers:
            logger.close()
    return new_record(spec, **body, environment=environment())


@dataclass(frozen=True)
class CellOutcome:
    label: str
    status: str  # ok | failed | cached | busy
    reason: str | None = None
    problem: str | None = None  # a damaged record that was replaced


def _reusable(path: Path, results_dir: Path, outputs: CellOutputs | None) -> dict[str, Any] | RecordProblem | None:
    """The valid record at ``path`` when it can be reused (it has every file ``outputs`` asks for), else what
    is wrong with it, or None (no record, or one without the requested files: the cell runs again)."""
    if not path.exists():
        return None
    existing = read_record(path)
    if isinstance(existing, dict) and outputs and (outputs.save_model or outputs.log_samples):
        from bench.artifacts import has_outputs

        return existing if has_outputs(results_dir, existing, outputs) else None
    return existing


def process_cell(
    spec: CellSpec,
    results_dir: Path,
    *,
    data_root: Path | None,
    overwrite: bool = False,
    device: str | None = None,
    outputs: CellOutputs | None = None,
) -> CellOutcome:
    """Skip a cell with a valid record (that has the files ``outputs`` asks for), else claim it, run it and
    write its record."""
    path = record_path(results_dir, spec)
    problem = None
    if not overwrite:
        existing = _reusable(path, results_dir, outputs)
        if reusable(existing):  # a failed record is retried
            return CellOutcome(spec.label, "cached")
        problem = None if existing is None or isinstance(existing, dict) else str(existing)
    claim = claim_cell(results_dir, spec)
    if claim is None:
        return CellOutcome(spec.label, "busy", problem=problem)
    try:
        if not overwrite and reusable(_reusable(path, results_dir, outputs)):
            return CellOutcome(spec.label, "cached")  # another runner finished it while we were checking
        record = run_one(spec, data_root=data_root, device=device, outputs=outputs, results_dir=results_dir)
        written = write_record(results_dir, record)
    finally:
        claim.release()
    reason = record["reason"]
    if written != path:  # a failure never replaces an ok record (bench.store.write_record)
        reason = f"{reason} (the earlier ok record is kept; this failure is in {written.name})"
    return CellOutcome(spec.label, record["status"], reason, problem)
