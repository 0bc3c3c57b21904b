"""AV-MNIST as MultiBench uses it, rebuilt from MNIST and the Free Spoken Digit Dataset (FSDD).

MultiBench (Liang et al., NeurIPS 2021 Datasets & Benchmarks) ships AV-MNIST as ready-made arrays that come
from a third-party generator: ``slyviacassell/_MFAS`` file ``datasets/avmnist_gen.py`` (revision
``8d582c188bce8fdace83f29cc8b80c9808d823b2``, "Created on May 28 2020"); MultiBench's
``datasets/avmnist/README.md`` names an ``_MFAS/avmnist`` folder as the data directory, and its loader
``pliang279/MultiBench@49f9be224f342de005b7f001281f33df4301eb22 datasets/avmnist/get_data.py`` reads those
arrays. This adapter rebuilds the same arrays from the raw files under the data root (the same layout as
``avmnist``)::

    mnist/raw/train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
              t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz
    fsdd/recordings/{digit}_{speaker}_{index}.wav      8 kHz, mono, 16-bit PCM

The facts below are read from those two files; the code here is written from that description.

**Image** -> ``image``, (1, 28, 28) float32. A principal component analysis is fitted on the 784 pixels
(raw 0-255 values) of each MNIST file on its own: once on the 60,000 training images, once on the 10,000
test images (the generator fits one PCA per file, so the test images are projected on components of the test
set). With the explained-variance ratios r_1 >= r_2 >= ..., the number of components kept is
k = argmax_i(r_1 + ... + r_i > 0.25), counted from 0: the largest k whose leading components hold at most 25%
of the variance (the generator's "75% energy removing"), which is 3 components on both MNIST files (22.97%
of the training variance, 23.73% of the test variance). An image becomes its centred projection on those k
components, ``(x - mean) V_k V_k^T``, in pixel units and without the mean added back, so values are negative
as well as positive; MultiBench's loader then divides by 255 (range about -0.84 to 1.14 here).

**Audio** -> ``audio``, (1, 112, 112) float32 in [0, 1]: for each recording (PCM / 32768, as
``librosa.load(sr=None)`` reads it), the smallest window length ``NFFT`` (searched upwards from
``ceil(len / 112) - 1``) and, for it, the smallest overlap that give exactly 112 time frames
(``112 * NFFT - 111 * overlap <= len < 113 * NFFT - 112 * overlap``), a Hann-windowed power spectral density
(matplotlib ``specgram``, zero-padded to 223 points: 112 frequency bins, ``Fs`` 8 kHz), converted to dB,
flipped so that high frequencies are on top, scaled to its own minimum and maximum and mapped through
matplotlib's ``Greys`` colormap; the red channel of that 112 x 112 picture is the stored grey value (0-255,
loud = dark), which MultiBench's loader divides by 255.

**Pairing.** Recording repetitions 40-49 of every (speaker, digit) form the audio test pool, repetitions 0-39
the training pool. Images are taken in MNIST file order; the n-th image of digit d (counted separately in
the training and the test file) gets clip ``n mod P_d`` of digit d's pool, where P_d is its size (160 train and
40 test clips per digit in the generator's four-speaker FSDD), so clips repeat: every image is used once,
every clip about 37 (train and valid) or 25 (test) times. Labels are MNIST's.

**Splits** (MultiBench's loader): train = the first 55,000 of the 60,000 MNIST training pairs, valid = the
last 5,000 (same audio pool as train: clips are shared between train and valid), test = the 10,000 MNIST test
pairs. The validation split is shipped (``LoadedData.val``), so the harness does not carve one. On data of
another size (tests) the valid part is ``N * 5,000 // 60,000`` of the N training pairs (at least 1).

**Differences from MFAS / MultiBench, as far as known**

* *FSDD release.* FSDD has six speakers today; the generator's fixed cycle lengths (160 / 40 clips per digit)
  fit the four speakers of May 2020 (george joined FSDD on 2020-07-01, lucas on 2020-08-12). ``speakers``
  defaults to those four, and their 2,000 recordings in the shared data are byte-identical to FSDD's
  repository at commit ``535c615`` (2019-11-17, the head from then until 2020-07-01; checked with git blob
  hashes). Which FSDD copy MFAS actually used is not recorded (unverified).
* *Clip order.* The generator lists each digit's clips in ``os.listdir`` order (file-system dependent); here
  they are in sorted file-name order. Same clip sets and cycle lengths, a different (but fixed) assignment of
  clips to images.
* *Race in the generator.* It renders the spectrograms in a pool of 23 processes that append their results to
  a shared list as they finish, so in its saved arrays audio row i is not necessarily the clip chosen for image
  i (nor of its digit), and rows near the train/test boundary can trade places. Here row i is always the clip
  chosen for image i. How much the MultiBench arrays are affected is unknown (unverified): users of those
  arrays report about 65% image-only and 43% audio-only accuracy (jperezrua/mfas issue #17).
* *ESC-50 noise.* The generator mixes ``y + noise_power * noise`` with one ESC-50 clip per sample, but its
  default ``noise_power`` is 0, and ESC-50 clips (5 s) are longer than every FSDD recording (at most 2.28 s),
  so the mix is the clean recording; no ESC-50 is needed or used. Whether MultiBench's arrays were made with
  the default is not recorded (an earlier revision, ``8e82a0a3``, used 0.009 with a different spectrogram;
  MultiBench's division of the audio by 255 fits the grey-image revision followed here).
* *Rendering.* The generator draws each spectrogram into a 1.12 x 1.12 inch, 100 dpi matplotlib figure and
  reads the pixels back; here the same PSD (``matplotlib.mlab.specgram``) is normalised and mapped through
  the ``Greys`` colormap directly, with no figure. During development this was pixel-identical to the figure
  route with matplotlib 3.11 on 31 FSDD recordings; the 2020 matplotlib the generator ran is not available
  (unverified). Bins with zero power (-inf dB, masked by matplotlib) are white (255).
* *PCA.* scikit-learn's ``PCA`` there, an eigendecomposition of the scatter matrix in float64
  (``torch.linalg.eigh``) here: the same subspace (on both MNIST files the reconstructions agreed with
  scikit-learn 1.9's to 1.5e-12 pixel units, checked during development).
* *Precision.* Inputs are stored as float32 (MultiBench's loader holds float64 arrays).

**Cache and cost.** Decoding runs once, into the cache of :mod:`bench.media.cache` (``python -m bench data prepare
avmnist_multibench`` or the first ``load``): only the 2,000 distinct recordings are rendered, then the 70,000
pairs are written as float32 through disk-backed scratch arrays, so the build never holds them in memory. The
cache takes 3.73 GB (70,000 x (12,544 + 784) x 4 bytes); the 55,000 training pairs (2.93 GB) exceed
``RESIDENT_BYTES`` (2 GiB), so the harness streams them batch by batch from the copy-on-write memory map; the
valid and test splits (0.27 and 0.53 GB) it keeps whole. A full build took 24-32 s (four builds)
on the 2 cores of an "Intel(R) Xeon(R) Processor" (lscpu) while another process kept them busy, with about
1.5 GB of anonymous memory at its peak; a prepared cache loads in under a second. Training is the expensive
part: with the default CNN encoders one batch of 40 took 0.86 s forward and backward on one (busy) CPU thread,
about 20 minutes per epoch of 55,000 pairs, so the 30 epochs of MultiBench's example want a GPU or ``--epochs``.

Data licences: MNIST CC BY-SA 3.0, FSDD CC BY-SA 4.0; anything derived keeps both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data import DatasetSummary, label_counts
from bench.datasets.avmnist import (
    _REDOWNLOAD,
    AVMNIST,
    MNIST_FILES,
    RECORDINGS,
    SAMPLE_RATE,
    fsdd_recordings,
    read_idx,
    read_mnist,
    read_wav,
)
from bench.errors import UsageError
from bench.media.cache import Progress, file_fingerprint
from bench.media.prepared import PreparedDataset, ScratchArrays
from bench.protocol import DatasetInfo, ModalitySpec

__all__ = [
    "AVMNIST_MULTIBENCH",
    "AVMNISTMultiBench",
    "MFAS_SPEAKERS",
    "components_kept",
    "pair_by_cycling",
    "pca_reconstruct",
    "segment_layout",
    "spectrogram_image",
    "valid_size",
]

#: The FSDD speakers of May 2020, when the MFAS generator was written (see the module docstring).
MFAS_SPEAKERS = ("jackson", "nicolas", "theo", "yweweler")
#: Recording repetitions of every (speaker, digit) that form the audio test pool; the rest are training clips.
TEST_REPETITIONS = range(40, 50)
#: Fraction of the pixel variance the kept leading components may hold.
ENERGY_KEPT = 0.25
#: Frequency bins and time frames of a spectrogram.
SIDE = 112
#: MultiBench's validation part: the last 5,000 of the 60,000 MNIST training pairs.
VALID, TRAIN_PAIRS = 5000, 60000
SPLITS = ("train", "val", "test")
_CHUNK = 4096  # rows written at a time


# --------------------------------------------------------------------------------------------------
# Image: PCA reconstruction


def components_kept(ratios: np.ndarray, energy: float = ENERGY_KEPT) -> int:
    """How many leading components the generator keeps: the index of the first cumulative explained-variance
    ratio above ``energy``, i.e. the largest count whose components hold at most ``energy`` of the variance
    (0 when the first component alone holds more)."""
    cumulative = np.cumsum(np.asarray(ratios, dtype=np.float64))
    above = cumulative > energy
    return int(np.argmax(above)) if above.any() else len(cumulative)


def pca_reconstruct(images: np.ndarray, energy: float = ENERGY_KEPT) -> tuple[np.ndarray, dict[str, Any]]:
    """(N, D) float64 centred reconstructions of ``images`` (N, ...) from their own leading principal
    components (fitted on these images), and a note of how many components were kept and their variance share."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float64).reshape(len(images), -1))
    centred = x - x.mean(0)
    # torch's eigh: numpy's (OpenBLAS) took seconds on this rank-deficient 784 x 784 matrix, torch's a fraction
    values, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending; the scale does not change the ratios
    values, vectors = values.flip(0).clamp(min=0.0).numpy(), vectors.flip(1)
    ratios = values / values.sum()
    k = components_kept(ratios, energy)
    top = vectors[:, :k]
    notes = {"fitted_on": len(x), "components": k, "variance_kept": float(ratios[:k].sum())}
    return ((centred @ top) @ top.T).numpy(), notes


