"""What dataset adapters of media (and other slow-to-read) data build on.

* :mod:`bench.media.decode`: reading and features: WAV, any FFmpeg container through PyAV, resampling, the
  librosa STFT, Kaldi fbank, the official loaders' frame choice, SHA-256 checks (imports numpy and torch).
* :mod:`bench.media.cache`: the prepared-data cache on disk: where it lives, the key digest, the atomic write
  (torch-free: the store's record index imports it for :func:`~bench.media.cache.cache_root`).
* :mod:`bench.media.prepared`: :class:`~bench.media.prepared.PreparedDataset`, the one base class of every
  adapter that prepares a cache (status, prepare, load memory-mapped, describe), and
  :class:`~bench.media.prepared.ScratchArrays` for arrays larger than memory.

``from bench.media import read_wav`` and the like keep working: the public names of the three modules (their
``__all__``) are looked up here on first use, so importing ``bench.media.cache`` does not import torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

#: The modules whose public names (each one's ``__all__``, the one list of them) this package offers, searched
#: in this order: the torch-free cache first, so that its names resolve without importing torch.
_MODULES = ("cache", "prepared", "decode")


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def __getattr__(name: str) -> Any:
    """A submodule, or a public name of one imported on first use; ``__all__`` is all of those names."""
    if name == "__all__":
        return sorted(public for module in _MODULES for public in _module(module).__all__)
    if name in _MODULES:
        return _module(name)
    if not name.startswith("_"):  # a private or special name is never a module's public one: no import for it
        for module in map(_module, _MODULES):
            if name in module.__all__:
                return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})
