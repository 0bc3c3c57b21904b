"""CREMA-D (Cao et al., IEEE Trans. Affective Computing 2014): audio-visual emotion recognition, 6 classes,
7,442 clips of 91 actors speaking 12 sentences. Two registered protocols, one per official code base:

========================  ===========================================  ===========================================
                          ``cremad`` (OGM-GE protocol, the default)    ``cremad_mla`` (MLA protocol)
========================  ===========================================  ===========================================
split (train / test)      OGM-GE ``data/CREMAD/{train,test}.csv``:     MLA ``data/my_{train,test}_cre.txt``:
                          6,698 / 744 clips, rows ``clip,EMO``         6,698 / 744 clips, rows ``clip.flv Name``
                                                                       (another random split: only 71 test clips
                                                                       are shared)
classes 0..5              NEU HAP SAD FEA DIS ANG (``class_dict`` of   Anger Disgust Fear Happy Neutral Sad
                          OGM-GE ``dataset/CramedDataset.py``)         (sorted names, MLA ``dataset/dataset.py``)
audio                     (1, 257, 188) log-magnitude STFT             (1, 1024, 128) Kaldi fbank
frames                    (3, 1, 224, 224): 1 frame                    (3, 3, 224, 224): 3 frames
========================  ===========================================  ===========================================

Neither ships a validation split; the harness carves one from train (the official code selects on test).

**Layout** under the data root, the media as the CREMA-D repository ships them (Git LFS files)::

    cremad/AudioWAV/<clip>.wav              16 kHz mono 16-bit PCM
    cremad/VideoFlash/<clip>.flv            FLV video (30 fps)
    cremad/lfs_manifest_AudioWAV.tsv        path, sha256, size_bytes of every media file (the LFS object ids)
    cremad/lfs_manifest_VideoFlash.tsv
    cremad/splits_ogm_ge/{train,test}.csv   cremad: OGM-GE's data/CREMAD/{train,test}.csv
    cremad/splits_mla/my_{train,test}_cre.txt   cremad_mla: MLA's data/my_{train,test}_cre.txt

**Verification.** Before decoding, every media file of the split is checked against the SHA-256 manifests; a
mismatch names the files. Digests are remembered per file (size and modification time) in
``<cache root>/cremad/sha256-memo.json``, so the 7,442 x 2 files are hashed once. ``BENCH_VERIFY_MEDIA=0`` (or
the option ``verify=False``) turns verification off for a re-encoded copy; decoding then also checks that no
stream ends well before its declared duration (a truncated file).

**Audio, OGM-GE protocol** (``dataset/CramedDataset.py``): ``librosa.load(sr=22050)`` (channels averaged,
resampled 16 kHz -> 22.05 kHz, here with :func:`bench.media.decode.resample`), ``np.tile(x, 3)[:3 * 22050]``, clipped to
[-1, 1], ``librosa.stft(n_fft=512, hop_length=353)`` (periodic Hann, centred frames, reflect padding as librosa
< 0.10 did), ``log(|S| + 1e-7)``; not normalised. **Audio, MLA protocol** (``data/extract_fbank.py``):
the waveform minus its mean, Kaldi fbank with 128 mel bins, Hanning window of 25 ms, 10 ms shift, no dither,
zero-padded or cut to 1,024 frames (:func:`bench.media.decode.clip_fbank`); not normalised.

**Frames** (``data/CREMAD/video_preprocessing.py`` of both repositories): the first frame of every second
(frame n with ``n % int(fps) == 0``), RGB, resized to 224 x 224 with PIL's bilinear filter (the test transform
``Resize((224, 224))``), stored as uint8 and normalised with the ImageNet mean and std by the frames encoder.
OGM-GE takes 1 frame, MLA frames ``k * (n // 3)`` for k = 0, 1, 2 (:func:`bench.media.decode.pick_frames`).

**Differences from the official code**, all forced by decoding once into a cache or by determinism: frames
are taken in time order, where the official loaders index an unsorted ``os.listdir`` (file-system dependent
order); the frames are decoded from the video directly instead of through JPEG files (no JPEG loss); there is
no training augmentation (the official ``RandomResizedCrop(224)`` + horizontal flip): every split gets the test
transform; the resampler is scipy's polyphase filter, not resampy/soxr. The spectrogram and fbank are exactly
the official formulas.

**Cache sizes** (float32 audio, uint8 frames): OGM-GE about 1.4 GB + 1.1 GB, MLA about 3.9 GB + 3.4 GB;
preparation writes through disk-backed scratch arrays, so it never holds them in memory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bench.data import DatasetSummary, check_disjoint_lists, label_counts
from bench.errors import UsageError
from bench.media.cache import Progress, cache_root, file_fingerprint
from bench.media.decode import (
    clip_fbank,
    log_stft,
    read_wav,
    resample,
    sampled_frames,
    tile_to,
    verify_sha256,
)
from bench.media.prepared import PreparedDataset, ScratchArrays
from bench.protocol import DatasetInfo, ModalitySpec

__all__ = ["CREMAD", "CREMAD_MLA", "CremaD", "mla_fbank", "ogm_ge_spectrogram"]

FOLDER = "cremad"
MEDIA = {"audio": ("AudioWAV", ".wav"), "visual": ("VideoFlash", ".flv")}
SPLIT_FILES = {
    "ogm_ge": {"train": "splits_ogm_ge/train.csv", "test": "splits_ogm_ge/test.csv"},
    "mla": {"train": "splits_mla/my_train_cre.txt", "test": "splits_mla/my_test_cre.txt"},
}
SPLIT_SOURCES = {
    "ogm_ge": "OGM-GE's data/CREMAD/{train,test}.csv (https://github.com/GeWu-Lab/OGM-GE_CVPR2022)",
    "mla": "MLA's data/my_{train,test}_cre.txt "
    "(https://github.com/Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation)",
}
#: Class index order of each protocol (OGM-GE ``class_dict``; MLA ``sorted(stat_cre.txt)``).
CLASSES = {
    "ogm_ge": ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG"),
    "mla": ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad"),
}
FRAMES = {"ogm_ge": 1, "mla": 3}
VERIFY_ENV = "BENCH_VERIFY_MEDIA"
HOMEPAGE = "https://github.com/CheyneyComputerScience/CREMA-D"
_GET_MEDIA = (
    f"the media are Git LFS files: git lfs clone {HOMEPAGE} (or https://gitlab.com/cs-cooper-lab/crema-d-mirror) "
    "and put its AudioWAV/ and VideoFlash/ there"
)
_REDOWNLOAD = "download it again (git lfs pull in your CREMA-D clone)"

# OGM-GE's audio: librosa.load(sr=22050), 3 s, STFT n_fft 512 hop 353 -> (257, 188)
OGM_GE_RATE = 22050
OGM_GE_SECONDS = 3
OGM_GE_N_FFT = 512
OGM_GE_HOP = 353


def ogm_ge_spectrogram(samples: np.ndarray, rate: int, *, pad_mode: str = "reflect") -> np.ndarray:
    """(257, 188) float32 log-magnitude spectrogram of OGM-GE ``CramedDataset.__getitem__``: channels averaged
    and resampled to 22,050 Hz (``librosa.load(sr=22050)``), tiled to 3 s (``np.tile(x, 3)[:66150]``; tiled
    more often if a clip were shorter than 1 s), clipped to [-1, 1], ``log(|stft(n_fft=512, hop=353)| + 1e-7)``."""
    mono = resample(np.atleast_2d(samples).mean(axis=0), rate, OGM_GE_RATE)
    tiled = np.clip(tile_to(mono, OGM_GE_SECONDS * OGM_GE_RATE, repeats=3), -1.0, 1.0)
    return log_stft(tiled, OGM_GE_N_FFT, OGM_GE_HOP, pad_mode=pad_mode)


def mla_fbank(samples: np.ndarray, rate: int, *, length: int = 1024) -> np.ndarray:
    """(length, 128) float32 Kaldi fbank of MLA ``data/extract_fbank.py`` at the file's own rate, unnormalised."""
    return clip_fbank(samples, rate, length=length)


