"""Missing-modality masks, the same for every method of a cell's (seed, split).

The mask follows the CPM-Net-style simulation that the MLA repository uses for IEMOCAP
(``dataset/dataset.py: random_mask``): every sample keeps at least one modality and the
overall missing fraction of (sample, modality) entries is the rate. CPM-Net reaches the rate by
rejection sampling over the whole split; here it is reached exactly and without retries:

* with ``q = rate * M`` missing entries per sample on average, ``floor(q)`` are missing in every sample
  and one more in the ``round(frac(q) * N)`` samples whose uniform draw ``v_i`` is smallest;
* which modalities go missing in sample ``i`` is the order of its own uniform row ``U[i]``.

``v`` and ``U`` come from generators seeded by (seed, split), so sample ``i``'s draws depend on
(seed, split, i) only, never on the method, the batch order or the rate; masks are therefore *nested* across rates (a
modality missing at rate 0.3 is also missing at 0.5), which makes the rate axis a paired comparison.

When ``rate > (M-1)/M`` the constraint "at least one modality kept" caps the fraction at ``(M-1)/M``
(CPM-Net keeps exactly one modality per sample in that regime); :func:`realized_rate` reports it.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SPLIT_IDS", "max_missing_rate", "missing_mask", "realized_rate"]

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
_STREAM = 0x6D61736B  # "mask": keeps these draws apart from any other use of the cell seed


def max_missing_rate(num_modalities: int) -> float:
    return (num_modalities - 1) / num_modalities


def missing_mask(num_samples: int, num_modalities: int, rate: float, *, seed: int, split: str) -> np.ndarray:
    """Boolean (N, M) array, True where a modality is present."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"missing rate must be in [0, 1), got {rate}")
    if num_modalities < 1:
        raise ValueError(f"need at least one modality, got {num_modalities}")
    present = np.ones((num_samples, num_modalities), dtype=bool)
    if rate == 0.0 or num_modalities == 1 or num_samples == 0:
        return present
    v = np.random.default_rng([seed, SPLIT_IDS[split], _STREAM, 0]).random(num_samples)
    order_draws = np.random.default_rng([seed, SPLIT_IDS[split], _STREAM, 1]).random((num_samples, num_modalities))
    per_sample = min(rate * num_modalities, num_modalities - 1)
    base = math.floor(per_sample)
    extra_count = round((per_sample - base) * num_samples)
    missing_count = np.full(num_samples, base, dtype=np.int64)
    missing_count[np.argsort(v, kind="stable")[:extra_count]] += 1
    ranks = np.argsort(np.argsort(order_draws, axis=1, kind="stable"), axis=1, kind="stable")
    present[ranks < missing_count[:, None]] = False
    return present


def realized_rate(mask: np.ndarray) -> float:
    return float(1.0 - mask.mean()) if mask.size else 0.0
