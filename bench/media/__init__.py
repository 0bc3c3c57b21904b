"""What dataset adapters of media (and other slow-to-read) data build on.

* :mod:`bench.media.decode`: reading and features: WAV, any FFmpeg container through PyAV, resampling, the
  librosa STFT, Kaldi fbank, the official loaders' frame choice, SHA-256 checks (imports numpy and torch).
* :mod:`bench.media.cache`: the prepared-data cache on disk: where it lives, the key digest, the atomic write
  (torch-free: the store's record index imports it for :func:`~bench.media.cache.cache_root`).
* :mod:`bench.media.prepared`: :class:`~bench.media.prepared.PreparedDataset`, the one base class of every
  adapter that prepares a cache (status, prepare, load memory-mapped, describe), and
  :class:`~bench.media.prepared.ScratchArrays` for arrays larger than memory.

``from bench.media import read_wav`` and the like keep working: the public names of the three modules are
looked up here on first use, so importing ``bench.media.cache`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "decode": (
        "MissingStream",
        "clip_fbank",
        "decode_audio",
        "describe_bad_file",
        "frames_per_second",
        "kaldi_fbank",
        "kaldi_mel_banks",
        "log_stft",
        "pad_or_cut",
        "pick_frames",
        "read_wav",
        "resample",
        "rgb_frame",
        "sampled_frames",
        "sha256_of",
        "tile_to",
        "verify_sha256",
    ),
    "prepared": ("SPLITS", "PreparedDataset", "ScratchArrays", "cache_state", "mapped_tensors"),
    "cache": (
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
    ),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    """A public name of :mod:`bench.media.decode`, ``.prepared`` or ``.cache``, imported on first use."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
