"""Embedded imbalance benchmark: generated in memory, deterministic, no download, with an exact Bayes oracle.

Generative model (C = 6 classes, every modality d = 16; the modalities are conditionally independent
given the label):

* the label y is uniform over the C classes;
* **fast** modality: ``x_f = b * S_FAST * mu_f[y] + N(0, I)``, with ``b ~ Bernoulli(coverage)`` drawn per
  sample and prototypes ``mu_f[c] ~ N(0, I_d) / sqrt(d)`` (norm about 1, so the class mean has norm about
  ``S_FAST``). Its class structure is *linear* and strong, so a network learns it in a few steps and, on
  the covered samples, the label is nearly always identifiable from it alone. On the other samples
  (``b = 0``) it is pure noise: uninformative, never misleading;
* **slow** modality (and **slow2**, with independent prototypes): a symmetric mixture
  ``x_s = e * S_SLOW * mu_s[y] + N(0, I)``, ``e = +-1`` with probability 1/2 each. Every class has mean
  zero, so there is *no* linear class structure; only a non-linear (quadratic, ``|x . mu_y|``) function
  separates the classes, which a network learns slowly. Alone it reaches a Bayes accuracy of about 83%.

Why: ``coverage`` (the fraction of samples on which the fast modality carries the label; default 0.7) is
the imbalance knob. The higher it is, the more of the joint training loss the fast modality removes on
its own and the less gradient reaches the slow one, although the slow modality is the only source of the
label on the uncovered samples: the two are complementary (the joint Bayes accuracy is well above either
alone), so a jointly trained model that neglects the slow modality loses accuracy it could have had.

The class-conditional densities are known exactly, so :meth:`ImbalanceDataset.posterior_log_probs` is the
Bayes oracle (a missing modality contributes nothing) and :meth:`ImbalanceDataset.bayes_accuracy` the
expected accuracy of the Bayes classifier, ``E[max_y p(y | x)]``, per pattern of present modalities,
over a large fixed-seed draw. :meth:`ImbalanceDataset.reference_notes` gives both for a test split and
a missingness mask.

Versions: the default coverage reports ``DatasetInfo.version == "1"``; any other coverage (``python -m bench
run --datasets 'imbalance*' --set data.coverage=0.9``, which builds the adapter with
``dataclasses.replace(adapter, coverage=0.9)``) reports ``f"1-cov{coverage:g}"`` and puts the value in the
cell's spec, so records made with two coverages are never confused or pooled. Train, validation and test
splits come from one draw.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from bench.data import DatasetSummary, label_counts
from bench.datasets.synthetic import embedded_info
from bench.protocol import DatasetInfo, LoadedData, ModalitySpec, SplitData

__all__ = ["DEFAULT_COVERAGE", "IMBALANCE_2M", "IMBALANCE_3M", "S_FAST", "S_SLOW", "ImbalanceDataset"]

S_FAST = 5.0  # fast-modality class-mean scale (prototype norm ~1): covered samples are identifiable
S_SLOW = 2.5  # slow-modality scale: slow alone has a Bayes accuracy of about 83%
DEFAULT_COVERAGE = 0.7
_BASE_VERSION = "1"
_ORACLE_DRAW = 200_000  # samples behind bayes_accuracy


def _version(coverage: float) -> str:
    return _BASE_VERSION if coverage == DEFAULT_COVERAGE else f"{_BASE_VERSION}-cov{coverage:g}"


@dataclass(frozen=True)
class ImbalanceDataset:
    """A dataset adapter for the generative model in this module's docstring (first modality fast)."""

    #: Settable per run with ``--set data.coverage=<value>`` (bench.protocol.DatasetAdapter.options).
    options: ClassVar[tuple[str, ...]] = ("coverage",)

    info: DatasetInfo
    coverage: float = DEFAULT_COVERAGE
    s_fast: float = S_FAST
    s_slow: float = S_SLOW
    dim: int = 16
    sizes: tuple[int, int, int] = (1500, 500, 1000)  # train, validation, test
    seed: int = 20240717
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.coverage <= 1.0:
            raise ValueError(f"coverage must be in [0, 1], got {self.coverage}")
        version = _version(self.coverage)
        if self.info.version != version:
            object.__setattr__(self, "info", dataclasses.replace(self.info, version=version))
        object.__setattr__(self, "_cache", {})

    # -- generator ---------------------------------------------------------------------------------
    def prototypes(self) -> np.ndarray:
        """(M, C, d) prototypes mu[m, c], ~ N(0, I_d) / sqrt(d); fixed by ``seed``, independent of coverage."""
        rng = np.random.default_rng([self.seed, 0])
        m, c = len(self.info.modalities), self.info.num_classes
        return rng.standard_normal((m, c, self.dim)) / np.sqrt(self.dim)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Draw n samples from the generative model: ({modality: (n, d) float64}, labels (n,) int64)."""
        mu = self.prototypes()
        c = self.info.num_classes
        labels = rng.integers(0, c, size=n)
        inputs = {}
        for m, name in enumerate(self.info.modalities):
            noise = rng.standard_normal((n, self.dim))
            if m == 0:
                scale = (rng.random(n) < self.coverage) * self.s_fast
            else:
                scale = np.where(rng.random(n) < 0.5, 1.0, -1.0) * self.s_slow
            inputs[name] = scale[:, None] * mu[m, labels] + noise
        return inputs, labels.astype(np.int64)

    # -- adapter interface -------------------------------------------------------------------------
    def available(self, data_root: Path | None) -> tuple[bool, str]:
        return True, ""

    def describe(self, data_root: Path | None) -> DatasetSummary:
        """What ``load`` gives, from the labels alone (the first draw of :meth:`sample`'s generator)."""
        rng = np.random.default_rng([self.seed, 1])
        train = rng.integers(0, self.info.num_classes, size=sum(self.sizes))[: self.sizes[0]]
        return DatasetSummary(self._modalities(), label_counts(train), shipped_val=True)

    def _modalities(self) -> tuple[ModalitySpec, ...]:
        return tuple(ModalitySpec(name, (self.dim,)) for name in self.info.modalities)

    def load(self, data_root: Path | None) -> LoadedData:
        x, labels = self.sample(sum(self.sizes), np.random.default_rng([self.seed, 1]))
        inputs = {k: torch.from_numpy(v.astype(np.float32)) for k, v in x.items()}
        y = torch.from_numpy(labels)
        bounds = np.cumsum((0,) + self.sizes)
        splits = [SplitData({k: v[a:b] for k, v in inputs.items()}, y[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        return LoadedData(self._modalities(), train=splits[0], val=splits[1], test=splits[2])

    # -- exact Bayes oracle ------------------------------------------------------------------------
    def _log_likelihoods(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """(M, N, C) log p(x_m | y = c) up to a term that does not depend on c."""
        mu = self.prototypes()
        out = []
        for m, name in enumerate(self.info.modalities):
            x = np.asarray(inputs[name], dtype=np.float64)
            proj = x @ mu[m].T  # (N, C): x . mu_c
            sq = (mu[m] ** 2).sum(axis=1)  # (C,)
            if m == 0:
                s = self.s_fast
                with np.errstate(divide="ignore"):
                    log_cov, log_rest = np.log(self.coverage), np.log1p(-self.coverage)
                # log[cov N(x; s mu, I) + (1 - cov) N(x; 0, I)] - log N(x; 0, I)
                ll = np.logaddexp(log_cov + s * proj - 0.5 * s**2 * sq, log_rest)
            else:
                s = self.s_slow
                # log[exp(-s^2 |mu|^2 / 2) cosh(s x . mu)] + const
                ll = -0.5 * s**2 * sq + np.logaddexp(s * proj, -s * proj)
            out.append(ll)
        return np.stack(out)

    @staticmethod
    def _normalise(logits: np.ndarray) -> np.ndarray:
        return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)

    def posterior_log_probs(self, inputs: dict[str, np.ndarray], present: np.ndarray) -> np.ndarray:
        """(N, C) exact log p(y | observed modalities); ``present`` is (N, M) bool, modality order as in
        ``info.modalities``; a missing modality contributes nothing (uniform prior over the classes)."""
        ll = self._log_likelihoods(inputs)
        present = np.asarray(present, dtype=bool)
        if present.shape != ll.shape[:2][::-1]:
            raise ValueError(f"present must be (N, M) = {ll.shape[:2][::-1]}, got {present.shape}")
        logits = (ll * present.T[:, :, None]).sum(axis=0)
        return self._normalise(logits)

    def _pattern_accuracy(self, pattern: tuple[bool, ...]) -> float:
        if pattern not in self._cache:
            if "ll" not in self._cache:
                x, _ = self.sample(_ORACLE_DRAW, np.random.default_rng([self.seed, 2]))
                self._cache["ll"] = self._log_likelihoods(x)
            ll = self._cache["ll"]
            logits = (ll * np.asarray(pattern, dtype=float)[:, None, None]).sum(axis=0)
            self._cache[pattern] = float(np.exp(self._normalise(logits).max(axis=1)).mean())
        return self._cache[pattern]

    def bayes_accuracy(self, mask: np.ndarray | tuple[bool, ...] | None = None) -> float:
        """Expected accuracy of the Bayes classifier, E[max_y p(y | x)] (Rao-Blackwellised: the mean max
        posterior, not a fraction correct), over a fixed-seed draw of 200k samples.

        ``mask`` is one pattern (M bools), an (N, M) bool mask (each pattern weighted by its frequency
        in it), or None for all modalities present. Cached per pattern."""
        m = len(self.info.modalities)
        if mask is None:
            mask = np.ones((1, m), dtype=bool)
        mask = np.atleast_2d(np.asarray(mask, dtype=bool))
        if mask.shape[1] != m:
            raise ValueError(f"mask must have {m} columns (one per modality), got shape {mask.shape}")
        patterns, counts = np.unique(mask, axis=0, return_counts=True)
        weights = counts / counts.sum()
        return float(sum(w * self._pattern_accuracy(tuple(bool(v) for v in p)) for p, w in zip(patterns, weights)))

    def reference_notes(self, test: SplitData, mask: np.ndarray) -> dict[str, Any]:
        """``bayes_accuracy``: expected Bayes accuracy for the pattern mix of ``mask`` (N, M bool);
        ``oracle_test_accuracy``: fraction of ``test`` the exact oracle classifies correctly under it;
        ``bayes_accuracy_alone``: per modality, the expected Bayes accuracy from that modality alone (the
        ceiling of a unimodal model, and of one modality's branch inside a joint one)."""
        inputs = {k: np.asarray(v) for k, v in test.inputs.items()}
        post = self.posterior_log_probs(inputs, mask)
        correct = post.argmax(axis=1) == np.asarray(test.labels)
        names = self.info.modalities
        alone = {name: self.bayes_accuracy(tuple(j == m for j in range(len(names)))) for m, name in enumerate(names)}
        return {
            "bayes_accuracy": self.bayes_accuracy(mask),
            "oracle_test_accuracy": float(correct.mean()),
            "bayes_accuracy_alone": alone,
        }


def _info(name: str, modalities: tuple[str, ...], description: str) -> DatasetInfo:
    return embedded_info(name, modalities, description, version=_BASE_VERSION, module="datasets/imbalance.py")


IMBALANCE_2M = ImbalanceDataset(
    _info(
        "imbalance_2m",
        ("fast", "slow"),
        "fast linear modality covering 70% of samples + slow non-linear one; exact Bayes oracle",
    ),
)
IMBALANCE_3M = ImbalanceDataset(
    _info(
        "imbalance_3m",
        ("fast", "slow", "slow2"),
        "as imbalance_2m with a second, independent slow modality; exact Bayes oracle",
    ),
)
