"""Prepared-data cache: decode and preprocess a media dataset once, then memory-map the arrays.

Layout: ``<cache root>/<dataset>/v<version>-<digest>/`` holding one ``.npy`` file per array and a
``manifest.json``. The digest covers the adapter's preprocessing parameters and a fingerprint of the raw
files (names and sizes), so a changed option or a different copy of the data never reads a stale cache,
while the same data under another path reuses it. The cache root is ``$BENCH_CACHE`` when set, else
``$XDG_CACHE_HOME/bench``, else ``~/.cache/bench``; the data root is only read (it may be read-only).

A cache directory appears in one ``rename``: everything is written and fsynced in a temporary sibling
directory first, so a preparation that is interrupted (exception, Ctrl-C, SIGKILL) leaves no cache
directory at all, only a temporary one that the next preparation removes. Two processes preparing at once
both finish; the first rename wins and the other discards its copy.

Adapters that prepare a cache may also provide ``status(data_root) -> (state, detail)`` with ``state`` one of
:data:`STATES`, and ``prepare(data_root, progress=None) -> Path``; :func:`dataset_status` answers for
adapters without ``status``. :class:`bench.media.prepared.PreparedDataset` gives an adapter all of these on
top of this module. This module never imports torch (the store's record index uses :func:`cache_root`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import UsageError
from bench.store import atomic_write_text

__all__ = [
    "MANIFEST",
    "STATES",
    "Progress",
    "cache_dir",
    "cache_root",
    "dataset_status",
    "file_fingerprint",
    "prepare_cached",
    "read_manifest",
    "read_prepared",
    "write_prepared",
]

MANIFEST = "manifest.json"
#: What ``bench data`` reports for a dataset: nothing usable / raw files present / prepared cache present.
STATES = ("missing", "raw found", "prepared")
CACHE_SCHEMA = 1

#: ``progress(done, total)`` is called as a preparation advances (steps: one per raw file, then its stages).
Progress = Callable[[int, int], None]


def cache_root() -> Path:
    raw = os.environ.get("BENCH_CACHE")
    if raw:
        return Path(raw).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "bench"


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_fingerprint(root: Path, paths: Iterable[Path]) -> str:
    """Digest of the files' paths (relative to ``root``) and sizes: cheap, and independent of where the data
    root lies. Re-downloading a changed file of the same size is not noticed; bump the version then."""
    items = sorted((str(Path(p).relative_to(root)), Path(p).stat().st_size) for p in paths)
    return _digest(items)


def cache_dir(name: str, version: str, key: Mapping[str, Any]) -> Path:
    """Where the prepared arrays of ``name`` at ``version`` with these parameters live."""
    return cache_root() / name / f"v{version}-{_digest(dict(key))}"


def read_prepared(directory: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a prepared cache, memory-mapped read-only; None when it has not been prepared.

    A directory that exists but does not match its manifest (edited by hand, disk trouble) is a UsageError
    saying to delete it.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    fix = f"delete it (rm -r {directory}) and run again to re-prepare"
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        arrays = {}
        for name, meta in manifest["arrays"].items():
            array = np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            if list(array.shape) != meta["shape"] or str(array.dtype) != meta["dtype"]:
                raise ValueError(
                    f"{name}.npy is {array.dtype}{list(array.shape)}, manifest says {meta['dtype']}{meta['shape']}"
                )
            arrays[name] = array
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"prepared cache {directory} is damaged ({reason}); {fix}") from None
    return arrays


def read_manifest(directory: Path) -> dict[str, Any]:
    return json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened for fsync
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale_temporaries(final: Path) -> None:
    """Temporary directories left by a killed preparation on this host (their process is gone)."""
    prefix = f".{final.name}.tmp-{socket.gethostname()}-"
    for path in final.parent.glob(f"{prefix}*"):
        pid = path.name[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


def write_prepared(directory: Path, arrays: Mapping[str, np.ndarray], manifest: Mapping[str, Any]) -> Path:
    """Write ``arrays`` (one ``<name>.npy`` each) and the manifest into ``directory``, all or nothing."""
    final = Path(directory)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(final)
        tmp = Path(
            tempfile.mkdtemp(prefix=f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}-", dir=final.parent)
        )
    except OSError as exc:
        raise UsageError(
            f"cannot create the cache folder {final.parent} ({exc.strerror or exc}); "
            "set BENCH_CACHE to a writable folder"
        ) from None
    try:
        described = {}
        for name, array in arrays.items():
            array = np.ascontiguousarray(array)
            with open(tmp / f"{name}.npy", "wb") as handle:
                np.save(handle, array, allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
            described[name] = {"shape": list(array.shape), "dtype": str(array.dtype)}
        body = {
            "cache_schema": CACHE_SCHEMA,
            **manifest,
            "arrays": described,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_text(tmp / MANIFEST, json.dumps(body, indent=1, sort_keys=True, allow_nan=False) + "\n")
        os.chmod(tmp / MANIFEST, 0o644)  # mkstemp/mkdtemp create private files; a cache may be shared
        os.chmod(tmp, 0o755)
        _fsync_dir(tmp)
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process prepared it first: keep theirs
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def prepare_cached(
    directory: Path,
    build: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]],
) -> dict[str, np.ndarray]:
    """The cached arrays at ``directory``; on first use ``build()`` returns (arrays, manifest) to store."""
    arrays = read_prepared(directory)
    if arrays is None:
        built, manifest = build()
        write_prepared(directory, built, manifest)
        arrays = read_prepared(directory)
        assert arrays is not None
    return arrays


def dataset_status(adapter: Any, data_root: Path | None) -> tuple[str, str]:
    """(state, detail) for ``bench data``: the adapter's own ``status`` when it has one, else from
    ``available``: datasets read directly from their files have nothing to prepare."""
    status = getattr(adapter, "status", None)
    if status is not None:
        state, detail = status(data_root)
        if state not in STATES:
            raise ValueError(f"{adapter.info.name}: status must be one of {STATES}, got {state!r}")
        return state, detail
    ok, why = adapter.available(data_root)
    if not ok:
        return "missing", why
    if not adapter.info.needs_data_root:
        return "prepared", "built in: generated in memory, nothing to download or prepare"
    return "raw found", "read directly from its files at load; nothing to prepare"
