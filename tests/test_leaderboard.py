"""The table is a pure function of hand-made records."""

from __future__ import annotations

from bench.leaderboard import leaderboard


def _record(method, seed, acc, *, rate=0.0, status="ok", epochs=10, lr=0.001, per=None):
    spec = {"method": method, "hparams": {"lr": lr}, "dataset": "toy", "dataset_version": "1", "seed": seed,
            "missing_rate": rate, "epochs": epochs, "batch_size": 64, "missing_on": "all", "patience": None,
            "precision": "fp32", "hparams_source": "default", "protocol": 1, "extra": {}}
    metrics = None if status != "ok" else {"accuracy": acc, "macro_f1": acc - 0.01,
                                          "per_modality_accuracy": per or {"audio": acc - 0.2, "video": acc - 0.1}}
    return {"key": f"{method}{seed}{rate}{epochs}{lr}", "spec": spec, "status": status, "metrics": metrics,
            "notes": {"modalities": ["audio", "video"]}}


RECORDS = [
    _record("late_fusion", 0, 0.60), _record("late_fusion", 1, 0.62),
    _record("mla", 0, 0.70), _record("mla", 1, 0.74),
    _record("mla", 0, 0.50, rate=0.5), _record("late_fusion", 0, 0.40, rate=0.5),
    _record("qmf", 0, None, status="failed"),
]


def test_rows_means_stds_and_bold_best():
    text = leaderboard(RECORDS)
    assert "| mla | **52.00 ± 2.83 (n=2)** | **62.00 ± 2.83 (n=2)** | **72.00 ± 2.83 (n=2)** |" in text
    assert "| late_fusion | 41.00 ± 1.41 (n=2) | 51.00 ± 1.41 (n=2) | 61.00 ± 1.41 (n=2) | 60.00 ± 1.41 (n=2) |" in text
    assert "| qmf | failed (1) | failed (1) | failed (1) | failed (1) |" in text
    assert "| mla | **72.00 ± 2.83 (n=2)** | **50.00 ± 0.00 (n=1)** |" in text
    assert "7 cell records (6 ok, 1 failed)" in text


def test_output_is_deterministic_under_reordering():
    assert leaderboard(RECORDS) == leaderboard(list(reversed(RECORDS)))


def test_different_protocols_never_share_a_table():
    text = leaderboard([_record("mla", 0, 0.7), _record("mla", 0, 0.9, epochs=20)])
    assert text.count("## toy") == 2 and "10 epochs" in text and "20 epochs" in text


def test_different_hyperparameters_get_separate_rows():
    text = leaderboard([_record("mla", 0, 0.7), _record("mla", 1, 0.9, lr=0.01)])
    assert text.count("| mla (cfg ") >= 2
