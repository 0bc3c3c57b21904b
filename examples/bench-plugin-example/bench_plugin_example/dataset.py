"""``xor_pairs``: two modalities, each one bit of noise-free information; the class is their XOR.

Neither modality alone beats chance, so it shows whether a method really fuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.protocol import DatasetInfo, LoadedData, ModalitySpec, SplitData


@dataclass(frozen=True)
class XorPairs:
    info: DatasetInfo

    def available(self, data_root: Path | None) -> tuple[bool, str]:
        return True, ""

    def load(self, data_root: Path | None) -> LoadedData:
        rng = np.random.default_rng(0)
        n = 800
        a, b = rng.integers(0, 2, size=n), rng.integers(0, 2, size=n)

        def view(bit):
            return torch.from_numpy((np.eye(2)[bit] + 0.3 * rng.standard_normal((n, 2))).astype(np.float32))

        x = {"left": view(a), "right": view(b)}
        y = torch.from_numpy((a ^ b).astype(np.int64))

        def split(lo, hi):
            return SplitData({k: v[lo:hi] for k, v in x.items()}, y[lo:hi])

        modalities = (ModalitySpec("left", (2,)), ModalitySpec("right", (2,)))
        return LoadedData(modalities, train=split(0, 600), test=split(600, 800))


XOR_PAIRS = XorPairs(
    DatasetInfo(
        name="xor_pairs",
        modalities=("left", "right"),
        num_classes=2,
        version="1",
        license="CC0-1.0",
        citation="bench plugin example",
        homepage="examples/bench-plugin-example",
        needs_data_root=False,
        default_epochs=10,
        default_batch_size=32,
    )
)