# --------------------------------------------------------------------------------------------------
# Audio: 112 x 112 grey spectrograms


def segment_layout(length: int, frames: int = SIDE) -> tuple[int, int]:
    """(window length, overlap) giving exactly ``frames`` windows over ``length`` samples: the smallest window
    from ``ceil(length / frames) - 1`` up, and for it the smallest overlap."""
    if length < frames:
        raise ValueError(f"{length} samples cannot give {frames} frames")
    for window in range(max(1, -(-length // frames) - 1), length + 1):
        # frames windows need
        #   frames * window - (frames - 1) * overlap <= length < (frames + 1) * window - frames * overlap
        overlap = max(0, -(-(frames * window - length) // (frames - 1)))
        if overlap < window and (frames + 1) * window - frames * overlap > length:
            return window, overlap
    raise ValueError(f"no window gives {frames} frames over {length} samples")  # not reached for length >= frames


def spectrogram_image(samples: np.ndarray, side: int = SIDE) -> np.ndarray:
    """(side, side) uint8 grey spectrogram of one recording as the generator draws it (see the module docstring)."""
    from matplotlib import colormaps, mlab

    window, overlap = segment_layout(len(samples), side)
    power, _, _ = mlab.specgram(
        np.asarray(samples, dtype=np.float64), NFFT=window, Fs=SAMPLE_RATE, noverlap=overlap, pad_to=2 * side - 1
    )
    if power.shape != (side, side):
        raise AssertionError(f"spectrogram of {len(samples)} samples is {power.shape}, expected {(side, side)}")
    with np.errstate(divide="ignore"):
        decibels = np.flipud(10.0 * np.log10(power))
    finite = np.isfinite(decibels)
    scaled = np.zeros_like(decibels)
    if finite.any():
        low, high = decibels[finite].min(), decibels[finite].max()
        if high > low:
            scaled = np.where(finite, (decibels - low) / (high - low), 0.0)
    grey = colormaps["Greys"](scaled, bytes=True)[..., 0]
    grey[~finite] = 255  # matplotlib masks -inf: the white figure shows through
    return grey


# --------------------------------------------------------------------------------------------------
# Pairs and splits


def pair_by_cycling(labels: np.ndarray, clip_labels: np.ndarray) -> np.ndarray:
    """For each label (in order), the index of its clip: the n-th occurrence of label d gets the
    ``n mod P_d``-th clip whose label is d (P_d clips of that label, in the order given)."""
    labels = np.asarray(labels)
    clip_labels = np.asarray(clip_labels)
    chosen = np.empty(len(labels), dtype=np.int64)
    for digit in np.unique(labels):
        rows = np.flatnonzero(labels == digit)
        pool = np.flatnonzero(clip_labels == digit)
        if len(pool) == 0:
            raise ValueError(f"no clip of label {digit}")
        chosen[rows] = pool[np.arange(len(rows)) % len(pool)]
    return chosen


def valid_size(train_pairs: int) -> int:
    """Size of the validation part (the last rows of the training pairs): 5,000 of 60,000, scaled."""
    return max(1, train_pairs * VALID // TRAIN_PAIRS)


# --------------------------------------------------------------------------------------------------
# The adapter


INFO = DatasetInfo(
    name="avmnist_multibench",
    modalities=("image", "audio"),
    num_classes=10,
    version="1",
    license="CC BY-SA 3.0 (MNIST images) and CC BY-SA 4.0 (FSDD recordings); derived pairs keep both",
    citation="Liang et al., MultiBench: Multiscale Benchmarks for Multimodal Representation Learning, NeurIPS 2021 "
    "Datasets and Benchmarks (AV-MNIST arrays from the slyviacassell/_MFAS generator); after Perez-Rua et al., "
    "MFAS, CVPR 2019 and Vielzeuf et al., CentralNet, ECCV Workshops 2018; LeCun et al., Proc. IEEE 1998 "
    "(MNIST); Jackson et al., Free Spoken Digit Dataset, github.com/Jakobovski/free-spoken-digit-dataset",
    homepage="http://yann.lecun.com/exdb/mnist/ (MNIST) and "
    "https://github.com/Jakobovski/free-spoken-digit-dataset (FSDD)",
    description="MultiBench's AV-MNIST rebuilt: MNIST images reduced to the leading principal components holding "
    "at most 25% of the variance + 112x112 grey spectrograms of FSDD clips of the same digit, cycled over images",
    splits="55,000 train / 5,000 valid (last of the MNIST training file) / 10,000 test pairs, as MultiBench's "
    "loader; audio pools: FSDD repetitions 0-39 (train, valid) and 40-49 (test) of four speakers",
    layout=AVMNIST.info.layout,
    # MultiBench's late-fusion example (examples/multimedia/avmnist_simple_late_fusion.py at
    # 49f9be22): 30 epochs, SGD lr 0.1; its loader's default batch size is 40. On CPU an epoch takes about
    # 20 minutes (module docstring).
    default_epochs=30,
    default_batch_size=40,
)


@dataclass(frozen=True)
class AVMNISTMultiBench(PreparedDataset):
    """MultiBench's AV-MNIST rebuilt from MNIST + FSDD (see the module docstring). ``speakers`` and
    ``energy_kept`` change the cache key but not ``info.version``: register a variant under its own name."""

    info: DatasetInfo = INFO
    speakers: tuple[str, ...] = MFAS_SPEAKERS
    energy_kept: float = ENERGY_KEPT

    def __post_init__(self) -> None:
        if not self.speakers or any(not isinstance(s, str) or not s for s in self.speakers):
            raise ValueError(f"speakers must be a non-empty tuple of FSDD speaker names, got {self.speakers!r}")
        if not 0.0 < self.energy_kept < 1.0:
            raise ValueError(f"energy_kept must be in (0, 1), got {self.energy_kept}")

    # -- where things are -------------------------------------------------------------------------
    def _pools(self, data_root: Path) -> dict[str, list[tuple[Path, int]]]:
        """(path, digit) of the chosen speakers' recordings per audio pool, in sorted file-name order."""
        pools: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
        for path, digit, speaker, repetition in fsdd_recordings(data_root):
            if speaker in self.speakers:
                pools["test" if repetition in TEST_REPETITIONS else "train"].append((path, digit))
        return pools

    def _no_data_root(self) -> str:
        return AVMNIST._no_data_root()

    def _missing(self, root: Path) -> str | None:
        why = AVMNIST._missing(root)  # the same MNIST and FSDD files
        if why:
            return why
        folder = root / RECORDINGS
        pools = self._pools(root)
        for pool, wanted in (("train", "0-39"), ("test", "40-49")):
            digits = {digit for _, digit in pools[pool]}
            absent = sorted(set(range(self.info.num_classes)) - digits)
            if absent:
                return (
                    f"no recording of digit {absent[0]} with index {wanted} by speakers {', '.join(self.speakers)} "
                    f"in {folder}; copy FSDD's recordings there (https://github.com/Jakobovski/free-spoken-digit-dataset)"
                )
        return None

    def _key(self, root: Path) -> dict[str, Any]:
        files = [root / p for p in MNIST_FILES.values()] + [p for rows in self._pools(root).values() for p, _ in rows]
        return {
            "speakers": list(self.speakers),
            "energy_kept": self.energy_kept,
            "source": file_fingerprint(root, files),
        }

    def _describe_cache(self, manifest: dict[str, Any]) -> str:
        sizes = manifest["split_sizes"]
        return f"{sizes['train']:,} train / {sizes['val']:,} valid / {sizes['test']:,} test pairs"

    def modalities(self, shapes: object = None) -> tuple[ModalitySpec, ModalitySpec]:
        return (
            ModalitySpec("image", (1, 28, 28), kind="image"),
            ModalitySpec("audio", (1, SIDE, SIDE), kind="spectrogram"),
        )

    def _describe_raw(self, root: Path) -> DatasetSummary:
        """The training pairs are the first rows of the MNIST training file (its 60,000 labels, no images)."""
        labels = read_idx(root / MNIST_FILES["train_labels"], 2049)
        cut = len(labels) - valid_size(len(labels))
        return DatasetSummary(self.modalities(), label_counts(labels[: max(cut, 0)]), shipped_val=True)

    # -- preparing --------------------------------------------------------------------------------
    def _build(
        self, root: Path, scratch: ScratchArrays, progress: Progress | None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        mnist = read_mnist(root)
        pools = self._pools(root)
        clips = len(pools["train"]) + len(pools["test"])
        steps = clips + 3  # one per recording, the two PCA fits, the writing

        def advance(done: int) -> None:
            if progress is not None:
                progress(done, steps)

        done = 0
        bank: dict[str, np.ndarray] = {}
        for pool, rows in pools.items():
            bank[pool] = np.empty((len(rows), SIDE, SIDE), dtype=np.uint8)
            for i, (path, _) in enumerate(rows):
                samples = read_wav(path)
                if len(samples) < SIDE:
                    raise UsageError(
                        f"{path} holds {len(samples)} samples, too few for {SIDE} spectrogram frames; {_REDOWNLOAD}"
                    )
                bank[pool][i] = spectrogram_image(samples)
                done += 1
                advance(done)

        pca_notes: dict[str, Any] = {}
        images: dict[str, np.ndarray] = {}
        for part in ("train", "test"):
            reconstruction, pca_notes[part] = pca_reconstruct(mnist[f"{part}_images"], self.energy_kept)
            images[part] = (reconstruction / 255.0).astype(np.float32)
            done += 1
            advance(done)

        digits = {pool: np.array([d for _, d in rows]) for pool, rows in pools.items()}
        chosen = {part: pair_by_cycling(mnist[f"{part}_labels"], digits[part]) for part in ("train", "test")}
        n_train = len(mnist["train_labels"])
        cut = n_train - valid_size(n_train)
        if cut < 1:
            raise UsageError(
                f"{root / MNIST_FILES['train_labels']} holds {n_train} labels, too few for a train and a "
                f"valid part; {_REDOWNLOAD}"
            )
        rows_of = {
            "train": ("train", slice(0, cut)),
            "val": ("train", slice(cut, n_train)),
            "test": ("test", slice(0, len(mnist["test_labels"]))),
        }

        arrays: dict[str, np.ndarray] = {}
        for split, (part, rows) in rows_of.items():
            labels = mnist[f"{part}_labels"][rows].astype(np.int64)
            picks = chosen[part][rows]
            image = scratch.new(f"{split}_image", (len(labels), 1, 28, 28), np.float32)
            audio = scratch.new(f"{split}_audio", (len(labels), 1, SIDE, SIDE), np.float32)
            image[:, 0] = images[part][rows].reshape(-1, 28, 28)
            for start in range(0, len(labels), _CHUNK):
                stop = min(start + _CHUNK, len(labels))
                audio[start:stop, 0] = bank[part][picks[start:stop]].astype(np.float32) / np.float32(255.0)
            arrays[f"{split}_image"], arrays[f"{split}_audio"] = image, audio
            arrays[f"{split}_label"] = labels
            arrays[f"{split}_clip"] = picks  # index into the manifest's clip list of the split's audio pool
        advance(steps)
        manifest = {
            "audio_pool": {split: part for split, (part, _) in rows_of.items()},
            "pca": pca_notes,
            "clips": {pool: [p.name for p, _ in rows] for pool, rows in pools.items()},
        }
        return arrays, manifest


AVMNIST_MULTIBENCH = AVMNISTMultiBench()