def _info(protocol: str) -> DatasetInfo:
    mla = protocol == "mla"
    return DatasetInfo(
        name="cremad_mla" if mla else "cremad",
        modalities=("audio", "visual"),
        num_classes=6,
        version="1",
        license="ODbL 1.0 (database) / DbCL 1.0 (contents); split lists MIT (OGM-GE)"
        + ("; MLA lists unlicensed" if mla else ""),
        citation="Cao, Cooper, Keutmann, Gur, Nenkova and Verma, CREMA-D: Crowd-sourced Emotional Multimodal Actors "
        "Dataset, IEEE Trans. Affective Computing 5(4), 2014; protocol of "
        + ("Zhang, Latham and Zitnik (MLA), CVPR 2024" if mla else "Peng, Wei, Deng, Wang and Hu (OGM-GE), CVPR 2022"),
        homepage=HOMEPAGE,
        description="speech audio + face video, 6 intended emotions; "
        + (
            "MLA protocol: Kaldi fbank 1024x128, 3 frames, classes in sorted-name order"
            if mla
            else "OGM-GE protocol: log-STFT 257x188, 1 frame, classes NEU HAP SAD FEA DIS ANG"
        ),
        splits=(
            "MLA's random split 6,698 train / 744 test (data/my_{train,test}_cre.txt)"
            if mla
            else "OGM-GE's random split 6,698 train / 744 test (data/CREMAD/{train,test}.csv)"
        )
        + "; validation carved from train",
        layout=f"{FOLDER}/AudioWAV/<clip>.wav, {FOLDER}/VideoFlash/<clip>.flv, "
        f"{FOLDER}/lfs_manifest_{{AudioWAV,VideoFlash}}.tsv, "
        f"{FOLDER}/{SPLIT_FILES[protocol]['train'].rsplit('/', 1)[0]}/"
        + ("my_{train,test}_cre.txt" if mla else "{train,test}.csv"),
        # The official training budget of both repositories (main.py: 100 epochs, batch 64).
        default_epochs=100,
        default_batch_size=64,
    )


