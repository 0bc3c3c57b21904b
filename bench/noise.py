"""Test-time corruption: the noise axis next to the missing rate (QMF's low-quality-data setting).

QMF (Zhang et al., ICML 2023) evaluates a model trained on clean data on corrupted test data
(``QingyangZhang/QMF``, the image-text and RGB-D evaluation): each modality of a test sample is corrupted
with probability 0.5, independently of the other modalities (the ``RandomApply(p=0.5)`` per modality explained in
that repository's issue #11), at a *level* 0-10 (their levels: 0, 5, 10):

* ``gaussian``: additive Gaussian noise. QMF adds noise of standard deviation ``10 * level`` to 0-255 pixels.
  Inputs here are features, spectrograms and images on different scales, so the standard deviation is
  ``level / 10`` times the modality's standard deviation over the clean training split: level 10 is noise as
  large as the signal's spread on every modality. (A reconstruction of the scale, not QMF's pixel units.)
  The statistics are those of the whole training split (:func:`training_stats`), also for a method that
  holds part of it out (``holdout_fraction``), so every method of a cell is scored on the same corrupted
  test inputs.
* ``salt_pepper``: a fraction ``level / 100`` of the entries is set to the modality's training minimum or
  maximum (half each). QMF's salt-and-pepper has a fixed density and applies with probability
  ``level / 100``; here the level sets the density, so the axis is monotone.
* token modalities (kind ``"tokens"`` or ``"tokens:<model dir>"``, ids and attention mask) get QMF's text
  corruption whatever the kind:
  each real token is replaced with probability ``0.1 * level``. QMF replaces the word by ``"_"``; without a
  tokenizer at hand the token is erased from the attention mask instead (the model no longer sees it).

Everything a sample receives depends only on (cell seed, split, sample index, modality), drawn as masks are
(:mod:`bench.masks`), so every method of a cell sees the same corrupted samples, and the draws are shared by
all levels (a higher level scales the same noise), which makes the level axis a paired comparison too.
A missing (zero-filled) modality stays missing: noise never brings it back. Integer inputs (uint8 frames)
are corrupted in floating point, then rounded and clipped to their type's range (QMF's uint8 cast wraps
negative values around instead).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch

from bench.masks import SPLIT_IDS
from bench.spec import NOISE_KINDS

__all__ = ["NOISE_KINDS", "ModalityStats", "corrupt", "is_tokens", "modality_stats", "parse_levels", "training_stats"]

MAX_LEVEL = 10.0
APPLY_PROBABILITY = 0.5
STATS_SAMPLES = 4096
_STREAM = 0x6E6F6973  # "nois": keeps these draws apart from the masks' and the training's


class ModalityStats(NamedTuple):
    """Scale of one modality over the clean training split."""

    std: float
    low: float
    high: float


def parse_levels(text: str) -> tuple[float, ...]:
    """``"0,5,10"`` -> (0.0, 5.0, 10.0); ValueError with the reason otherwise."""
    levels = tuple(float(v) for v in text.split(",") if v.strip())
    if not levels:
        raise ValueError("give at least one noise level, e.g. 0,5,10")
    bad = [v for v in levels if not 0.0 <= v <= MAX_LEVEL]
    if bad:
        raise ValueError(f"noise levels must be in [0, {MAX_LEVEL:g}], got {bad}")
    return tuple(sorted(set(levels)))


def is_tokens(kind: str) -> bool:
    """Token modalities are ``tokens`` or ``tokens:<model dir>``."""
    return kind.split(":", 1)[0] == "tokens"


def modality_stats(train_inputs: Mapping[str, torch.Tensor], kinds: Mapping[str, str]) -> dict[str, ModalityStats]:
    """Scale of each continuous modality on (present samples of) the clean training split; token modalities
    need none. At most :data:`STATS_SAMPLES` evenly spaced samples are read, so a large split is not
    converted to float whole."""
    stats = {}
    for name, x in train_inputs.items():
        if is_tokens(kinds[name]):
            continue
        step = max(1, -(-int(x.shape[0]) // STATS_SAMPLES))
        values = x[::step].float()
        stats[name] = ModalityStats(float(values.std()), float(values.min()), float(values.max()))
    return stats


def training_stats(train, kinds: Mapping[str, str]) -> dict[str, ModalityStats]:
    """:func:`modality_stats` of a cell's training split (a ``bench.data.MaskedSplit``), read at most
    :data:`STATS_SAMPLES` evenly spaced rows, each modality over the rows where it is present. The loop passes
    the whole training split, before any method's held-out part is carved from it."""
    rows = torch.arange(0, len(train), max(1, len(train) // STATS_SAMPLES))
    sample = train.take(rows).resident()
    present = {name: x[sample.mask[:, i]] for i, (name, x) in enumerate(sample.inputs.items())}
    return modality_stats(present, kinds)


def _generator(seed: int, split: str, modality_index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_IDS[split], _STREAM, modality_index, stream])


def _draws(seed: int, split: str, modality_index: int, x: torch.Tensor, stream: int, normal: bool) -> torch.Tensor:
    """One draw per entry of ``x``, in sample order: sample i's draws depend on (seed, split, i) only."""
    rng = _generator(seed, split, modality_index, stream)
    shape = tuple(x.shape)
    values = rng.standard_normal(shape, dtype=np.float32) if normal else rng.random(shape, dtype=np.float32)
    return torch.from_numpy(values).to(x.device)


def _chosen(seed: int, split: str, modality_index: int, n: int, device: torch.device) -> torch.Tensor:
    """(N,) bool: which samples get this modality corrupted (probability 0.5, QMF's RandomApply)."""
    u = _generator(seed, split, modality_index, 0).random(n)
    return torch.from_numpy(u < APPLY_PROBABILITY).to(device)


def _rows(flags: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return flags.reshape(-1, *([1] * (x.dim() - 1)))


def _corrupt_tokens(x: torch.Tensor, level: float, draws: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    erased = (draws[:, 1] < 0.1 * level) & apply[:, None]
    out = x.clone()
    out[:, 1] = torch.where(erased, torch.zeros_like(x[:, 1]), x[:, 1])
    return out


def corrupt(
    inputs: Mapping[str, torch.Tensor],
    present: torch.Tensor,
    kinds: Mapping[str, str],
    stats: Mapping[str, ModalityStats],
    *,
    kind: str,
    level: float,
    seed: int,
    split: str,
) -> dict[str, torch.Tensor]:
    """The inputs of one split corrupted at ``level``; ``present`` is the (N, M) missing-modality mask."""
    if kind not in NOISE_KINDS or kind == "none":
        raise ValueError(f"noise kind must be one of {NOISE_KINDS[1:]}, got {kind!r}")
    if level == 0:
        return dict(inputs)
    out = {}
    for m, (name, x) in enumerate(inputs.items()):
        apply = _chosen(seed, split, m, int(x.shape[0]), x.device) & present[:, m].to(x.device)
        if is_tokens(kinds[name]):
            out[name] = _corrupt_tokens(x, level, _draws(seed, split, m, x, 1, normal=False), apply)
            continue
        std, low, high = stats[name]
        values = x.float()
        if kind == "gaussian":
            noisy = values + (level / MAX_LEVEL) * std * _draws(seed, split, m, x, 1, normal=True)
        else:
            u = _draws(seed, split, m, x, 2, normal=False)
            density = level / 100.0
            noisy = torch.where(u < density / 2, torch.full_like(values, low), values)
            noisy = torch.where(u > 1 - density / 2, torch.full_like(values, high), noisy)
        if not x.is_floating_point():  # e.g. uint8 frames: round and clip to the type's range, not wrap
            info = torch.iinfo(x.dtype)
            noisy = noisy.round().clamp(info.min, info.max)
        out[name] = torch.where(_rows(apply, x), noisy.to(x.dtype), x)
    return out
