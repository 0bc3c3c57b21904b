"""The prepared-dataset lifecycle every cached adapter shares: status, prepare once, load memory-mapped.

An adapter whose raw files are slow to read (decoded media, pickles, thousands of images) subclasses
:class:`PreparedDataset` and says only what is particular to it: which files must be there, the cache key,
how to build the arrays, and its modalities. The base class then gives it

* ``available(data_root)`` and ``status(data_root)`` (``bench data``: missing / raw found / prepared);
* ``prepare(data_root, progress)`` (``bench data prepare`` or the first ``load``): build the arrays once into
  ``<cache root>/<name>/v<version>-<digest of the key>/`` (:mod:`bench.media.cache`, all or nothing), big
  arrays on disk through :class:`ScratchArrays`, so a preparation never needs the decoded data in memory;
* ``load(data_root)``: the splits of the cache as copy-on-write memory-mapped tensors
  (:func:`mapped_tensors`);
* ``describe(data_root)``: the modalities and training-label counts ``load`` would give, read from the cache's
  headers (or, before a preparation, from what the adapter knows without decoding), never building a cache.

Arrays are named ``<split>_<modality>`` and ``<split>_label`` for the splits ``train``, ``test`` and, when the
dataset ships one, ``val``; any other array (e.g. ``train_mnist_index``) is kept in the cache and not loaded.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data import DatasetSummary, label_counts
from bench.errors import UsageError
from bench.media.cache import (
    Progress,
    cache_dir,
    file_fingerprint,
    prepare_cached,
    read_manifest,
    read_prepared,
)
from bench.protocol import DatasetInfo, LoadedData, ModalitySpec, SplitData

__all__ = ["SPLITS", "PreparedDataset", "ScratchArrays", "cache_state", "mapped_tensors"]

#: The splits a prepared cache may hold, in the order ``load`` and ``bench data`` list them.
SPLITS = ("train", "val", "test")
#: What reading a damaged manifest can raise (a missing key, a wrong type, bad JSON, an unreadable file).
_DAMAGED = (OSError, ValueError, KeyError, TypeError, AttributeError)


class ScratchArrays:
    """Arrays built on disk (``.npy`` memory maps) in a temporary folder next to a cache being prepared.

    A preparation fills these row by row and returns them from ``_build``;
    :func:`bench.media.cache.write_prepared` streams them into the cache, so preparing a dataset never holds
    its decoded arrays in memory. The folder is made on the first :meth:`new` and named like the cache's own
    temporary folders
    (``.<cache>.tmp-<host>-<pid>-scratch-...``), so when a killed preparation leaves it behind, the next
    preparation removes it; leaving the ``with`` block removes it.
    """

    def __init__(self, final: Path) -> None:
        self.final = Path(final)
        self.folder: Path | None = None

    def new(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A zero-filled array ``name`` of ``shape`` and ``dtype``, memory-mapped from the scratch folder."""
        if self.folder is None:
            prefix = f".{self.final.name}.tmp-{socket.gethostname()}-{os.getpid()}-scratch-"
            try:
                self.final.parent.mkdir(parents=True, exist_ok=True)
                self.folder = Path(tempfile.mkdtemp(prefix=prefix, dir=self.final.parent))
            except OSError as exc:
                reason = exc.strerror or exc
                raise UsageError(
                    f"cannot create the cache folder {self.final.parent} ({reason}); "
                    "set BENCH_CACHE to a writable folder"
                ) from None
        return np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> ScratchArrays:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def mapped_tensors(directory: Path, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Tensors over a prepared cache's ``<name>.npy`` files, memory-mapped copy-on-write: pages are read when
    used and shared between processes, and a write (bench never writes inputs in place) stays private to this
    process instead of reaching the cache. Call after :func:`bench.media.cache.read_prepared` checked the
    files."""
    folder = Path(directory)
    return {
        name: torch.from_numpy(np.load(folder / f"{name}.npy", mmap_mode="c", allow_pickle=False)) for name in names
    }


def cache_state(directory: Path, dataset: str, describe: Callable[[dict[str, Any]], str]) -> tuple[str, str]:
    """``bench data``'s (state, detail) for an adapter whose raw files are present: ``prepared`` with
    ``describe(manifest)``, or ``raw found`` with the command that prepares it (or says the cache is
    damaged)."""
    if Path(directory).is_dir():
        try:
            return "prepared", f"cache {directory} ({describe(read_manifest(directory))})"
        except _DAMAGED:
            return "raw found", (
                f"cache {directory} is damaged; delete it and run python -m bench data prepare {dataset}"
            )
    return "raw found", (
        f"not prepared yet: python -m bench data prepare {dataset} (or the first run) caches it in {directory}"
    )


class PreparedDataset:
    """``available`` / ``status`` / ``prepare`` / ``load`` / ``describe`` of a dataset prepared into a cache.

    A subclass (a frozen dataclass with an ``info`` field) provides:

    * ``_missing(root) -> str | None``: a cheap check of the raw files under the data root: what is absent
      (one line, with where to get it), or None. It may raise a :class:`~bench.errors.UsageError` (e.g. a
      split list that cannot be parsed); that is reported the same way.
    * the cache key, either ``_key(root) -> dict`` outright, or ``_options()`` (the preprocessing parameters)
      and ``_sources(root)`` (every raw file the arrays depend on), which give the default key
      ``{"options": ..., "source": <names and sizes of the sources>}``. The key names the cache directory:
      changing what it holds for an existing adapter orphans every cache prepared before.
    * ``_build(root, scratch, progress) -> (arrays, manifest)``: the arrays (big ones made with
      ``scratch.new``) and what the manifest records beyond ``dataset``, ``version``, ``key`` and
      ``split_sizes``, which the base adds. ``progress(done, total)`` reports the steps.
    * ``modalities(shapes=None) -> tuple[ModalitySpec, ...]``: the modalities; ``shapes`` is the per-sample
      shape of each modality's prepared training array (``{modality: shape}``). An adapter whose shapes follow
      from its options returns constants (and answers without a cache); the default pairs the shapes with
      ``_kinds()`` (modality -> encoder kind).

    and may override ``_no_data_root()`` (the message without a data root), ``_describe_cache(manifest)``
    (the parenthesis of ``bench data``'s "prepared" line), ``_check_prepared(directory)`` (last checks in
    ``load``) and ``_describe_raw(root)`` (``describe`` before the cache is prepared: a summary from the split
    lists and constants, without decoding; the default None makes the harness load instead).
    """

    info: DatasetInfo
    #: True to load the splits as in-memory copies instead of memory-mapping the cache (small datasets whose
    #: records were made from in-memory tensors).
    copy_into_memory = False

    # -- provided by subclasses -------------------------------------------------------------------
    def _missing(self, root: Path) -> str | None:
        raise NotImplementedError

    def _build(
        self, root: Path, scratch: ScratchArrays, progress: Progress | None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        raise NotImplementedError

    def _options(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} defines neither _key nor _options and _sources")

    def _sources(self, root: Path) -> list[Path]:
        raise NotImplementedError(f"{type(self).__name__} defines neither _key nor _options and _sources")

    def _kinds(self) -> dict[str, str]:
        raise NotImplementedError(f"{type(self).__name__} defines neither modalities nor _kinds")

    def _key(self, root: Path) -> dict[str, Any]:
        return {"options": self._options(), "source": file_fingerprint(root, self._sources(root))}

    def modalities(self, shapes: Mapping[str, tuple[int, ...]] | None = None) -> tuple[ModalitySpec, ...]:
        """The modalities ``load`` gives; ``shapes`` are the prepared training arrays' per-sample shapes."""
        if shapes is None:
            raise ValueError(f"{self.info.name}: the modalities' shapes are known once the cache is prepared")
        kinds = self._kinds()
        return tuple(ModalitySpec(m, tuple(shapes[m]), kinds[m]) for m in self.info.modalities)

    def _no_data_root(self) -> str:
        return (
            f"no data root; set BENCH_DATA or --data-root to the folder holding {self.info.layout} "
            f"(download: {self.info.homepage})"
        )

    def _describe_cache(self, manifest: dict[str, Any]) -> str:
        sizes = manifest["split_sizes"]
        return " / ".join(f"{sizes[s]:,} {s}" for s in SPLITS if s in sizes)

    def _check_prepared(self, directory: Path) -> None:
        """Called by ``load`` with the prepared cache: a subclass's last checks against its options."""

    def _describe_raw(self, root: Path) -> DatasetSummary | None:
        return None

    # -- where things are -------------------------------------------------------------------------
    def _why_missing(self, data_root: Path | None) -> str | None:
        if data_root is None:
            return self._no_data_root()
        try:
            return self._missing(Path(data_root))
        except UsageError as exc:
            return str(exc)

    def cache_path(self, data_root: Path) -> Path:
        return cache_dir(self.info.name, self.info.version, self._key(Path(data_root)))

    def available(self, data_root: Path | None) -> tuple[bool, str]:
        why = self._why_missing(data_root)
        return (False, why) if why else (True, "")

    def status(self, data_root: Path | None) -> tuple[str, str]:
        why = self._why_missing(data_root)
        if why:
            return "missing", why
        try:
            directory = self.cache_path(Path(data_root))
        except UsageError as exc:
            return "missing", str(exc)
        return cache_state(directory, self.info.name, self._describe_cache)

    # -- preparing and loading --------------------------------------------------------------------
    def _available_root(self, data_root: Path | None) -> Path:
        why = self._why_missing(data_root)
        if why:
            raise UsageError(f"dataset {self.info.name!r} is not available: {why}")
        return Path(data_root)

    def prepare(self, data_root: Path | None, progress: Progress | None = None) -> Path:
        """Decode and preprocess into the cache unless already there; returns the cache directory."""
        root = self._available_root(data_root)
        key = self._key(root)
        directory = cache_dir(self.info.name, self.info.version, key)

        with ScratchArrays(directory) as scratch:

            def build() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
                arrays, manifest = self._build(root, scratch, progress)
                sizes = {s: int(len(arrays[f"{s}_label"])) for s in SPLITS if f"{s}_label" in arrays}
                return arrays, {
                    "dataset": self.info.name,
                    "version": self.info.version,
                    "key": key,
                    "split_sizes": sizes,
                    **manifest,
                }

            prepare_cached(directory, build)
        return directory

    def load(self, data_root: Path | None) -> LoadedData:
        directory = self.prepare(data_root)
        self._check_prepared(directory)
        arrays = read_prepared(directory)
        if arrays is None:
            raise UsageError(f"no prepared cache at {directory}; run python -m bench data prepare {self.info.name}")
        modalities = self.modalities(_train_shapes(arrays, self.info.modalities))
        names = [m.name for m in modalities]
        splits = {}
        for split in SPLITS:
            if f"{split}_label" not in arrays:
                continue
            if self.copy_into_memory:
                inputs = {m: torch.from_numpy(np.array(arrays[f"{split}_{m}"])) for m in names}
            else:
                mapped = mapped_tensors(directory, [f"{split}_{m}" for m in names])
                inputs = {m: mapped[f"{split}_{m}"] for m in names}
            labels = torch.from_numpy(np.array(arrays[f"{split}_label"], dtype=np.int64))
            splits[split] = SplitData(inputs, labels)
        return LoadedData(modalities, train=splits["train"], test=splits["test"], val=splits.get("val"))

    # -- describing without loading ----------------------------------------------------------------
    def describe(self, data_root: Path | None) -> DatasetSummary | None:
        """What ``load`` would give, as a :class:`bench.data.DatasetSummary`, without decoding anything or
        building the cache: from the prepared cache's array headers and labels when it exists, else from
        ``_describe_raw``; None when that cannot tell (the harness then loads)."""
        root = self._available_root(data_root)
        arrays = read_prepared(self.cache_path(root))
        if arrays is None:
            return self._describe_raw(root)
        return DatasetSummary(
            self.modalities(_train_shapes(arrays, self.info.modalities)),
            label_counts(arrays["train_label"]),
            "val_label" in arrays,
        )


def _train_shapes(arrays: Mapping[str, np.ndarray], modalities: Iterable[str]) -> dict[str, tuple[int, ...]]:
    return {m: tuple(int(d) for d in arrays[f"train_{m}"].shape[1:]) for m in modalities}
