"""The records store: one JSON file per cell, written atomically, checked when read.

Layout: ``<results>/records/<dataset>/<method>/<cell key>.json``. A record carries a checksum of its own
content, so a truncated or hand-edited file is detected, reported and recomputed rather than tabulated.
This module never imports torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.record import Record
from bench.spec import CellSpec, canonical_json

__all__ = [
    "SCHEMA_VERSION",
    "CellClaim",
    "RecordProblem",
    "atomic_write_bytes",
    "atomic_write_text",
    "claim_cell",
    "failed_cells",
    "failure_path",
    "iter_records",
    "new_record",
    "read_record",
    "record_path",
    "reusable",
    "seal",
    "write_record",
]

#: The record format's version (docs/records.md): every record this code writes carries it.
SCHEMA_VERSION = 1


def new_record(
    spec: CellSpec,
    *,
    status: str,
    reason: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    timings: Mapping[str, Any] | None = None,
    notes: Mapping[str, Any] | None = None,
    history: list[Any] | None = None,
    evaluated_from: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, Any] | None = None,
    environment: Mapping[str, Any],
) -> Record:
    """A cell's record, the one place records are made (a trained cell, a failed one, a ``bench eval`` one).

    ``metrics``, ``timings`` and ``reason`` are null on a failed cell and ``notes`` empty; the optional
    fields (``history``, ``evaluated_from``, ``artifacts``) are left out when None, as docs/records.md
    says. Not yet sealed: :func:`write_record` adds the checksum."""
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "key": spec.key,
        "spec": spec.to_dict(),
        "status": status,
        "reason": reason,
        "metrics": metrics,
        "timings": timings,
        "notes": {} if notes is None else notes,
    }
    optional = {"history": history, "evaluated_from": evaluated_from, "artifacts": artifacts}
    record.update((name, value) for name, value in optional.items() if value is not None)
    record["environment"] = environment
    return Record(record)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``.

    A reader (or a run killed at any moment) sees either the old file or the new one, never a prefix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def record_path(results_dir: Path, spec: CellSpec) -> Path:
    return Path(results_dir) / "records" / spec.dataset / spec.method / f"{spec.key}.json"


def _checksum(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def seal(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "checksum": _checksum(record)}


#: Suffix of a failed record kept beside the ok record it did not replace (not ``.json``: never tabulated).
FAILED_SUFFIX = ".failed"


def failure_path(path: Path) -> Path:
    return Path(path).with_suffix(FAILED_SUFFIX)


def write_record(results_dir: Path, record: dict[str, Any]) -> Path:
    """Write a cell's record and return where it went.

    A failed record never replaces a valid ok one (an ``--overwrite`` run whose cell then fails): the ok
    record stays where it is and the failed one is written beside it, ``<key>.failed``, whose path is returned.
    An ok record replaces anything and removes such a file.
    """
    spec = CellSpec.from_dict(record["spec"])
    path = record_path(results_dir, spec)
    text = json.dumps(seal(record), indent=1, sort_keys=True, allow_nan=False) + "\n"
    if record.get("status") != "ok" and path.exists():
        existing = read_record(path)
        if isinstance(existing, dict) and existing.get("status") == "ok":
            atomic_write_text(failure_path(path), text)
            return failure_path(path)
    atomic_write_text(path, text)
    if record.get("status") == "ok":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(failure_path(path))
    return path


def reusable(record: dict[str, Any] | RecordProblem | None) -> bool:
    """Whether a cell with this record (from :func:`read_record`) is done: a valid ok record. A failed one is
    retried by the next plain run, a damaged one recomputed."""
    return isinstance(record, dict) and record.get("status") == "ok"


def failed_cells(results_dir: Path, specs: Iterator[CellSpec] | list[CellSpec]) -> list[CellSpec]:
    """The specs whose record says the cell failed (a plain rerun retries them)."""
    failed = []
    for spec in specs:
        path = record_path(results_dir, spec)
        if path.exists():
            record = read_record(path)
            if isinstance(record, dict) and record.get("status") != "ok":
                failed.append(spec)
    return failed


@dataclass(frozen=True)
class RecordProblem:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def read_record(path: Path) -> Record | RecordProblem:
    """The record at ``path``, or what is wrong with it (unreadable, truncated, edited, misplaced)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return RecordProblem(path, f"unreadable record ({type(exc).__name__}); it will be recomputed")
    if not isinstance(record, dict) or "spec" not in record or "checksum" not in record:
        return RecordProblem(path, "not a bench record (no spec or checksum); it will be recomputed")
    if record["checksum"] != _checksum(record):
        return RecordProblem(path, "checksum mismatch (edited or corrupted); it will be recomputed")
    try:
        spec = CellSpec.from_dict(record["spec"])
    except (TypeError, ValueError) as exc:
        return RecordProblem(path, f"invalid spec ({exc}); it will be recomputed")
    if spec.key != record.get("key") or Path(path).stem != spec.key:
        return RecordProblem(path, "file name, key and spec disagree; it will be recomputed")
    return Record(record)


def iter_records(results_dir: Path) -> Iterator[Record | RecordProblem]:
    """Every record under ``results_dir`` in a deterministic order (problems included): what
    ``read_record`` gives for each of ``sorted(<results>/records/**/*.json)``, taken from the records index
    for the files that have not changed since it was written (bench.record_index)."""
    from bench.record_index import load

    yield from load(results_dir, read_record, Record.of)


# --------------------------------------------------------------------------------------------------
# Claims: two runners on one results directory compute each cell once.


#: Claims this process holds, so that a worker ended by SIGTERM (bench.workers.stop_workers) gives them back.
_HELD: set[Path] = set()


@dataclass
class CellClaim:
    path: Path

    def release(self) -> None:
        _HELD.discard(self.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def release_held_claims() -> None:
    """Remove every lock this process holds (a worker that is being stopped)."""
    for path in list(_HELD):
        CellClaim(path).release()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_cell(results_dir: Path, spec: CellSpec) -> CellClaim | None:
    """Create ``<key>.lock`` exclusively; None when another live process on this host holds it.

    A lock left by a killed process (same host, dead pid) is taken over. Locks from other hosts are
    respected; delete them by hand if that host is gone.
    """
    lock = record_path(results_dir, spec).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    owner = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                host, pid = lock.read_text().split()
            except FileNotFoundError:
                continue
            except (OSError, ValueError):  # being written right now, or garbage left long ago
                if time.time() - lock.stat().st_mtime < 60:
                    return None
                host, pid = socket.gethostname(), "0"
            if host != socket.gethostname() or _pid_alive(int(pid)):
                return None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)  # stale: its owner died
            continue
        _HELD.add(lock)
        with os.fdopen(fd, "w") as handle:
            handle.write(owner)
        return CellClaim(lock)
    return None
