"""Kinetics-Sounds, 31 classes (Arandjelovic and Zisserman, Look, Listen and Learn, ICCV 2017; this 31-class
version and its lists from OGM-GE, Peng et al., CVPR 2022): 10-second YouTube clips of the Kinetics dataset
(Kay et al., 2017) whose action can be heard. Audio (Kaldi fbank) + 3 RGB frames, in OGM-GE's protocol.

**Layout** under the data root::

    kinetics_sounds_splits/my_train.txt     OGM-GE data/KineticSound/my_train.txt: 14,799 rows <clip id>,10,<label>
    kinetics_sounds_splits/my_test.txt      OGM-GE data/KineticSound/my_test.txt:   2,597 rows
    kinetics_sounds/**/<clip id>.mp4        one video per clip, anywhere below kinetics_sounds/ (.mkv and .webm too)

Train ids are Kinetics' own ``<YouTube id>_<start>_<end>`` file names; test ids are ``<YouTube id>_<n>``. Labels
are 0..30; OGM-GE does not publish their class names. There is no validation split; the harness carves one.

**Missing clips.** Many Kinetics videos have left YouTube, so copies differ. By default every listed clip must
be present, so that numbers are comparable. ``BENCH_SKIP_MISSING_CLIPS=1`` (or the option
``skip_missing=True``) instead trains and tests on the clips present, dropping those without a video or without
an audio track, as the official loaders drop clips whose files do not exist; the cache manifest and
``bench data`` then report how many were dropped, and results are not comparable across copies.

**Audio** (OGM-GE ``data/KineticSound/process_audio.py`` on the WAV of ``data/VGGSound/mp4_to_wav.py``): the
audio track converted to 16 kHz 16-bit PCM with its channels kept (``ffmpeg -acodec pcm_s16le -ar 16000``;
here FFmpeg's libswresample through PyAV), minus its mean, Kaldi fbank of the first channel (128 mel bins,
Hanning window of 25 ms, 10 ms shift, no dither), zero-padded or cut to 1,024 frames, normalised as
``(fbank + 4.503877) / (2 * 5.141276)``: (1, 1024, 128) float32.

**Frames** (OGM-GE ``dataset/dataset.py`` ``AVDataset``): the first frame of every second, then frames
``k * (n // 3)`` for k = 0, 1, 2 (seconds 0, 3 and 6 of a 10-s clip), RGB, resized to 224 x 224 with PIL's
bilinear filter (the test transform), stored as uint8 and normalised with the ImageNet mean and std by the
frames encoder: (3, 3, 224, 224).

**Differences from the official code**: frames are decoded from the video directly (not through JPEG files);
no training augmentation (``RandomResizedCrop(224)`` + flip): every split gets the test transform. A cache of
the full lists takes about 9 GB (audio) + 8 GB (frames); preparation decodes every frame of every clip once.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import DatasetSummary, check_disjoint_lists, label_counts
from bench.errors import UsageError
from bench.media.cache import Progress, file_fingerprint
from bench.media.decode import MissingStream, clip_fbank, decode_audio, sampled_frames, text_lines
from bench.media.prepared import PreparedDataset, ScratchArrays
from bench.protocol import DatasetInfo, ModalitySpec

__all__ = ["KINETICS_SOUNDS", "KineticsSounds", "ogm_ge_fbank"]

LISTS = {"train": "kinetics_sounds_splits/my_train.txt", "test": "kinetics_sounds_splits/my_test.txt"}
VIDEOS = "kinetics_sounds"
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm")
SKIP_ENV = "BENCH_SKIP_MISSING_CLIPS"
NUM_CLASSES = 31
SAMPLE_RATE = 16000
#: OGM-GE process_audio.py's normalisation of the fbank.
FBANK_MEAN, FBANK_STD = -4.503877, 5.141276
OGM_GE_REPO = "https://github.com/GeWu-Lab/OGM-GE_CVPR2022"
KINETICS = "https://github.com/cvdfoundation/kinetics-dataset"
_REDOWNLOAD = f"download it again, or delete it and set {SKIP_ENV}=1 to go without it"

INFO = DatasetInfo(
    name="kinetics_sounds",
    modalities=("audio", "visual"),
    num_classes=NUM_CLASSES,
    version="1",
    license="Kinetics annotations CC BY 4.0; videos belong to their YouTube uploaders; OGM-GE lists MIT",
    citation="Arandjelovic and Zisserman, Look, Listen and Learn, ICCV 2017; Kay et al., The Kinetics Human Action "
    "Video Dataset, arXiv:1705.06950, 2017; lists of Peng, Wei, Deng, Wang and Hu (OGM-GE), CVPR 2022",
    homepage=f"{KINETICS} (videos) and {OGM_GE_REPO} (data/KineticSound lists)",
    description="sound + 3 RGB frames of 10-s YouTube clips, 31 action classes (OGM-GE protocol: normalised "
    "Kaldi fbank 1024x128)",
    splits="OGM-GE's 14,799 train / 2,597 test clips; validation carved from train",
    layout="kinetics_sounds_splits/my_{train,test}.txt and kinetics_sounds/**/<clip id>.mp4 (or .mkv, .webm)",
    # The official training budget (OGM-GE main.py: 100 epochs, batch 64).
    default_epochs=100,
    default_batch_size=64,
)


def ogm_ge_fbank(samples: np.ndarray, rate: int, *, length: int = 1024) -> np.ndarray:
    """(length, 128) float32: the Kaldi fbank of OGM-GE ``process_audio.py``, normalised with its mean and std."""
    return ((clip_fbank(samples, rate, length=length) - FBANK_MEAN) / (FBANK_STD * 2)).astype(np.float32)


def _list_rows(path: Path) -> list[tuple[str, int]]:
    """(clip id, label) of each ``<clip id>,10,<label>`` line; a bad line is a UsageError."""
    fix = f"copy it again from {OGM_GE_REPO} data/KineticSound/"
    rows = []
    for number, line in text_lines(path, fix, encoding="utf-8-sig", describe=str):
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3 or not fields[0] or not fields[2].isdigit() or int(fields[2]) >= NUM_CLASSES:
            raise UsageError(
                f"{path} line {number} is {line.strip()!r}; expected <clip id>,10,<label 0-30>: "
                f"copy it again from {OGM_GE_REPO} data/KineticSound/"
            )
        rows.append((fields[0], int(fields[2])))
    if not rows:
        raise UsageError(f"{path} lists no clip; copy it again from {OGM_GE_REPO} data/KineticSound/")
    return rows


def _index_videos(folder: Path) -> dict[str, Path]:
    """Clip id (file name without suffix) -> video file, for every video below ``folder``."""
    found: dict[str, Path] = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in VIDEO_SUFFIXES:
                continue
            path = Path(parent) / name
            if stem in found:
                raise UsageError(f"two videos for clip {stem}: {found[stem]} and {path}; keep one")
            found[stem] = path
    return found


@dataclass(frozen=True)
class KineticsSounds(PreparedDataset):
    """Kinetics-Sounds in OGM-GE's protocol (see the module docstring). ``frames``, ``image_size`` and
    ``fbank_frames`` default to the official 3, 224 and 1,024; other values make a smaller variant for quick
    experiments and tests. Options are part of the cache key; register a variant under its own name."""

    info: DatasetInfo = INFO
    frames: int = 3
    image_size: int = 224
    fbank_frames: int = 1024
    skip_missing: bool = False

    def __post_init__(self) -> None:
        if self.frames < 1 or self.image_size < 8 or self.fbank_frames < 1:
            raise ValueError(
                f"need frames >= 1, image_size >= 8 and fbank_frames >= 1, got {self.frames}, "
                f"{self.image_size}, {self.fbank_frames}"
            )

    def skips_missing(self) -> bool:
        """Whether absent clips are dropped (``skip_missing`` or ``BENCH_SKIP_MISSING_CLIPS=1``)."""
        return self.skip_missing or os.environ.get(SKIP_ENV, "0").strip().lower() in ("1", "true", "yes", "on")

    # -- where things are -------------------------------------------------------------------------
    def _lists(self, data_root: Path) -> dict[str, list[tuple[str, int]]]:
        splits = {split: _list_rows(Path(data_root) / rel) for split, rel in LISTS.items()}
        check_disjoint_lists(
            splits, f"{LISTS['train']} and {LISTS['test']}", f"copy the lists again from {OGM_GE_REPO}"
        )
        return splits

    def _present(self, data_root: Path) -> tuple[dict[str, list[tuple[str, int, Path]]], list[str]]:
        """Listed clips with their video, per split, and the ids of listed clips without one."""
        videos = _index_videos(Path(data_root) / VIDEOS)
        present: dict[str, list[tuple[str, int, Path]]] = {}
        absent: list[str] = []
        for split, rows in self._lists(data_root).items():
            present[split] = [(clip, label, videos[clip]) for clip, label in rows if clip in videos]
            absent += [clip for clip, _ in rows if clip not in videos]
        return present, absent

    def _no_data_root(self) -> str:
        return f"no data root; set BENCH_DATA or --data-root to the folder holding {LISTS['train']} and {VIDEOS}/"

    def _missing(self, data_root: Path) -> str | None:
        for rel in LISTS.values():
            if not (Path(data_root) / rel).is_file():
                return (
                    f"{Path(data_root) / rel} not found; copy OGM-GE's data/KineticSound/my_{{train,test}}.txt "
                    f"({OGM_GE_REPO}) there"
                )
        folder = Path(data_root) / VIDEOS
        if not folder.is_dir():
            return (
                f"{folder} not found; download the Kinetics clips ({KINETICS}) and save each as "
                f"{VIDEOS}/<clip id>.mp4, the ids of {LISTS['train']} and {LISTS['test']}"
            )
        present, absent = self._present(data_root)
        empty = [split for split, rows in present.items() if not rows]
        if empty:
            return f"none of the {empty[0]} clips of {Path(data_root) / LISTS[empty[0]]} has a video under {folder}"
        if absent and not self.skips_missing():
            total = len(absent) + sum(len(rows) for rows in present.values())
            return (
                f"{len(absent):,} of {total:,} listed clips have no video under {folder} (e.g. {absent[0]}); "
                f"download them, or set {SKIP_ENV}=1 to use the clips present"
            )
        return None

    def _key(self, data_root: Path) -> dict[str, Any]:
        present, _ = self._present(data_root)
        videos = [path for rows in present.values() for _, _, path in rows]
        lists = hashlib.sha256(b"".join((Path(data_root) / rel).read_bytes() for rel in LISTS.values())).hexdigest()
        return {
            "frames": self.frames,
            "image_size": self.image_size,
            "fbank_frames": self.fbank_frames,
            "skip_missing": self.skips_missing(),
            "lists": lists[:16],
            "videos": file_fingerprint(Path(data_root), videos),
        }

    def _describe_cache(self, manifest: dict[str, Any]) -> str:
        sizes, dropped = manifest["split_sizes"], len(manifest["dropped"])
        return f"{sizes['train']:,} train / {sizes['test']:,} test clips" + (
            f", {dropped:,} dropped" if dropped else ""
        )

    # -- preparing and loading --------------------------------------------------------------------
    def _clip_arrays(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        samples = decode_audio(path, SAMPLE_RATE, fix=_REDOWNLOAD)
        frames = sampled_frames(path, self.frames, self.image_size, fix=_REDOWNLOAD)
        return ogm_ge_fbank(samples, SAMPLE_RATE, length=self.fbank_frames), frames

    def _build(
        self, data_root: Path, scratch: ScratchArrays, progress: Progress | None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        present, absent = self._present(data_root)
        dropped = {clip: "no video" for clip in absent}
        steps, done = sum(len(rows) for rows in present.values()), 0
        arrays: dict[str, np.ndarray] = {}
        kept_ids: dict[str, list[str]] = {}
        for split, rows in present.items():
            size = self.image_size
            audio = scratch.new(f"{split}_audio", (len(rows), 1, self.fbank_frames, 128), np.float32)
            visual = scratch.new(f"{split}_visual", (len(rows), 3, self.frames, size, size), np.uint8)
            labels, kept_ids[split] = [], []
            for clip, label, path in rows:
                try:
                    fbank, frames = self._clip_arrays(path)
                except MissingStream as exc:
                    if not self.skips_missing():
                        raise
                    dropped[clip] = str(exc).split(";")[0]
                else:
                    row = len(labels)
                    audio[row, 0], visual[row] = fbank, frames
                    labels.append(label)
                    kept_ids[split].append(clip)
                done += 1
                if progress is not None:
                    progress(done, steps)
            if not labels:
                raise UsageError(
                    f"no {split} clip of {Path(data_root) / LISTS[split]} could be used (all lack a video "
                    "or an audio track)"
                )
            arrays[f"{split}_audio"], arrays[f"{split}_visual"] = audio[: len(labels)], visual[: len(labels)]
            arrays[f"{split}_label"] = np.array(labels, dtype=np.int64)
        manifest = {"clips": kept_ids, "dropped": dropped}
        return arrays, manifest

    def modalities(self, shapes: object = None) -> tuple[ModalitySpec, ModalitySpec]:
        size = self.image_size
        return (
            ModalitySpec("audio", (1, self.fbank_frames, 128), kind="spectrogram_resnet18"),
            ModalitySpec("visual", (3, self.frames, size, size), kind="frames_resnet18"),
        )

    def _describe_raw(self, data_root: Path) -> DatasetSummary | None:
        """The listed training clips with a video; None when absent clips are skipped, since which clips lack
        an audio track is only known by decoding them."""
        if self.skips_missing():
            return None
        present, _ = self._present(data_root)
        labels = [label for _, label, _ in present["train"]]
        return DatasetSummary(self.modalities(), label_counts(labels), shipped_val=False)


KINETICS_SOUNDS = KineticsSounds()
