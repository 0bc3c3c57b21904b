"""``--datasets hf:<folder>``: a Hugging Face dataset kept on local disk, run like any registered dataset.

The folder is either

* what ``DatasetDict.save_to_disk`` writes (a ``dataset_dict.json`` and one folder per split), or
* parquet files named after their splits: ``train.parquet``, ``validation.parquet`` (or ``val``/``valid``/
  ``dev``), ``test.parquet``, or shards ``train-00000-of-00002.parquet`` ... (as ``Dataset.to_parquet`` and
  the Hub's parquet conversion name them).

``train`` and ``test`` are required; without a validation split the harness carves one from train
(stratified, fixed seed), as for every dataset. Nothing is downloaded: the folder is read with ``datasets``
(``load_from_disk``) or ``pyarrow``.

**Modalities from the features.** Every column except the label becomes one modality named after it:

* a list of floats of one length (``List(Value("float32"))``, ``Array2D``...) -> ``vector`` of that shape;
  a list of lists (a feature sequence) -> ``vector`` of shape (steps, features), zero-padded to the longest
  sample of any split (the MLP encoder flattens it, as for MOSEI);
* ``Image`` -> ``image`` (C, H, W) in [0, 1], resized to ``image_size`` (default 32) in mode ``image_mode``
  (default ``L`` when every training image is grey, else ``RGB``);
* ``Audio`` (PCM WAV) -> ``spectrogram`` (1, ``audio_frames``, ``n_mels``): the Kaldi log-mel filterbank of
  :func:`bench.media.decode.kaldi_fbank` (25 ms windows, 10 ms hop), zero-padded or cut to ``audio_frames``
  (default 100: one second);
* a string column -> ``tokens`` (2, ``max_tokens``), tokenised with the project's text encoder tokenizer
  (the shipped all-MiniLM-L6-v2 unless ``text_model`` names a local model directory), as for ``food101``.

Scalar numeric columns are not modalities by themselves; a card groups them (below). The label is the
``ClassLabel`` column (its names give the classes); a label column of plain integers or strings, named by
the card, is mapped to classes in sorted order of the training labels.

**The card** ``bench.json`` in the folder (optional) chooses instead of the defaults::

    {"label": "label",
     "modalities": {"pixels": "img", "words": "caption", "stats": ["age", "height"]},
     "image_size": 28, "image_mode": "L", "max_tokens": 48, "n_mels": 64, "audio_frames": 100,
     "text_model": null, "license": "CC BY 4.0", "citation": "...", "homepage": "..."}

``modalities`` maps a modality name to a column, or to a list of scalar columns stacked into one vector.

The dataset version is a sha256 over the folder's files (names, sizes and bytes) and the card, so cells of
two different folders, or of a folder that changed, never share a key. Give the folder relative to the
working directory to keep cell keys equal across machines (an absolute path is part of the name).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import UsageError
from bench.protocol import DatasetInfo, LoadedData, ModalitySpec, SplitData

__all__ = ["CARD_FILE", "HFFolder", "resolve"]

CARD_FILE = "bench.json"
SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val", "valid", "dev"), "test": ("test",)}
CARD_KEYS = {
    "label",
    "modalities",
    "image_size",
    "image_mode",
    "max_tokens",
    "n_mels",
    "audio_frames",
    "text_model",
    "license",
    "citation",
    "homepage",
    "description",
}
DEFAULTS = {
    "image_size": 32,
    "image_mode": None,
    "max_tokens": 64,
    "n_mels": 64,
    "audio_frames": 100,
    "text_model": None,
}


def _read_card(folder: Path) -> dict[str, Any]:
    path = folder / CARD_FILE
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); fix it or remove it") from None
    if not isinstance(card, dict):
        raise UsageError(f'{path} must hold a JSON object, e.g. {{"label": "label"}}')
    unknown = sorted(set(card) - CARD_KEYS)
    if unknown:
        raise UsageError(f"{path}: unknown keys {unknown}; allowed: {sorted(CARD_KEYS)}")
    return card


def _parquet_files(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*.parquet")):
        stem = re.sub(r"-\d+-of-\d+$", "", path.stem)
        for split, names in SPLIT_NAMES.items():
            if stem in names:
                found.setdefault(split, []).append(path)
    return found


def _fingerprint(folder: Path, card: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(card, sort_keys=True).encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CARD_FILE):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def _read_splits(folder: Path) -> dict[str, Any]:
    """split -> ``datasets.Dataset`` (train, test and, where present, val)."""
    import datasets

    if (folder / "dataset_dict.json").is_file():
        loaded = datasets.load_from_disk(str(folder))
        splits = {}
        for split, names in SPLIT_NAMES.items():
            for name in names:
                if name in loaded:
                    splits[split] = loaded[name]
                    break
        others = sorted(set(loaded) - {n for names in SPLIT_NAMES.values() for n in names})
        if "train" not in splits or "test" not in splits:
            raise UsageError(
                f"{folder}: a DatasetDict with splits 'train' and 'test' is needed (it has "
                f"{', '.join(sorted(loaded))}); rename its splits before save_to_disk"
            )
        if others:
            raise UsageError(f"{folder}: unknown splits {others}; use train, validation and test")
        return splits
    files = _parquet_files(folder)
    if "train" not in files or "test" not in files:
        raise UsageError(
            f"{folder} holds neither a save_to_disk DatasetDict (dataset_dict.json) nor parquet files "
            "train.parquet and test.parquet (validation.parquet optional)"
        )
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datasets.table import InMemoryTable

    return {
        split: datasets.Dataset(InMemoryTable(pa.concat_tables([pq.read_table(p) for p in paths])))
        for split, paths in files.items()
    }


def _is_float_list(feature: Any) -> int:
    """Nesting depth of a list feature of numbers (1: a vector, 2: a sequence of vectors), else 0."""
    import datasets

    depth = 0
    while isinstance(feature, datasets.List | datasets.LargeList | datasets.Sequence):
        feature = feature.feature
        depth += 1
    if isinstance(feature, datasets.Array2D | datasets.Array3D):
        return depth + len(feature.shape)
    if isinstance(feature, datasets.Value) and feature.dtype not in ("string", "large_string", "bool"):
        return depth
    return 0


def _column_kind(feature: Any) -> str | None:
    import datasets

    if isinstance(feature, datasets.Image):
        return "image"
    if isinstance(feature, datasets.Audio):
        return "audio"
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return "text"
    if isinstance(feature, datasets.ClassLabel):
        return "label"
    if _is_float_list(feature):
        return "vector"
    if isinstance(feature, datasets.Value):
        return "scalar"
    return None


@dataclass(frozen=True)
class HFFolder:
    """The adapter of one local folder (see the module docstring). ``path`` is the folder as given."""

    path: str

    @functools.cached_property
    def folder(self) -> Path:
        return Path(self.path).expanduser()

    @functools.cached_property
    def card(self) -> dict[str, Any]:
        return {**DEFAULTS, **_read_card(self.folder)}

    @functools.cached_property
    def _splits(self) -> dict[str, Any]:
        return _read_splits(self.folder)

    @functools.cached_property
    def _plan(self) -> tuple[str, list[str], dict[str, tuple[str, Any]]]:
        """(label column, class names, modality -> (kind, column or list of columns))."""
        features = self._splits["train"].features
        kinds = {name: _column_kind(feature) for name, feature in features.items()}
        label = self.card.get("label") or next((c for c, k in kinds.items() if k == "label"), None)
        if label is None:
            raise UsageError(
                f'{self.folder}: no ClassLabel column; name the label column in {CARD_FILE} ({{"label": "<column>"}})'
            )
        if label not in features:
            raise UsageError(f"{self.folder}: label column {label!r} not found; columns: {', '.join(features)}")
        if kinds[label] == "label":
            classes = list(features[label].names)
        else:
            classes = sorted({str(v) for v in self._splits["train"][label]})
        chosen = self.card.get("modalities")
        if chosen is None:
            chosen = {c: c for c, k in kinds.items() if c != label and k in ("vector", "image", "audio", "text")}
        if not isinstance(chosen, dict) or not chosen:
            raise UsageError(
                f"{self.folder}: no modality column (lists of floats, Image, Audio or strings); "
                f"columns: {', '.join(f'{c} ({k})' for c, k in kinds.items())}"
            )
        plan: dict[str, tuple[str, Any]] = {}
        for name, column in chosen.items():
            columns = column if isinstance(column, list) else [column]
            missing = [c for c in columns if c not in features]
            if missing:
                raise UsageError(
                    f"{self.folder}: {CARD_FILE} names columns {missing} that do not exist; "
                    f"columns: {', '.join(features)}"
                )
            if isinstance(column, list):
                if any(kinds[c] != "scalar" for c in columns):
                    raise UsageError(f"{self.folder}: modality {name!r} stacks columns that are not scalar numbers")
                plan[name] = ("columns", columns)
            elif kinds[column] in ("vector", "image", "audio", "text"):
                plan[name] = (kinds[column], column)
            else:
                raise UsageError(
                    f"{self.folder}: column {column!r} ({features[column]}) cannot be a modality; "
                    "use lists of floats, Image, Audio or strings"
                )
        if len(classes) < 2:
            raise UsageError(f"{self.folder}: the label column {label!r} has fewer than two classes")
        return label, classes, plan

    @functools.cached_property
    def info(self) -> DatasetInfo:
        label, classes, plan = self._plan
        splits = (
            "train / validation / test as shipped"
            if "val" in self._splits
            else ("train / test as shipped; validation carved from train (stratified, seed 0)")
        )
        return DatasetInfo(
            name=f"hf:{self.path}",
            modalities=tuple(plan),
            num_classes=len(classes),
            version=_fingerprint(self.folder, _read_card(self.folder)),
            license=self.card.get("license") or "not stated in the folder (see the dataset's own card)",
            citation=self.card.get("citation") or "not stated in the folder",
            homepage=self.card.get("homepage") or str(self.folder),
            description=self.card.get("description") or f"local Hugging Face dataset, label {label!r}",
            splits=splits,
            layout="save_to_disk DatasetDict or {train,validation,test}.parquet",
            needs_data_root=False,
        )

    def available(self, data_root: Path | None) -> tuple[bool, str]:
        if not self.folder.is_dir():
            return False, f"folder {self.folder} not found (hf: takes a local folder, nothing is downloaded)"
        return True, ""

    # -- loading ----------------------------------------------------------------------------------------
    def _labels(self, split: Any) -> np.ndarray:
        label, classes, _ = self._plan
        values = split[label]
        if isinstance(self._splits["train"].features[label], _class_label()):
            return np.asarray(values, dtype=np.int64)
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted({str(v) for v in values} - set(index))
        if unknown:
            raise UsageError(
                f"{self.folder}: labels {unknown[:3]} appear outside train; every class needs training samples"
            )
        return np.array([index[str(v)] for v in values], dtype=np.int64)

    def _vectors(self, column: str) -> dict[str, np.ndarray]:
        rows = {
            s: [np.asarray(v, dtype=np.float32) for v in d.with_format("numpy")[column]]
            for s, d in self._splits.items()
        }
        shapes = {r.shape for split in rows.values() for r in split}
        dims = {len(s) for s in shapes}
        if len(dims) != 1:
            raise UsageError(f"{self.folder}: column {column!r} mixes samples of different nesting")
        if len(shapes) > 1 and dims == {1}:
            raise UsageError(
                f"{self.folder}: column {column!r} holds vectors of different lengths "
                f"({sorted(s[0] for s in shapes)[:4]}...); give it one length"
            )
        target = tuple(max(s[i] for s in shapes) for i in range(dims.pop()))
        out = {}
        for split, values in rows.items():
            array = np.zeros((len(values), *target), dtype=np.float32)
            for i, v in enumerate(values):  # sequences shorter than the longest are zero-padded at the end
                array[(i, *(slice(0, n) for n in v.shape))] = v
            out[split] = array
        return out

    def _images(self, column: str) -> dict[str, np.ndarray]:
        from PIL import Image

        import datasets

        size, mode = int(self.card["image_size"]), self.card["image_mode"]
        raw = {s: d.cast_column(column, datasets.Image(decode=False))[column] for s, d in self._splits.items()}

        def open_image(item: dict[str, Any]) -> Any:
            return Image.open(io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"])

        if mode is None:
            mode = "L" if all(open_image(i).mode in ("L", "1", "I;16") for i in raw["train"]) else "RGB"
        out = {}
        for split, items in raw.items():
            images = [
                np.asarray(open_image(i).convert(mode).resize((size, size), Image.BILINEAR), np.float32) for i in items
            ]
            array = np.stack(images) / np.float32(255.0)
            out[split] = array[:, None] if mode == "L" else array.transpose(0, 3, 1, 2)
        return out

    def _audio(self, column: str) -> dict[str, np.ndarray]:
        import datasets
        from bench.media.decode import kaldi_fbank, pad_or_cut, read_wav

        frames, mels = int(self.card["audio_frames"]), int(self.card["n_mels"])
        out = {}
        with tempfile.TemporaryDirectory() as scratch:
            wav = Path(scratch) / "clip.wav"
            for split, data in self._splits.items():
                rows = []
                for item in data.cast_column(column, datasets.Audio(decode=False))[column]:
                    if item.get("bytes"):
                        wav.write_bytes(item["bytes"])
                        path = wav
                    else:
                        path = Path(item["path"])
                    samples, rate = read_wav(path, fix=f"store PCM WAV audio in column {column!r}")
                    features = kaldi_fbank(samples[0], rate, num_mel_bins=mels, window="hanning")
                    rows.append(pad_or_cut(features, frames))
                out[split] = np.stack(rows)[:, None].astype(np.float32)
        return out

    def _tokens(self, column: str) -> dict[str, np.ndarray]:
        from bench.datasets._jsonl_image_text import load_text_tokenizer, tokenize_texts

        tokenizer = load_text_tokenizer(self.card["text_model"])
        length = int(self.card["max_tokens"])
        out = {}
        for split, data in self._splits.items():
            texts = [t or "" for t in data[column]]
            array = np.zeros((len(texts), 2, length), dtype=np.int64)
            tokenize_texts(tokenizer, texts, length, array)
            out[split] = array
        return out

    def _columns(self, columns: list[str]) -> dict[str, np.ndarray]:
        return {
            s: np.stack([np.asarray(d[c], dtype=np.float32) for c in columns], axis=1) for s, d in self._splits.items()
        }

    def load(self, data_root: Path | None) -> LoadedData:
        import torch

        from bench.datasets._jsonl_image_text import text_kind

        _, _, plan = self._plan
        readers = {
            "vector": self._vectors,
            "image": self._images,
            "audio": self._audio,
            "text": self._tokens,
            "columns": self._columns,
        }
        kinds = {
            "vector": "vector",
            "columns": "vector",
            "image": "image",
            "audio": "spectrogram",
            "text": text_kind(self.card["text_model"]),
        }
        arrays = {name: readers[kind](column) for name, (kind, column) in plan.items()}
        modalities = tuple(
            ModalitySpec(name, tuple(arrays[name]["train"].shape[1:]), kinds[kind]) for name, (kind, _) in plan.items()
        )
        splits = {
            split: SplitData(
                {name: torch.from_numpy(arrays[name][split]) for name in plan}, torch.from_numpy(self._labels(data))
            )
            for split, data in self._splits.items()
        }
        return LoadedData(modalities, splits["train"], splits["test"], splits.get("val"))


def _class_label() -> type:
    import datasets

    return datasets.ClassLabel


def resolve(rest: str) -> HFFolder:
    """``hf:<folder>`` -> the folder's adapter (the registry calls this for names with the ``hf:`` prefix)."""
    if not rest.strip():
        raise UsageError("hf: needs a folder, e.g. --datasets hf:data/my_dataset")
    if ".." in Path(rest).parts:
        raise UsageError(
            f"hf:{rest}: give the folder without '..' (its name becomes the records folder); "
            "run from a directory above it or give an absolute path"
        )
    adapter = HFFolder(rest.rstrip("/"))
    ok, why = adapter.available(None)
    if not ok:
        raise UsageError(f"dataset 'hf:{rest}': {why}")
    try:
        adapter.info  # noqa: B018 - reads the features now, so a bad folder is one line at planning time
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - a folder datasets cannot read
        raise UsageError(
            f"dataset 'hf:{rest}' cannot be read: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from None
    return adapter