def _split_rows(path: Path, protocol: str) -> list[tuple[str, int]]:
    """(clip, class index) of each line of a split file of ``protocol``; a bad line is a UsageError."""
    classes = CLASSES[protocol]
    rows = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path} ({exc}); copy it again from {SPLIT_SOURCES[protocol]}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        clip, _, label = line.strip().partition("," if protocol == "ogm_ge" else ".flv ")
        if label.strip() not in classes or not clip:
            expected = "<clip>,<EMO>" if protocol == "ogm_ge" else "<clip>.flv <Name>"
            raise UsageError(
                f"{path} line {number} is {line.strip()!r}; expected {expected} with a class of "
                f"{', '.join(classes)}: copy the file again from {SPLIT_SOURCES[protocol]}"
            )
        rows.append((clip.strip(), classes.index(label.strip())))
    if not rows:
        raise UsageError(f"{path} lists no clip; copy it again from {SPLIT_SOURCES[protocol]}")
    return rows


def _read_manifest_tsv(path: Path) -> dict[str, tuple[str, int]]:
    """``relative path -> (sha256, size)`` of one LFS manifest (header ``path sha256 size_bytes``)."""
    entries = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path} ({exc}); copy it again, or set {VERIFY_ENV}=0") from None
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 3 or not fields[2].isdigit():
            raise UsageError(
                f"{path} line {number} is not 'path<TAB>sha256<TAB>size_bytes'; copy it again, or set {VERIFY_ENV}=0"
            )
        entries[fields[0]] = (fields[1], int(fields[2]))
    return entries


