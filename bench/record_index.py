"""A per-results-directory index of validated records, so that reading 100,000 records does not parse and
checksum 100,000 JSON files every time (``bench table``, ``bench run``'s summary, ``bench verify``).

The index maps each record file (its path under ``records/``) to the record read from it, together with the
file's size, modification time, change time and inode (``os.stat``). A file is taken from the index only when
all four are what the index saw; anything else (a new, rewritten, replaced, touched or hand-edited file: writing
changes the modification and change times, ``os.replace`` the inode, and the change time cannot be set back by
hand) is read and checked again with :func:`bench.store.read_record`. File times have a coarse clock (a few
milliseconds), so a file changed in the last few seconds is read but not indexed (as git treats "racily clean"
files): a rewrite within the same clock tick cannot hide behind an unchanged stamp. Damaged records are never
indexed, so they are reported on every read, as before. The index also carries a digest of the code that
validates records (``bench/store.py``, ``bench/spec.py``) and the Python version, and is ignored when either
changed. So what :func:`load` returns is always what reading every file would return, in the same order.

The index lives in the cache folder (``BENCH_CACHE``, see :func:`bench.media.cache.cache_root`), one file per
results directory, named by a digest of its absolute path; it is written atomically and only when something
changed. Index files not rewritten for 30 days are removed. It is a ``marshal`` file (plain dicts, lists, strings
and numbers; no code is loaded from it). Deleting it costs one full read.

Loading runs with Python's cyclic garbage collector paused and then freezes the loaded objects
(``gc.freeze``): records are trees of dicts and lists without cycles, and otherwise every collection during
and after the load walks all of them (measured: 3.5x slower loading of 20,000 records).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import marshal
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["index_path", "load"]

FORMAT = 1
#: Files whose change time is this recent are not indexed (see the module docstring).
SETTLED_NS = 3_000_000_000
#: Index files not rewritten for this long are deleted when another index is written.
STALE_SECONDS = 30 * 86400


def _code_digest() -> str:
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256(f"{FORMAT} {sys.version}".encode())
    for name in ("store.py", "spec.py", "record_index.py"):
        with contextlib.suppress(OSError):
            digest.update((here / name).read_bytes())
    return digest.hexdigest()


def index_path(results_dir: Path) -> Path:
    from bench.media.cache import cache_root

    where = hashlib.sha256(str(Path(results_dir).resolve()).encode()).hexdigest()[:24]
    return cache_root() / "records-index" / f"{where}.marshal"


def _walk(root: Path) -> list[tuple[tuple[str, ...], str, os.DirEntry]]:
    """Every entry named ``*.json`` under ``root`` (directories not followed through symlinks), as
    ``Path.rglob("*.json")`` finds them, sorted as ``sorted(rglob(...))`` sorts them: by path components."""
    found = []
    stack = [((), str(root))]
    while stack:
        parts, folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                listed = list(entries)
        except PermissionError:
            continue
        for entry in listed:
            name = entry.name
            if name.endswith(".json"):
                found.append(((*parts, name), "/".join((*parts, name)), entry))
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                stack.append(((*parts, name), entry.path))
    found.sort(key=lambda item: item[0])
    return found


def _read_index(path: Path, code: str) -> dict[str, Any]:
    try:
        index = marshal.loads(path.read_bytes())  # marshal.load(file) reads in small pieces: 6x slower
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    if not isinstance(index, dict) or index.get("code") != code or not isinstance(index.get("files"), dict):
        return {}
    return index["files"]


def _write_index(path: Path, code: str, files: dict[str, Any]) -> None:
    from bench.store import atomic_write_bytes

    with contextlib.suppress(OSError):  # a read-only cache only costs speed
        atomic_write_bytes(path, marshal.dumps({"code": code, "files": files}))
        stale = time.time() - STALE_SECONDS
        for other in path.parent.glob("*.marshal"):  # indexes of folders not read for a month (deleted ones)
            with contextlib.suppress(OSError):
                if other.stat().st_mtime < stale:
                    other.unlink()


def _unchanged(record: dict) -> dict:
    return record


def _interned(value: Any) -> Any:
    """``value`` rebuilt with its dict keys and short strings interned. marshal writes an interned string
    once and refers back to it after, and reading it back interns it again; the records repeat the same keys
    and names in every file, so interning made the index of 100,000 records a third smaller (238 -> 157 MB)
    and its load 30 % faster."""
    if isinstance(value, dict):
        return {sys.intern(k) if type(k) is str else k: _interned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interned(v) for v in value]
    if type(value) is str and len(value) <= 200:
        return sys.intern(value)
    return value


def load(results_dir: Path, read: Callable[[Path], Any], wrap: Callable[[dict], Any] | None = None) -> list[Any]:
    """Every record (or problem, from ``read``) under ``results_dir/records``, in ``sorted(rglob)`` order.

    ``read`` gives a record as a dict (the index keeps a plain copy); ``wrap``, when given, makes what is
    returned of each record, read or indexed (bench.store: the typed :class:`bench.record.Record`)."""
    if wrap is None:
        wrap = _unchanged
    root = Path(results_dir) / "records"
    if not root.is_dir():
        return []
    code = _code_digest()
    where = index_path(results_dir)
    enabled = gc.isenabled()
    gc.disable()
    try:
        old = _read_index(where, code)
        new: dict[str, Any] = {}  # files read from the index are interned already (marshal)
        out = []
        changed = False
        settled = time.time_ns() - SETTLED_NS
        for _, rel, entry in _walk(root):
            try:
                st = entry.stat()
                stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            except OSError:
                stamp = None
            cached = old.get(rel)
            if stamp is not None and cached is not None and tuple(cached[0]) == stamp:
                new[rel] = cached
                out.append(wrap(cached[1]))
                continue
            record = read(root / rel)
            if not isinstance(record, dict):
                out.append(record)  # a problem: never indexed
                continue
            if stamp is not None and stamp[2] < settled:
                changed = True  # a record the index did not have: write it
                new[rel] = (stamp, _interned(dict(record)))  # a plain dict: marshal takes no subclass
            out.append(wrap(record))
        if changed or len(new) != len(old):
            _write_index(where, code, new)
        gc.freeze()  # the records stay for the rest of the command; no collection needs to walk them
    finally:
        if enabled:
            gc.enable()
    return out
