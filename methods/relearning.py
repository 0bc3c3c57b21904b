"""Diagnosing & Re-learning (Wei, Li, Feng, Hu, "Diagnosing and Re-learning for Balanced Multimodal
Learning", ECCV 2024, arXiv 2407.09705; official code ``GeWu-Lab/Diagnosing_Relearning_ECCV2024``,
``code/ours.py``).

A late-fusion model trained with one cross-entropy, whose uni-modal encoders are periodically and softly
re-initialised by how well each modality has learnt (Sec. 3):

* Diagnosing: each modality's encoder features of the training set D and of a validation set V are min-max
  scaled to [-1, 1] and clustered by k-means into as many clusters as classes; the purity P (each cluster
  labelled by its majority class, the accuracy of that labelling) measures the separability of the
  uni-modal representation. The learning state is the purity gap g_k = |P^k_D - P^k_V|.
* Re-learning: the re-initialisation strength alpha_k = tanh(lambda * g_k), and every parameter of encoder k
  becomes theta_k = (1 - alpha_k) theta_k^current + alpha_k theta_k^init (its value at initialisation).

Schedule (``ours.py``): after training epoch e with e > 0 and e a multiple of ``reinit_epoch``, at most
``reinit_num`` times; here that is the ``start_epoch`` hook of epoch e + 1. Defaults are the official
script's (``code/script/ours.sh``): lambda = 3 (``move_lambda``), every 20 epochs, 3 times, of 90 epochs.
On a shorter budget the defaults re-initialise less or never (15 epochs: never); ``--set
relearning.reinit_epoch=...`` scales the schedule, and the search space covers shorter periods.

Differences from the paper and the official code:

* V: the paper and ``ours.py`` use the dataset's validation split. The harness never hands the validation
  split to a method, so V is a held-out part of the training split (``holdout_fraction`` = 0.1, stratified,
  seeded; the loop carves it and trains on the rest, as for G-Blending).
* k-means is this module's (k-means++ seeding from a generator seeded with ``kmeans_seed``, Lloyd
  iterations until the assignment stops changing, at most 300); the official code calls scikit-learn's
  ``KMeans(n_clusters, random_state=0)``. Min-max scaling is fitted per set, as there.
* Only parameters are re-initialised (BatchNorm running statistics are buffers and stay), as in
  ``ours.py``, which re-initialises every parameter of ``audio_net``/``visual_net`` (its list of conv
  layers is built and not used). The optimizer's momentum is kept, as there.
* Missing modalities (not in the paper): a modality's features are clustered over the samples where it is
  present; with fewer such samples than classes, as many clusters as samples.
* BalanceBenchmark (``balancemm/trainer/ReLearning_trainer.py``) does the same with ``reinit_epoch = 15``
  and ``reinit_num = 2`` in ``configs/trainer_config.yaml`` and diagnoses on its validation loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.hparams import Choice, LogUniform, MethodConfig, SearchRanges, check_at_least, check_fraction
from bench.nn import SlicedFusionNet, sliced_prediction
from bench.protocol import Batch, DataDescription, EpochContext, LossOut, Prediction, StepContext

__all__ = ["Relearning", "RelearningNet", "kmeans", "minmax_scale", "purity", "reinit_strength", "soft_reinit"]


# --------------------------------------------------------------------------------------------------
# The math (pinned by tests/test_parity_relearning.py)


def minmax_scale(x: torch.Tensor) -> torch.Tensor:
    """Each column mapped linearly onto [-1, 1] (a constant column maps to -1, as scikit-learn's scaler)."""
    low, high = x.min(0).values, x.max(0).values
    span = torch.where(high > low, high - low, torch.ones_like(high))
    return 2 * (x - low) / span - 1


def kmeans(x: torch.Tensor, k: int, *, seed: int = 0, max_iter: int = 300) -> torch.Tensor:
    """Cluster assignments (N,) of k-means with k-means++ seeding (a generator seeded with ``seed``) and
    Lloyd iterations until the assignment is stable (at most ``max_iter``)."""
    x = x.double()
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    centres = [x[int(torch.randint(n, (1,), generator=gen))]]
    for _ in range(1, k):
        d2 = torch.cdist(x, torch.stack(centres)).pow(2).min(1).values
        if not bool(d2.sum() > 0):
            centres.append(x[int(torch.randint(n, (1,), generator=gen))])
            continue
        centres.append(x[int(torch.multinomial(d2 / d2.sum(), 1, generator=gen))])
    centre = torch.stack(centres)
    assign = torch.cdist(x, centre).argmin(1)
    for _ in range(max_iter):
        for c in range(k):
            members = assign == c
            if bool(members.any()):
                centre[c] = x[members].mean(0)
        new = torch.cdist(x, centre).argmin(1)
        if torch.equal(new, assign):
            break
        assign = new
    return assign


def purity(labels: torch.Tensor, clusters: torch.Tensor) -> float:
    """Share of samples whose label is their cluster's majority label (ties: the smallest label)."""
    right = 0
    for c in torch.unique(clusters):
        members = labels[clusters == c]
        right += int(torch.bincount(members).max())
    return right / max(1, len(labels))


def reinit_strength(train_purity: float, holdout_purity: float, move_lambda: float) -> float:
    """alpha = tanh(lambda * |P_D - P_V|)."""
    return float(torch.tanh(torch.tensor(move_lambda * abs(train_purity - holdout_purity), dtype=torch.float64)))


def soft_reinit(module: nn.Module, initial: dict[str, torch.Tensor], alpha: float) -> None:
    """Every parameter of ``module`` becomes (1 - alpha) * current + alpha * initial (in place, no gradient)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_((1 - alpha) * p + alpha * initial[name].to(p.dtype))


# --------------------------------------------------------------------------------------------------
# Model and method


class RelearningNet(SlicedFusionNet):
    """Late fusion plus the encoders' initial parameters (buffers, ``init__<modality>__<parameter>``) and the
    number of re-initialisations done."""

    def __init__(self, description: DataDescription, fusion: str) -> None:
        super().__init__(description, fusion)
        for modality, encoder in self.encoders.items():
            for name, p in encoder.named_parameters():
                self.register_buffer(self._key(modality, name), p.detach().clone())
        self.register_buffer("reinits_done", torch.zeros((), dtype=torch.int64))
        self.num_classes = description.num_classes

    @staticmethod
    def _key(modality: str, name: str) -> str:
        return f"init__{modality}__{name.replace('.', '__')}"

    def initial(self, modality: str) -> dict[str, torch.Tensor]:
        return {
            name: getattr(self, self._key(modality, name)) for name, _ in self.encoders[modality].named_parameters()
        }


def _features(model: RelearningNet, batches) -> tuple[dict[str, list[torch.Tensor]], list[torch.Tensor]]:
    """Per modality, the features of the samples where it is present, and their labels."""
    feats: dict[str, list[torch.Tensor]] = {name: [] for name in model.encoders}
    labels: dict[str, list[torch.Tensor]] = {name: [] for name in model.encoders}
    for batch in batches:
        _, features = model(batch.inputs)
        for m, (name, h) in enumerate(features.items()):
            present = batch.mask[:, m]
            feats[name].append(h[present].float().cpu())
            labels[name].append(batch.label[present].cpu())
    return ({n: torch.cat(v) for n, v in feats.items()}, {n: torch.cat(v) for n, v in labels.items()})


@dataclass(frozen=True)
class Relearning(MethodConfig):
    """Diagnosing & Re-learning: late fusion whose encoders are softly re-initialised towards their initial
    weights by tanh(lambda * |train purity - held-out purity|) of their k-means clustering.

    Fields: ``move_lambda = 3``, ``reinit_epoch = 20``, ``reinit_num = 3`` (official script),
    ``holdout_fraction = 0.1`` (the held-out part standing in for the validation set), ``kmeans_seed = 0``
    (the official ``random_state``), ``fusion = "concat"``. Inference: the fused head; per-modality
    columns slice it.
    """

    move_lambda: float = 3.0
    reinit_epoch: int = 20
    reinit_num: int = 3
    holdout_fraction: float = 0.1
    kmeans_seed: int = 0
    fusion: Literal["concat", "sum"] = "concat"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 0, "move_lambda")
        check_at_least(self, 1, "reinit_epoch")
        check_at_least(self, 0, "reinit_num")
        check_fraction(self, "holdout_fraction")

    def build(self, description: DataDescription) -> nn.Module:
        return RelearningNet(description, self.fusion)

    def reinit_due(self, epoch: int) -> bool:
        """At the start of epoch e + 1 after a trained epoch e > 0 that is a multiple of ``reinit_epoch``, for
        the first ``reinit_num`` such epochs."""
        trained = epoch - 1
        return trained > 0 and trained % self.reinit_epoch == 0 and trained // self.reinit_epoch <= self.reinit_num

    def _purity(self, features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
        if len(labels) == 0:
            return 0.0
        k = min(num_classes, len(labels))
        return purity(labels, kmeans(minmax_scale(features), k, seed=self.kmeans_seed))

    def diagnose(self, model: RelearningNet, epoch: EpochContext) -> dict[str, float]:
        """Each modality's re-initialisation strength alpha from the training and held-out features."""
        train_f, train_y = _features(model, epoch.batches("train"))
        held_f, held_y = _features(model, epoch.batches("holdout"))
        k = model.num_classes
        return {
            name: reinit_strength(
                self._purity(train_f[name], train_y[name], k),
                self._purity(held_f[name], held_y[name], k),
                self.move_lambda,
            )
            for name in model.encoders
        }

    def start_epoch(self, model: nn.Module, epoch: EpochContext) -> None:
        if not self.reinit_due(epoch.epoch):
            return
        for name, alpha in self.diagnose(model, epoch).items():
            soft_reinit(model.encoders[name], model.initial(name), alpha)
        model.reinits_done += 1

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> LossOut:
        logits, _ = model(batch.inputs)
        return LossOut(F.cross_entropy(logits, batch.label))

    def predict(self, model: nn.Module, batch: Batch) -> Prediction:
        return sliced_prediction(model, batch.inputs)

    #: lr, weight decay, lambda and the re-initialisation period.
    search_ranges: ClassVar[SearchRanges] = {
        "move_lambda": LogUniform(0.5, 10.0),
        "reinit_epoch": Choice(2, 5, 10, 20),
    }
