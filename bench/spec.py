"""The cell: one frozen spec per (method, dataset, seed, missing rate), whose hash is its identity."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import PROTOCOL_VERSION

__all__ = ["CellSpec", "canonical_json"]

MISSING_ON = ("all", "test")
PRECISIONS = ("fp32", "bf16")
NOISE_KINDS = ("none", "gaussian", "salt_pepper")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, floats by repr: the same spec always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class CellSpec:
    """Everything that can change a cell's numbers. Passed down whole, never unpacked.

    ``missing_on = "all"`` masks train, validation and test splits (each drawn separately, as the
    MLA repo's IEMOCAP simulation does); ``"test"`` masks only validation and test.

    ``noise`` / ``noise_levels``: the selected model is also scored on the test split corrupted at each level
    (:mod:`bench.noise`); training and selection are unchanged. A cell without noise leaves both fields out
    of its identity, so cells defined before the noise axis existed keep their keys.
    """

    method: str
    hparams: Mapping[str, Any]
    dataset: str
    dataset_version: str
    seed: int
    missing_rate: float
    epochs: int
    batch_size: int
    missing_on: str = "all"
    patience: int | None = None
    precision: str = "fp32"
    hparams_source: str = "default"
    noise: str = "none"
    noise_levels: tuple[float, ...] = ()
    protocol: int = PROTOCOL_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Freeze the mappings as sorted plain dicts so equal specs compare and hash equally.
        object.__setattr__(self, "hparams", dict(sorted(dict(self.hparams).items())))
        object.__setattr__(self, "extra", dict(sorted(dict(self.extra).items())))
        if self.missing_on not in MISSING_ON:
            raise ValueError(f"missing_on must be one of {MISSING_ON}, got {self.missing_on!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        object.__setattr__(self, "noise_levels", tuple(float(v) for v in self.noise_levels))
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}, got {self.noise!r}")
        if (self.noise == "none") != (not self.noise_levels):
            raise ValueError("noise levels go with a noise kind: give both or neither")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if self.noise == "none":  # the identity of a noise-free cell predates the noise axis
            del values["noise"], values["noise_levels"]
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CellSpec:
        return cls(**values)

    @property
    def key(self) -> str:
        """First 16 hex digits of the sha256 of the canonical JSON: the cell's identity."""
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        noise = f"/{self.noise}" if self.noise != "none" else ""
        return f"{self.dataset}/{self.method}/seed{self.seed}/miss{self.missing_rate:g}{noise}"

    def __hash__(self) -> int:  # dict fields make the generated hash unusable
        return hash(self.key)
