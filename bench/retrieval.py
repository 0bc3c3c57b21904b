"""Retrieval metrics over a whole split, and how the loop scores methods whose ``task`` is ``"retrieval"``.

A retrieval method's :class:`~bench.protocol.Prediction` carries ``embeddings``: one L2-normalised
(B, d) tensor per modality it embeds, row i of every modality being the same sample. From the embeddings
of the *whole* split (no subsampling, no dropped batch) this module computes:

* per ordered modality pair (query modality m -> gallery modality n), with the similarity
  ``S = Z^m (Z^n)^T`` and the true match of query i being gallery item i:
  ``rank_i = #{j : S_ij >= S_ii}`` (1 = the true match comes first). **Ties count against the query**: an
  embedding that collapsed to one point ranks every true match last, never first. From the ranks:
  Recall@K = mean_i 1[rank_i <= K] for K = 1, 5, 10 (a fraction, not a percentage), the median rank and the
  mean rank; and ``same_class@1``, the fraction of queries whose top-ranked item has the query's class (ties
  broken by the lower index), which stays informative where modalities share only the class;
* per unordered pair: the modality gap of Liang et al. (NeurIPS 2022), the distance between the modality
  centroids of the normalised embeddings, ``||mean_i z_i^m - mean_i z_i^n||_2`` (centroids not
  re-normalised, as in ``Weixin-Liang/Modality-Gap`` ``get_gap_stats.ipynb``); and Wang and Isola's alignment
  ``mean_i ||z_i^m - z_i^n||_2^2`` (ICML 2020, alpha = 2);
* per modality, Wang and Isola's uniformity ``log mean_{i<j} exp(-2 ||z_i - z_j||^2)`` (t = 2) on a fixed
  subsample of at most :data:`UNIFORMITY_ROWS` samples (the same samples for every modality, method and cell),
  and the same over the union of the modalities, from the first ``UNIFORMITY_ROWS // M`` of those samples in
  each modality (a persistent gap shows as union uniformity staying high while each modality's is low).

Epochs are selected on the mean Recall@1 over all directions of the validation split.

Missing modalities: retrieval needs both sides of every pair, so validation and test retrieval are measured on
the *complete* splits; the masks remove sides of *training* pairs only. Retrieval methods therefore set
``zero_fill_missing = False`` (evaluation sees the real inputs) and must keep masked inputs out of their
training losses themselves; the records say so in their notes.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations, permutations
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.data import MaskedSplit, iterate_batches
from bench.errors import CellFailure

__all__ = [
    "NOTES",
    "RECALL_KS",
    "RetrievalScores",
    "UNIFORMITY_ROWS",
    "alignment",
    "direction_metrics",
    "evaluate_split",
    "headline",
    "mean_recall_at_1",
    "modality_gap",
    "ranks_of_true_matches",
    "retrieval_metrics",
    "selection_score",
    "squared_distances",
    "record_metrics",
    "uniformity",
]

RECALL_KS = (1, 5, 10)
#: Uniformity is O(N^2) in the number of rows: metrics use at most this many rows of a split.
UNIFORMITY_ROWS = 2000
UNIFORMITY_T = 2.0
SUBSAMPLE_SEED = 0
#: Query rows per similarity block, so a 10k-sample split never holds a 10k x 10k matrix.
QUERY_CHUNK = 1024
EVAL_BATCH_SIZE = 512

#: Added to the notes of every retrieval record.
NOTES = {
    "task": "retrieval",
    "retrieval_evaluation": "validation and test retrieval on the complete splits (retrieval needs both sides "
    "of a pair); missing-modality masks remove sides of training pairs only; ranks count "
    "ties against the query",
}


# --------------------------------------------------------------------------------------------------
# Formulas (differentiable where the losses reuse them)


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, M) matrix of ||x_i - y_j||^2, from inner products (no sqrt, so gradients stay finite at 0)."""
    sq = x.pow(2).sum(1)[:, None] + y.pow(2).sum(1)[None, :] - 2 * x @ y.T
    return sq.clamp_min(0)