@dataclass(frozen=True)
class CremaD(PreparedDataset):
    """CREMA-D under one protocol (see the module docstring). ``image_size`` and ``fbank_frames`` (MLA
    protocol) default to the official 224 and 1,024; other values make a smaller variant for quick experiments
    and tests. Options are part of the cache key; register a variant under its own name."""

    info: DatasetInfo
    protocol: Literal["ogm_ge", "mla"] = "ogm_ge"
    image_size: int = 224
    fbank_frames: int = 1024
    verify: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in CLASSES:
            raise ValueError(f"protocol must be one of {sorted(CLASSES)}, got {self.protocol!r}")
        if self.image_size < 8 or self.fbank_frames < 1:
            raise ValueError(
                f"image_size must be >= 8 and fbank_frames >= 1, got {self.image_size}, {self.fbank_frames}"
            )

    # -- where things are -------------------------------------------------------------------------
    def verifies(self) -> bool:
        """Whether media are checked against the SHA-256 manifests (``verify`` and not ``BENCH_VERIFY_MEDIA=0``)."""
        return self.verify and os.environ.get(VERIFY_ENV, "1").strip().lower() not in ("0", "false", "no", "off")

    def _split_paths(self, folder: Path) -> dict[str, Path]:
        return {split: folder / rel for split, rel in SPLIT_FILES[self.protocol].items()}

    def _media_path(self, folder: Path, clip: str, modality: str) -> Path:
        sub, suffix = MEDIA[modality]
        return folder / sub / f"{clip}{suffix}"

    def _no_data_root(self) -> str:
        return f"no data root; set BENCH_DATA or --data-root to the folder holding {FOLDER}/ ({HOMEPAGE})"

    def _missing(self, root: Path) -> str | None:
        folder = root / FOLDER
        for path in self._split_paths(folder).values():
            if not path.is_file():
                return f"{path} not found; copy {SPLIT_SOURCES[self.protocol]} there"
        for sub, _ in MEDIA.values():
            if not (folder / sub).is_dir():
                return f"{folder / sub} not found; {_GET_MEDIA} ({folder})"
        if self.verifies():
            for sub, _ in MEDIA.values():
                if not (folder / f"lfs_manifest_{sub}.tsv").is_file():
                    return (
                        f"{folder / f'lfs_manifest_{sub}.tsv'} not found (path, sha256, size_bytes of every {sub} "
                        f"file); put the SHA-256 manifests there, or set {VERIFY_ENV}=0 to skip verification"
                    )
        return self._absent_media(folder)

    def _absent_media(self, folder: Path) -> str | None:
        present = {sub: set(os.listdir(folder / sub)) for sub, _ in MEDIA.values()}
        absent = []
        for rows in self._clips(folder).values():
            for clip, _ in rows:
                absent += [
                    self._media_path(folder, clip, m)
                    for m, (sub, suffix) in MEDIA.items()
                    if f"{clip}{suffix}" not in present[sub]
                ]
        if not absent:
            return None
        return (
            f"{len(absent)} media file(s) of the {self.protocol} split are missing, e.g. {absent[0]}; "
            f"run git lfs pull in your CREMA-D clone ({HOMEPAGE})"
        )

    def _clips(self, folder: Path) -> dict[str, list[tuple[str, int]]]:
        splits = {split: _split_rows(path, self.protocol) for split, path in self._split_paths(folder).items()}
        where = f"the train and test lists of {folder}"
        check_disjoint_lists(splits, where, f"copy the split files again from {SPLIT_SOURCES[self.protocol]}")
        return splits

    def _key(self, root: Path) -> dict[str, Any]:
        folder = root / FOLDER
        clips = self._clips(folder)
        media = [self._media_path(folder, clip, m) for rows in clips.values() for clip, _ in rows for m in MEDIA]
        lists = hashlib.sha256(b"".join(p.read_bytes() for p in self._split_paths(folder).values())).hexdigest()
        return {
            "protocol": self.protocol,
            "image_size": self.image_size,
            "frames": FRAMES[self.protocol],
            "fbank_frames": self.fbank_frames if self.protocol == "mla" else None,
            "split_lists": lists[:16],
            "media": file_fingerprint(root, media),
        }

    def _describe_cache(self, manifest: dict[str, Any]) -> str:
        sizes = manifest["split_sizes"]
        return f"{sizes['train']:,} train / {sizes['test']:,} test clips, media {manifest['verification']}"

    # -- preparing and loading --------------------------------------------------------------------
    def audio_shape(self) -> tuple[int, int]:
        if self.protocol == "mla":
            return self.fbank_frames, 128
        return OGM_GE_N_FFT // 2 + 1, 1 + OGM_GE_SECONDS * OGM_GE_RATE // OGM_GE_HOP

    def _audio_features(self, samples: np.ndarray, rate: int) -> np.ndarray:
        if self.protocol == "mla":
            return mla_fbank(samples, rate, length=self.fbank_frames)
        return ogm_ge_spectrogram(samples, rate)

    def _verify(self, folder: Path, clips: dict[str, list[tuple[str, int]]], advance: Callable[[int], None]) -> str:
        if not self.verifies():
            return f"not verified ({VERIFY_ENV}=0)"
        expected = {}
        for modality, (sub, _) in MEDIA.items():
            manifest = _read_manifest_tsv(folder / f"lfs_manifest_{sub}.tsv")
            for rows in clips.values():
                for clip, _ in rows:
                    relative = f"{sub}/{clip}{MEDIA[modality][1]}"
                    if relative not in manifest:
                        raise UsageError(
                            f"{relative} is not in {folder / f'lfs_manifest_{sub}.tsv'}; copy the manifest "
                            f"again, or set {VERIFY_ENV}=0 for media the manifest does not describe"
                        )
                    expected[folder / relative] = manifest[relative]
        problems = verify_sha256(expected, cache_root() / FOLDER / "sha256-memo.json", advance)
        if problems:
            shown = "; ".join(f"{path.relative_to(folder)} ({why})" for path, why in problems[:10])
            more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise UsageError(
                f"{len(problems)} of {len(expected)} CREMA-D media files differ from the SHA-256 manifests "
                f"in {folder}: {shown}{more}; download them again (git lfs pull), or set {VERIFY_ENV}=0 "
                "to use your own re-encoded copy unverified"
            )
        return "SHA-256 verified"

    def _build(
        self, root: Path, scratch: ScratchArrays, progress: Progress | None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        folder = root / FOLDER
        clips = self._clips(folder)
        count = sum(len(rows) for rows in clips.values())
        checks = 2 * count if self.verifies() else 0
        steps = checks + count

        def advance(done: int) -> None:
            if progress is not None:
                progress(done, steps)

        verification = self._verify(folder, clips, advance)
        genuine = self.verifies()  # verified files need no truncation heuristics
        frames, size = FRAMES[self.protocol], self.image_size
        arrays: dict[str, np.ndarray] = {}
        done = checks
        for split, rows in clips.items():
            audio = scratch.new(f"{split}_audio", (len(rows), 1, *self.audio_shape()), np.float32)
            visual = scratch.new(f"{split}_visual", (len(rows), 3, frames, size, size), np.uint8)
            for i, (clip, _) in enumerate(rows):
                samples, rate = read_wav(self._media_path(folder, clip, "audio"), fix=_REDOWNLOAD)
                audio[i, 0] = self._audio_features(samples, rate)
                visual[i] = sampled_frames(
                    self._media_path(folder, clip, "visual"),
                    frames,
                    size,
                    fix=_REDOWNLOAD,
                    check_truncation=not genuine,
                )
                done += 1
                advance(done)
            arrays[f"{split}_audio"], arrays[f"{split}_visual"] = audio, visual
            arrays[f"{split}_label"] = np.array([label for _, label in rows], dtype=np.int64)
        manifest = {
            "protocol": self.protocol,
            "classes": list(CLASSES[self.protocol]),
            "verification": verification,
            "clips": {s: [clip for clip, _ in rows] for s, rows in clips.items()},
        }
        return arrays, manifest

    def modalities(self, shapes: object = None) -> tuple[ModalitySpec, ModalitySpec]:
        size = self.image_size
        return (
            ModalitySpec("audio", (1, *self.audio_shape()), kind="spectrogram_resnet18"),
            ModalitySpec("visual", (3, FRAMES[self.protocol], size, size), kind="frames_resnet18"),
        )

    def _describe_raw(self, root: Path) -> DatasetSummary:
        """Every clip of the train list is a training sample, with the list's label."""
        train = self._clips(root / FOLDER)["train"]
        labels = [label for _, label in train]
        return DatasetSummary(self.modalities(), label_counts(labels), shipped_val=False)


CREMAD = CremaD(_info("ogm_ge"), "ogm_ge")
CREMAD_MLA = CremaD(_info("mla"), "mla")
