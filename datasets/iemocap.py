"""IEMOCAP in MLA's preprocessed three-modality layout: speech fbank, a face image and the transcript's tokens,
4 emotion classes.

Expected layout under the data root (``--data-root`` or ``BENCH_DATA``), the files MLA's preprocessing writes
(``Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation``, ``data/preprocess_iemo.py``; lists from
its ``data/`` folder)::

    iemocap/my_train_iemo.txt  my_test_iemo.txt     <utt>.mp4 [split|sign] <transcript> [split|sign] <label>
    iemocap/audio/{train,test}_fbank/<utt>.npy      Kaldi fbank, float32 (1024, 128): 1024 frames x 128 bins
    iemocap/visual/{train,test}_imgs/<utt>/*.jpg    face crops at 1 fps, 256 x 256
    iemocap/text_token/{train,test}_token/<utt>_token.npy   BERT ids (1, 256), no special tokens
    iemocap/text_token/{train,test}_token/<utt>_pm.npy      padding mask (1, 256), 1.0 = padding

IEMOCAP itself (https://sail.usc.edu/iemocap/) needs a signed release form and may not be redistributed; MLA
released the lists and the preprocessing code but not every step before it (utterance clips, face crops), so
users run that preprocessing on their own copy.

**Splits**: MLA's lists, 3,318 train / 1,107 test utterances, drawn at random over all five sessions (speakers
overlap; not leave-one-session-out). MLA's dev list was not released and its ``main.py`` trains on train and
tests on test, so the harness carves the validation split from train.

**Classes**: Angry, Happy, Neutral, Sad -> 0..3, the sorted class list as MLA's ``Modal3Dataset``
(``dataset/dataset.py``: ``sorted(classes)`` of ``stat_iemo.txt``). The label is the last field of a list line.

**Modalities**, in MLA's mask order (audio, visual, text; ``Modal3Dataset.__getitem__``):

* ``audio`` of kind ``spectrogram_resnet18``, shape (1, 1024, 128) float32: the fbank as stored, not normalised
  (MLA defines normalisation constants for it but does not apply them).
* ``visual`` of kind ``frames_resnet18``, shape (3, 256, 256) uint8: the middle image of the utterance's folder,
  as MLA takes ``allimages[int(len / 2)]``; MLA lists the folder with ``os.listdir`` (an arbitrary order), here
  the images (``.jpg``, ``.jpeg``, ``.png``) are sorted by name first. Decoded with PIL, shorter side resized to
  ``image_size`` and centre-cropped (the identity on MLA's 256 x 256 crops, as its test transform
  ``Resize(256)`` + ``CenterCrop(256)``); the encoder normalises uint8 batches with the ImageNet statistics.
  MLA's training-time augmentation (timm ``create_transform`` with colour jitter) is not applied.
* ``text`` of kind ``tokens``, shape (2, 256): the stored ids and attention mask = 1 - padding mask. MLA
  tokenised with ``bert-base-uncased`` without special tokens; the default text encoder, all-MiniLM-L6-v2, uses
  the same uncased WordPiece vocabulary of 30,522 entries (e.g. [CLS] = 101, "the" = 1996), so the ids are
  read as they are. ``text_model`` names another local model directory; ids beyond its vocabulary are refused.

**Missing files**: MLA's dataset silently skips utterances whose files are absent; here a missing or damaged
file is an error naming it, unless ``skip_missing=True`` (MLA's behaviour), which records the skipped
utterances in the cache manifest. The cache holds about 3.2 GB for MLA's 4,425 utterances (per utterance a
512 KiB fbank, a 192 KiB image and 4 KiB of tokens).

Preparation runs once into the cache (:mod:`bench.media.cache`): ``python -m bench data prepare iemocap`` or the first
``load``. **Licence**: the IEMOCAP release form: research use, no redistribution.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import DatasetSummary, label_counts
from bench.datasets._jsonl_image_text import IMAGE_SUFFIXES, read_rgb, text_kind, text_model_dir
from bench.errors import UsageError
from bench.media.cache import Progress, read_manifest
from bench.media.decode import reason, text_lines
from bench.media.prepared import PreparedDataset, ScratchArrays
from bench.protocol import DatasetInfo

__all__ = ["CLASSES", "IEMOCAP", "INFO", "IemocapDataset", "Utterance"]

FOLDER = "iemocap"
LISTS = {"train": "my_train_iemo.txt", "test": "my_test_iemo.txt"}
SEPARATOR = " [split|sign] "
CLASSES = ("Angry", "Happy", "Neutral", "Sad")  # sorted, as MLA's Modal3Dataset
_RESTORE = "restore it from your IEMOCAP preprocessing (MLA's data/preprocess_iemo.py)"

INFO = DatasetInfo(
    name="iemocap",
    modalities=("audio", "visual", "text"),
    num_classes=4,
    version="1",
    license="IEMOCAP release form (USC SAIL): research use only, no redistribution; MLA's lists: no licence file",
    citation="Busso et al., IEMOCAP: Interactive emotional dyadic motion capture database, Language Resources and "
    "Evaluation 2008; 4-class lists and preprocessing of Zhang, Latham and Zhang, MLA, CVPR 2024 "
    "(github.com/Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation)",
    homepage="https://sail.usc.edu/iemocap/ (release form) and "
    "https://github.com/Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation (lists, preprocessing)",
    description="speech fbank (ResNet-18) + middle face image (ResNet-18) + transcript tokens (MiniLM), "
    "Angry / Happy / Neutral / Sad",
    splits="MLA's my_train_iemo.txt (3,318) / my_test_iemo.txt (1,107); validation carved from train",
    layout="iemocap/my_{train,test}_iemo.txt, iemocap/audio/{train,test}_fbank/<utt>.npy, "
    "iemocap/visual/{train,test}_imgs/<utt>/*.jpg, iemocap/text_token/{train,test}_token/<utt>_{token,pm}.npy",
    # Budget choices, not measured on this dataset (no copy of it was at hand when the adapter was written).
    default_epochs=20,
    default_batch_size=32,
)


@dataclass(frozen=True)
class Utterance:
    name: str
    label: int
    audio: Path
    images: tuple[Path, ...]
    token: Path
    padding: Path

    @property
    def middle_image(self) -> Path:
        return self.images[len(self.images) // 2]

    @property
    def files(self) -> list[Path]:
        return [self.audio, self.token, self.padding, *self.images]


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"{path} not found; {_RESTORE}") from None
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"cannot read {path} ({reason(exc)}); the file is damaged: {_RESTORE}") from None


@dataclass(frozen=True)
class IemocapDataset(PreparedDataset):
    """IEMOCAP in MLA's layout (see the module docstring). Options change the cache key but not
    ``info.version``: register a variant under its own name to use other values."""

    info: DatasetInfo = INFO
    image_size: int = 256
    text_model: str | None = None
    skip_missing: bool = False

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")

    def _folder(self, root: Path) -> Path:
        return root / FOLDER

    def _missing(self, root: Path) -> str | None:
        for name in LISTS.values():
            path = self._folder(root) / name
            if not path.is_file():
                return (
                    f"{path} not found; expected {self.info.layout} (lists from MLA's data/ folder, "
                    f"data from {self.info.homepage})"
                )
        return None

    def _parse_list(self, path: Path) -> list[tuple[str, int]]:
        out = []
        for number, line in text_lines(path, "copy it again from MLA's data/ folder"):
            fields = line.strip().split(SEPARATOR)
            if len(fields) < 2:
                raise UsageError(
                    f"{path} line {number} is not '<utt>.mp4{SEPARATOR}<transcript>{SEPARATOR}<label>'; "
                    "copy the list again from MLA's data/ folder"
                )
            label = fields[-1].strip()
            if label not in CLASSES:
                raise UsageError(
                    f"{path} line {number} has label {label!r}; MLA's 4-class lists use {', '.join(CLASSES)}"
                )
            out.append((fields[0].split(".mp4")[0], CLASSES.index(label)))
        if not out:
            raise UsageError(f"{path} lists no utterance; copy it again from MLA's data/ folder")
        return out

    def _utterance(self, root: Path, split: str, name: str, label: int) -> Utterance | str:
        """The utterance's files, or the first missing one (as a message)."""
        folder = self._folder(root)
        audio = folder / "audio" / f"{split}_fbank" / f"{name}.npy"
        tokens = folder / "text_token" / f"{split}_token"
        token, padding = tokens / f"{name}_token.npy", tokens / f"{name}_pm.npy"
        for path in (audio, token, padding):
            if not path.is_file():
                return f"{path} not found"
        frames = folder / "visual" / f"{split}_imgs" / name
        if not frames.is_dir():
            return f"{frames} not found (the folder of the utterance's face images)"
        images = tuple(sorted(p for p in frames.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        if not images:
            return f"{frames} holds no .jpg, .jpeg or .png image"
        return Utterance(name, label, audio, images, token, padding)

    def _utterances(self, root: Path) -> tuple[dict[str, list[Utterance]], dict[str, list[str]]]:
        """Per split, the listed utterances whose files are all present; and what was skipped (only with
        ``skip_missing``; otherwise the first absent file is a UsageError)."""
        kept: dict[str, list[Utterance]] = {}
        skipped: dict[str, list[str]] = {}
        for split, list_name in LISTS.items():
            kept[split], skipped[split] = [], []
            for name, label in self._parse_list(self._folder(root) / list_name):
                found = self._utterance(root, split, name, label)
                if isinstance(found, Utterance):
                    kept[split].append(found)
                elif self.skip_missing:
                    skipped[split].append(name)
                else:
                    raise UsageError(f"{found}, listed in {list_name}: {_RESTORE}, or remove its line from the list")
            if not kept[split]:
                raise UsageError(
                    f"no utterance of {list_name} has all its files under {self._folder(root)}; "
                    f"expected {self.info.layout}"
                )
        return kept, skipped

    def _sources(self, root: Path) -> list[Path]:
        kept, _ = self._utterances(root)
        files = [self._folder(root) / name for name in LISTS.values()]
        for utterances in kept.values():
            for utterance in utterances:
                files += utterance.files
        return files

    def _options(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "skip_missing": self.skip_missing}

    def _kinds(self) -> dict[str, str]:
        return {"audio": "spectrogram_resnet18", "visual": "frames_resnet18", "text": text_kind(self.text_model)}

    # -- reading one utterance --------------------------------------------------------------------
    def _fbank(self, path: Path, shape: tuple[int, ...] | None) -> np.ndarray:
        fbank = _read_npy(path)
        if fbank.ndim != 2 or not np.issubdtype(fbank.dtype, np.floating):
            raise UsageError(
                f"{path} is {fbank.dtype}{list(fbank.shape)}; expected a float (frames, bins) fbank "
                "such as MLA's (1024, 128): " + _RESTORE
            )
        if shape is not None and fbank.shape != shape:
            raise UsageError(f"{path} has shape {list(fbank.shape)}, the other fbanks {list(shape)}; " + _RESTORE)
        if not np.isfinite(fbank).all():
            raise UsageError(f"{path} holds NaN or infinite values; {_RESTORE}")
        return fbank

    def _tokens(self, utterance: Utterance, length: int | None) -> np.ndarray:
        ids, padding = _read_npy(utterance.token).reshape(-1), _read_npy(utterance.padding).reshape(-1)
        if not np.issubdtype(ids.dtype, np.integer) or (length is not None and len(ids) != length):
            raise UsageError(
                f"{utterance.token} is {ids.dtype}[{len(ids)}]; expected integer token ids of the "
                "same length as the other utterances' (MLA: 256): " + _RESTORE
            )
        if padding.shape != ids.shape or not np.isin(padding, (0, 1)).all():
            raise UsageError(f"{utterance.padding} is not a 0/1 padding mask of {len(ids)} entries; {_RESTORE}")
        if ids.min() < 0:
            raise UsageError(f"{utterance.token} holds negative token ids; {_RESTORE}")
        return np.stack([ids.astype(np.int64), 1 - padding.astype(np.int64)])

    def _describe_raw(self, root: Path) -> DatasetSummary:
        """The lists' labels of the utterances whose files are present; the shapes from the ``.npy``
        headers of the first training utterance (no image is decoded)."""
        kept, _ = self._utterances(root)
        first = kept["train"][0]
        fbank = np.load(first.audio, mmap_mode="r", allow_pickle=False).shape
        tokens = np.load(first.token, mmap_mode="r", allow_pickle=False).size
        shapes = {"audio": (1, *fbank), "visual": (3, self.image_size, self.image_size), "text": (2, tokens)}
        labels = [u.label for u in kept["train"]]
        return DatasetSummary(self.modalities(shapes), label_counts(labels), shipped_val=False)

    # -- building ---------------------------------------------------------------------------------
    def _build(
        self, root: Path, scratch: ScratchArrays, progress: Progress | None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        kept, skipped = self._utterances(root)
        first = kept["train"][0]
        fbank_shape = self._fbank(first.audio, None).shape
        token_length = self._tokens(first, None).shape[1]
        total = sum(len(u) for u in kept.values())
        done = 0
        arrays: dict[str, np.ndarray] = {}
        for split, utterances in kept.items():
            n = len(utterances)
            audio = scratch.new(f"{split}_audio", (n, 1, *fbank_shape), np.float32)
            visual = scratch.new(f"{split}_visual", (n, 3, self.image_size, self.image_size), np.uint8)
            text = scratch.new(f"{split}_text", (n, 2, token_length), np.int64)
            for i, utterance in enumerate(utterances):
                audio[i, 0] = self._fbank(utterance.audio, fbank_shape)
                visual[i] = read_rgb(utterance.middle_image, self.image_size, self.image_size)
                text[i] = self._tokens(utterance, token_length)
                done += 1
                if progress is not None:
                    progress(done, total)
            arrays.update(
                {
                    f"{split}_audio": audio,
                    f"{split}_visual": visual,
                    f"{split}_text": text,
                    f"{split}_label": np.array([u.label for u in utterances], dtype=np.int64),
                }
            )
        max_id = max(int(arrays[f"{s}_text"][:, 0].max()) for s in kept)
        manifest = {
            "classes": list(CLASSES),
            "max_token_id": max_id,
            "skipped_missing": {s: names for s, names in skipped.items() if names},
            "utterances": {s: [u.name for u in utterances] for s, utterances in kept.items()},
        }
        return arrays, manifest

    def _check_prepared(self, directory: Path) -> None:
        """The stored ids must index the text model's embedding table (else the encoder fails mid-training)."""
        folder = text_model_dir(self.text_model)
        vocabulary = int(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("vocab_size", 0))
        max_id = int(read_manifest(directory)["max_token_id"])
        if vocabulary and max_id >= vocabulary:
            raise UsageError(
                f"the token ids in {directory} reach {max_id}, beyond the {vocabulary}-entry vocabulary "
                f"of the text model in {folder}; use a model with bert-base-uncased's vocabulary"
            )


IEMOCAP = IemocapDataset()