def uniformity(x: torch.Tensor, t: float = UNIFORMITY_T) -> torch.Tensor:
    """Wang and Isola's L_uniform = log mean_{i<j} exp(-t ||x_i - x_j||^2) over unordered pairs (Eq. 5 of
    "Understanding Contrastive Representation Learning through Alignment and Uniformity on the Hypersphere",
    ICML 2020; ``ssnl/align_uniform`` ``uniform_loss`` uses ``torch.pdist``), in log-sum-exp form. Needs 2 rows."""
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 rows, got {n}")
    # the mean over i < j equals the mean over i != j (symmetry): drop the diagonal, keep the whole matrix
    diagonal = torch.eye(n, dtype=torch.bool, device=x.device)
    logits = (-t * squared_distances(x, x)).masked_fill(diagonal, -math.inf)
    return torch.logsumexp(logits.flatten(), dim=0) - math.log(n * (n - 1))


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Wang and Isola's L_align = mean_i ||x_i - y_i||_2^alpha over positive pairs (row i of x and of y;
    Eq. 4 of the ICML 2020 paper, ``ssnl/align_uniform`` ``align_loss``). For alpha = 2 no sqrt is taken."""
    sq = (x - y).pow(2).sum(1)
    return (sq if alpha == 2 else sq.clamp_min(1e-12).pow(alpha / 2)).mean()


def modality_gap(x: torch.Tensor, y: torch.Tensor) -> float:
    """||mean(x) - mean(y)||_2 of normalised embeddings (Liang et al., NeurIPS 2022, Sec. 4)."""
    return float((x.mean(0) - y.mean(0)).norm())


def ranks_of_true_matches(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """rank_i = #{j : <q_i, g_j> >= <q_i, g_i>}: 1-based, ties counted against the query.

    The true match's similarity is read from the same block of the similarity matrix it is compared with,
    so a query is never ranked behind itself by a rounding difference."""
    n = queries.shape[0]
    ranks = torch.empty(n, dtype=torch.long)
    for start in range(0, n, QUERY_CHUNK):
        stop = min(start + QUERY_CHUNK, n)
        block = queries[start:stop] @ gallery.T
        rows = torch.arange(stop - start)
        own = block[rows, rows + start]
        ranks[start:stop] = (block >= own[:, None]).sum(1).cpu()
    return ranks


def _same_class_at_1(queries: torch.Tensor, gallery: torch.Tensor, labels: torch.Tensor) -> float:
    hits = 0
    for start in range(0, queries.shape[0], QUERY_CHUNK):
        top = (queries[start : start + QUERY_CHUNK] @ gallery.T).argmax(1)
        hits += int((labels[top] == labels[start : start + QUERY_CHUNK]).sum())
    return hits / queries.shape[0]


def direction_metrics(queries: torch.Tensor, gallery: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
    """Recall@1/5/10, median and mean rank (and same_class@1 when labels are given) of one direction."""
    ranks = ranks_of_true_matches(queries, gallery).numpy()
    out: dict[str, float] = {f"R@{k}": float((ranks <= k).mean()) for k in RECALL_KS}
    out["median_rank"] = float(np.median(ranks))
    out["mean_rank"] = float(ranks.mean())
    if labels is not None:
        out["same_class@1"] = _same_class_at_1(queries, gallery, labels.to(queries.device))
    return out


# --------------------------------------------------------------------------------------------------
# All metrics of a split


def _subsample(n: int) -> torch.Tensor:
    if n <= UNIFORMITY_ROWS:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(SUBSAMPLE_SEED)
    return torch.randperm(n, generator=generator)[:UNIFORMITY_ROWS].sort().values


def _mean_over(entries: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    keys = next(iter(entries.values())).keys()
    return {k: statistics.fmean(e[k] for e in entries.values()) for k in keys}


def _normalised(embeddings: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: F.normalize(z.detach().float(), dim=1) for name, z in embeddings.items()}


def retrieval_metrics(embeddings: Mapping[str, torch.Tensor], labels: torch.Tensor | None = None) -> dict[str, Any]:
    """Every metric of the module docstring, from (N, d) embeddings per modality (re-normalised here)."""
    z = _normalised(embeddings)
    names = list(z)
    if len(names) < 2:
        raise ValueError(f"retrieval needs embeddings of at least two modalities, got {names}")
    directions = {f"{a}->{b}": direction_metrics(z[a], z[b], labels) for a, b in permutations(names, 2)}
    pairs = list(combinations(names, 2))
    rows = _subsample(z[names[0]].shape[0])
    sub = {name: z[name][rows] for name in names}
    gap = {f"{a}|{b}": modality_gap(z[a], z[b]) for a, b in pairs}
    align = {f"{a}|{b}": float(alignment(z[a], z[b])) for a, b in pairs}
    unif = {name: float(uniformity(sub[name])) for name in names}
    per_modality_in_union = max(2, UNIFORMITY_ROWS // len(names))
    union = torch.cat([sub[name][:per_modality_in_union] for name in names])
    return {
        "modalities": names,
        "directions": directions,
        "mean": _mean_over(directions),
        "gap": gap,
        "gap_mean": statistics.fmean(gap.values()),
        "alignment": align,
        "alignment_mean": statistics.fmean(align.values()),
        "uniformity": unif,
        "uniformity_mean": statistics.fmean(unif.values()),
        "uniformity_union": float(uniformity(union)),
        "uniformity_rows": int(rows.numel()),
    }


def mean_recall_at_1(embeddings: Mapping[str, torch.Tensor]) -> float:
    """Mean Recall@1 over every ordered pair of modalities: the epoch-selection score."""
    z = _normalised(embeddings)
    recalls = [float((ranks_of_true_matches(z[a], z[b]) <= 1).float().mean()) for a, b in permutations(z, 2)]
    return statistics.fmean(recalls)


# --------------------------------------------------------------------------------------------------
# The loop's view of the retrieval task


@dataclass
class RetrievalScores:
    """Embeddings of a whole split; metrics are computed from them on demand."""

    embeddings: dict[str, torch.Tensor]
    labels: torch.Tensor
    count: int
    _selection: float | None = field(default=None, repr=False)


def evaluate_split(
    method: Any, model: torch.nn.Module, split: MaskedSplit, num_classes: int, autocast=contextlib.nullcontext
) -> RetrievalScores:
    """Embed every sample of ``split`` with the method's ``predict`` (complete inputs, see the module doc)."""
    if type(method).zero_fill_missing and not bool(split.mask.all()):
        raise CellFailure(
            f"{type(method).__name__} is a retrieval method with zero_fill_missing = True: retrieval "
            "is measured on complete inputs, so it must set zero_fill_missing = False and mask its loss"
        )
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad(), autocast():
        for batch in iterate_batches(split, EVAL_BATCH_SIZE):
            pred = method.predict(model, batch)
            if not pred.embeddings:
                raise CellFailure(f"{type(method).__name__}.predict gave no embeddings; a retrieval method must")
            for name, z in pred.embeddings.items():
                parts.setdefault(name, []).append(z.float().cpu())
    embeddings = {name: torch.cat(chunks) for name, chunks in parts.items()}
    counts = {name: int(z.shape[0]) for name, z in embeddings.items()}
    if set(counts.values()) != {len(split)}:
        raise CellFailure(f"evaluation embedded {counts} samples per modality for a split of {len(split)}")
    return RetrievalScores(embeddings, split.labels.cpu(), len(split))


def selection_score(scores: RetrievalScores) -> float:
    if scores._selection is None:
        scores._selection = mean_recall_at_1(scores.embeddings)
    return scores._selection


def record_metrics(scores: RetrievalScores) -> dict[str, Any]:
    return {"retrieval": retrieval_metrics(scores.embeddings, scores.labels)}


def headline(metrics: Mapping[str, Any]) -> float:
    """The test number a one-line summary shows: mean Recall@1 over all directions."""
    return metrics["retrieval"]["mean"]["R@1"]
