"""Retrieval metrics on hand-built embeddings whose answers are known, against plain loops and torch.pdist."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from bench import retrieval
from bench.data import MaskedSplit
from bench.errors import CellFailure
from bench.protocol import Prediction
from bench.retrieval import (
    alignment,
    direction_metrics,
    evaluate_split,
    mean_recall_at_1,
    modality_gap,
    ranks_of_true_matches,
    retrieval_metrics,
    uniformity,
)


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def _loop_ranks(q: torch.Tensor, g: torch.Tensor) -> list[int]:
    """rank_i = number of gallery items at least as similar to query i as its true match (itself included)."""
    ranks = []
    for i in range(len(q)):
        own = float(q[i] @ g[i])
        ranks.append(sum(1 for j in range(len(g)) if float(q[i] @ g[j]) >= own))
    return ranks


def test_identical_embeddings_rank_every_match_first():
    z = _unit(30, 8, 0)
    out = direction_metrics(z, z.clone())
    assert out["R@1"] == out["R@5"] == out["R@10"] == 1.0
    assert out["median_rank"] == 1.0 and out["mean_rank"] == 1.0


def test_a_permutation_gives_the_hand_computed_ranks():
    # One-hot rows: query i is e_i, gallery row j is e_perm[j]; S_ij = 1 iff perm[j] == i.
    # Fixed points (0 and 3) find their match alone at similarity 1 (rank 1); elsewhere the match has
    # similarity 0, tied with every other item, and ties count against the query (rank 4).
    eye = torch.eye(4)
    perm = torch.tensor([0, 2, 1, 3])
    out = direction_metrics(eye, eye[perm])
    assert out["R@1"] == 0.5 and out["R@5"] == 1.0
    assert out["median_rank"] == 2.5 and out["mean_rank"] == 2.5


def test_collapsed_embeddings_rank_every_match_last_not_first():
    z = torch.ones(20, 4) / 2
    out = direction_metrics(z, z.clone())
    assert out["R@1"] == 0.0 and out["R@10"] == 0.0 and out["median_rank"] == 20.0


@pytest.mark.parametrize("chunk", [1024, 7])
def test_ranks_match_a_plain_loop_across_query_chunks(monkeypatch, chunk):
    monkeypatch.setattr(retrieval, "QUERY_CHUNK", chunk)
    q, g = _unit(40, 5, 1), _unit(40, 5, 2)
    assert ranks_of_true_matches(q, g).tolist() == _loop_ranks(q, g)
    out = direction_metrics(q, g)
    ranks = _loop_ranks(q, g)
    assert out["R@5"] == sum(r <= 5 for r in ranks) / 40
    assert out["median_rank"] == statistics.median(ranks)


def test_same_class_at_1_counts_top_items_of_the_query_class():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    g = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    labels = torch.tensor([0, 1, 1])
    # tops: query 0 -> gallery 1 (label 1, miss); query 1 -> gallery 0 (label 0, miss); query 2 -> gallery 1 (hit)
    assert direction_metrics(q, g, labels)["same_class@1"] == pytest.approx(1 / 3)


def test_modality_gap_is_the_distance_between_unnormalised_centroids():
    e1, e2 = torch.eye(2)
    assert modality_gap(torch.stack([e1, e1]), torch.stack([e2, e2])) == pytest.approx(math.sqrt(2))
    # centroid of {e1, -e1} is the origin (not re-normalised): the gap to e2's centroid is 1
    assert modality_gap(torch.stack([e1, -e1]), torch.stack([e2, e2])) == pytest.approx(1.0)


def test_uniformity_and_alignment_match_wang_isola_pdist_formulas():
    x, y = _unit(25, 6, 3), _unit(25, 6, 4)
    for t in (2.0, 0.5):
        expected = torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log()
        assert float(uniformity(x, t)) == pytest.approx(float(expected), rel=1e-5)
    for alpha in (2.0, 1.0):
        expected = (x - y).norm(p=2, dim=1).pow(alpha).mean()
        assert float(alignment(x, y, alpha)) == pytest.approx(float(expected), rel=1e-5)


def test_all_metrics_of_three_modalities(monkeypatch):
    monkeypatch.setattr(retrieval, "UNIFORMITY_ROWS", 10)
    z = {"a": _unit(16, 4, 5), "b": _unit(16, 4, 6), "c": _unit(16, 4, 7)}
    out = retrieval_metrics(z, torch.arange(16) % 3)
    assert sorted(out["directions"]) == ["a->b", "a->c", "b->a", "b->c", "c->a", "c->b"]
    assert sorted(out["gap"]) == ["a|b", "a|c", "b|c"]
    assert out["mean"]["R@1"] == pytest.approx(statistics.fmean(d["R@1"] for d in out["directions"].values()))
    assert out["directions"]["b->c"]["R@1"] == sum(r == 1 for r in _loop_ranks(z["b"], z["c"])) / 16
    assert out["gap"]["a|c"] == pytest.approx(float((z["a"].mean(0) - z["c"].mean(0)).norm()))
    assert out["alignment"]["b|c"] == pytest.approx(float((z["b"] - z["c"]).pow(2).sum(1).mean()), rel=1e-5)
    # uniformity on the same fixed subsample of 10 rows for every modality, and over their union
    assert out["uniformity_rows"] == 10
    rows = retrieval._subsample(16)
    assert len(set(rows.tolist())) == 10
    pdist_unif = torch.pdist(z["b"][rows]).pow(2).mul(-2).exp().mean().log()
    assert out["uniformity"]["b"] == pytest.approx(float(pdist_unif), rel=1e-5)
    union = torch.cat([z[m][rows][:3] for m in "abc"])  # 10 // 3 rows of each modality
    assert out["uniformity_union"] == pytest.approx(
        float(torch.pdist(union).pow(2).mul(-2).exp().mean().log()), rel=1e-5
    )
    assert mean_recall_at_1(z) == pytest.approx(out["mean"]["R@1"])


class _EmbedInputs:
    """A stand-in retrieval method whose embeddings are its normalised inputs."""

    zero_fill_missing = False

    def predict(self, model, batch):
        return Prediction(None, embeddings={k: F.normalize(v, dim=1) for k, v in batch.inputs.items()})


def _split(n: int, mask=None) -> MaskedSplit:
    z = _unit(n, 4, 8)
    mask = torch.ones(n, 2, dtype=torch.bool) if mask is None else mask
    return MaskedSplit({"a": z, "b": z.clone()}, torch.zeros(n, dtype=torch.long), mask)


def test_evaluate_split_embeds_the_whole_split_across_batches(monkeypatch):
    monkeypatch.setattr(retrieval, "EVAL_BATCH_SIZE", 7)
    scores = evaluate_split(_EmbedInputs(), torch.nn.Identity(), _split(30), 1)
    assert scores.count == 30 and retrieval.selection_score(scores) == 1.0
    assert retrieval.record_metrics(scores)["retrieval"]["mean"]["median_rank"] == 1.0


def test_evaluate_split_refuses_zero_filled_inputs_of_a_masked_split():
    class ZeroFilling(_EmbedInputs):
        zero_fill_missing = True

    mask = torch.ones(10, 2, dtype=torch.bool)
    mask[0, 1] = False
    with pytest.raises(CellFailure, match="zero_fill_missing"):
        evaluate_split(ZeroFilling(), torch.nn.Identity(), _split(10, mask), 1)
    # a method that sees complete inputs is scored on all of them, masks notwithstanding
    assert evaluate_split(_EmbedInputs(), torch.nn.Identity(), _split(10, mask), 1).count == 10


def test_a_prediction_without_embeddings_fails_the_cell():
    class Logits(_EmbedInputs):
        def predict(self, model, batch):
            return Prediction(torch.zeros(len(batch), 2))

    with pytest.raises(CellFailure, match="no embeddings"):
        evaluate_split(Logits(), torch.nn.Identity(), _split(5), 1)


# --------------------------------------------------------------------------------------------------
# Leaderboard: retrieval records get their own tables; classification tables never see them


def _spec(method: str, dataset: str, seed: int, rate: float = 0.0, hparams=None) -> dict:
    return {
        "method": method,
        "hparams": hparams or {"lr": 0.001},
        "dataset": dataset,
        "dataset_version": "1",
        "seed": seed,
        "missing_rate": rate,
        "epochs": 5,
        "batch_size": 64,
        "missing_on": "all",
        "patience": None,
        "precision": "fp32",
        "hparams_source": "default",
        "protocol": 1,
        "extra": {},
    }


def _retrieval_record(method, seed, r1_ab, gap_ab, *, modalities=("a", "b"), rate=0.0, status="ok", hparams=None):
    directions = {
        f"{x}->{y}": {"R@1": r1_ab, "R@5": 0.5, "R@10": 0.7, "median_rank": 3.0, "mean_rank": 4.0, "same_class@1": 0.9}
        for x in modalities
        for y in modalities
        if x != y
    }
    metrics = (
        None
        if status != "ok"
        else {
            "retrieval": {
                "modalities": list(modalities),
                "directions": directions,
                "mean": directions["a->b"],
                "gap": {"a|b": gap_ab},
                "gap_mean": gap_ab,
                "alignment_mean": 1.0,
                "uniformity_mean": -3.0,
                "uniformity_union": -3.5,
            },
            "best_val_mean_recall_at_1": r1_ab,
        }
    )
    notes = {"modalities": ["a", "b", "c"], "task": "retrieval"} if status == "ok" else {}
    return {
        "key": f"{method}{seed}{rate}",
        "spec": _spec(method, "toy3", seed, rate, hparams),
        "status": status,
        "metrics": metrics,
        "notes": notes,
    }


def _classification_record(method, seed, acc):
    return {
        "key": f"{method}{seed}",
        "spec": _spec(method, "toy3", seed),
        "status": "ok",
        "metrics": {"accuracy": acc, "macro_f1": acc, "per_modality_accuracy": {"a": acc, "b": acc, "c": acc}},
        "notes": {"modalities": ["a", "b", "c"]},
    }


FAMILY = {"lr": 0.001, "modalities": "2"}
RECORDS = [
    _classification_record("late_fusion", 0, 0.6),
    _classification_record("late_fusion", 1, 0.7),
    _retrieval_record("align_clip", 0, 0.30, 0.50, hparams=FAMILY),
    _retrieval_record("align_clip", 1, 0.40, 0.60, hparams=FAMILY),
    _retrieval_record(
        "align_pairwise", 0, 0.20, 0.80, modalities=("a", "b", "c"), hparams={**FAMILY, "modalities": "all"}
    ),
    _retrieval_record(
        "align_pairwise", 1, 0.24, 0.90, modalities=("a", "b", "c"), hparams={**FAMILY, "modalities": "all"}
    ),
    _retrieval_record("align_pairwise", 2, None, None, status="failed", hparams={**FAMILY, "modalities": "all"}),
]


def test_split_by_task_sends_failed_cells_of_retrieval_methods_to_retrieval():
    from bench.tables.common import split_by_task

    classification, retrieval_records = split_by_task(RECORDS)
    assert [r["spec"]["method"] for r in classification] == ["late_fusion", "late_fusion"]
    assert len(retrieval_records) == 5 and retrieval_records[-1]["status"] == "failed"


def test_classification_tables_ignore_retrieval_records_and_retrieval_tables_follow():
    from bench.tables.leaderboard import leaderboard, results_readme

    text = leaderboard(RECORDS)
    classification, retrieval_part = text.split("## toy3 · retrieval")
    assert "align_" not in classification and "late_fusion" in classification
    assert "7 cell records (6 ok, 1 failed)" in classification
    assert "late_fusion" not in retrieval_part and "**complete** splits" in retrieval_part
    # main table: R@1 in %, the number of modalities, and the failed cell shown
    assert "| align_clip | 2 | **35.00 ± 7.07 (n=2)** |" in retrieval_part
    assert "| align_pairwise | 3 | <u>22.00 ± 2.83 (n=2)</u> ⚠ 1 failed |" in retrieval_part
    # 2 vs 3 modalities on the shared pair a <-> b, paired by seed: R@1 (20 - 30, 24 - 40) -> -13 points
    row = next(line for line in retrieval_part.splitlines() if line.startswith("| align_clip (2) → align_pairwise (3)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:5] == ["35.00 ± 7.07 (n=2)", "22.00 ± 2.83 (n=2)", "-13.00 [-51.12, +25.12] (n=2 seeds)"]
    assert cells[6:8] == ["0.550 ± 0.071 (n=2)", "0.850 ± 0.071 (n=2)"] and cells[8].startswith("+0.300 [")
    assert cells[9] == "n/a (< 3 seeds)"  # two seeds make no significance claim
    # paired t-test against the reference: differences -0.10 and -0.16 -> mean -13 pp over 2 seeds, the t interval
    # with 1 degree of freedom (12.71 x 0.0424 / sqrt 2 = 38.12 pp), and no claim with fewer than 3 seeds
    assert "| align_pairwise | -13.00 [-51.12, +25.12] (n=2 seeds) | n/a (< 3 seeds) | no claim |" in retrieval_part
    readme = results_readme(RECORDS)  # accuracy summaries skip retrieval records without failing
    assert "`late_fusion`" in readme and "align_clip" in readme  # the regenerate command still lists them


def test_retrieval_cells_under_test_time_noise_are_counted_not_tabulated_and_break_nothing():
    from bench.tables.leaderboard import leaderboard, results_readme

    noisy = _retrieval_record("align_clip", 5, 0.5, 0.5, hparams=FAMILY)
    noisy["spec"] = {**noisy["spec"], "noise": "gaussian", "noise_levels": [0.0, 10.0]}
    noisy["metrics"]["noise"] = {"0": {"retrieval": noisy["metrics"]["retrieval"]}}
    text = leaderboard(RECORDS + [noisy])
    assert "Retrieval: 1 cell records scored under test-time noise" in text
    assert "| align_clip | 2 | **35.00 ± 7.07 (n=2)** |" in text  # the noisy cell is not averaged in
    assert "align_clip" in results_readme(RECORDS + [noisy])


def test_retrieval_ranking_across_datasets_uses_the_shared_pair_by_hand(tmp_path):
    """x > y > z on the shared pair a <-> b of each of 3 datasets: ranks 1, 2, 3, chi-square =
    12*3/(3*4) * (1 + 4 + 9 - 3*16/4) = 6, p = exp(-6/2); Nemenyi CD = 2.343 * sqrt(3*4 / (6*3)) = 1.91.
    z's mean R@1 over all its directions is the highest, and must not count: rows with different
    modalities are ranked on the pair they all embed."""
    from bench.tables.leaderboard import leaderboard
    from bench.tables.plots import cd_diagram_names
    from bench.tables.retrieval import retrieval_rankings

    records = []
    for dataset in ("d0", "d1", "d2"):
        for method, r1 in (("x", 0.5), ("y", 0.4), ("z", 0.3)):
            for seed in (0, 1):
                r = _retrieval_record(method, seed, r1 + 0.01 * seed, 0.5)
                if method == "z":
                    r["metrics"]["retrieval"]["mean"] = {**r["metrics"]["retrieval"]["mean"], "R@1": 0.9}
                r["spec"]["dataset"], r["key"] = dataset, r["key"] + dataset
                records.append(r)
    (ranking,) = retrieval_rankings(records)
    assert ranking["track"] == "retrieval" and ranking["datasets"] == ["d0", "d1", "d2"]
    assert ranking["average"] == {"x": 1.0, "y": 2.0, "z": 3.0}
    assert ranking["chi2"] == pytest.approx(6.0) and ranking["p"] == pytest.approx(math.exp(-3))
    assert ranking["cd"] == pytest.approx(2.343 * math.sqrt(12 / 18), abs=2e-3)
    text = leaderboard(records)
    assert "## Retrieval ranking across datasets" in text and "| z | 3.00 | no |" in text
    ((name, caption),) = cd_diagram_names(records)
    assert name.startswith("critical_difference_retrieval_") and caption.startswith("Retrieval objectives.")
    assert retrieval_rankings(records[:12]) == []  # two datasets: no ranking
