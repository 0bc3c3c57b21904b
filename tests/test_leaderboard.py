"""The tables are a pure function of hand-made records; the statistics are checked against hand values."""

from __future__ import annotations

import math

import pytest

from bench.tables.leaderboard import holm, leaderboard, paired_t_pvalue


def _record(method, seed, acc, *, rate=0.0, status="ok", epochs=10, lr=0.001, per=None, hparams=None, source="default"):
    spec = {
        "method": method,
        "hparams": hparams or {"lr": lr},
        "dataset": "toy",
        "dataset_version": "1",
        "seed": seed,
        "missing_rate": rate,
        "epochs": epochs,
        "batch_size": 64,
        "missing_on": "all",
        "patience": None,
        "precision": "fp32",
        "hparams_source": source,
        "protocol": 1,
        "extra": {},
    }
    metrics = (
        None
        if status != "ok"
        else {
            "accuracy": acc,
            "macro_f1": acc - 0.01,
            "per_modality_accuracy": per or {"audio": acc - 0.2, "video": acc - 0.1},
        }
    )
    return {
        "key": f"{method}{seed}{rate}{epochs}{lr}{hparams}",
        "spec": spec,
        "status": status,
        "metrics": metrics,
        "notes": {"modalities": ["audio", "video"]},
    }


RECORDS = [
    _record("late_fusion", 0, 0.60),
    _record("late_fusion", 1, 0.62),
    _record("mla", 0, 0.70),
    _record("mla", 1, 0.74),
    _record("mla", 0, 0.50, rate=0.5),
    _record("late_fusion", 0, 0.40, rate=0.5),
    _record("qmf", 0, None, status="failed"),
]


def test_rows_means_stds_best_bold_second_underlined_failed_shown():
    text = leaderboard(RECORDS)
    assert "| mla | **52.00 ± 2.83 (n=2)** | **62.00 ± 2.83 (n=2)** | **72.00 ± 2.83 (n=2)** |" in text
    assert "| late_fusion | <u>41.00 ± 1.41 (n=2)</u> | <u>51.00 ± 1.41 (n=2)</u> | <u>61.00 ± 1.41 (n=2)</u> |" in text
    assert "| qmf | failed (1) | failed (1) | failed (1) | failed (1) |" in text
    assert "7 cell records (6 ok, 1 failed)" in text
    assert "paper-default hyperparameters (untuned)" in text and "Protocol v1" in text


def test_missing_rate_table_has_the_normalised_area_per_seed():
    text = leaderboard(RECORDS)
    # seed 0 of mla: (0.70 + 0.50) / 2 over the range 0-0.5 -> 0.60; seed 1 has no 0.5 cell, so no AUC
    assert "| mla | **72.00 ± 2.83 (n=2)** | **50.00 ± 0.00 (n=1)** | **60.00 ± 0.00 (n=1)** |" in text
    assert "| late_fusion | <u>61.00 ± 1.41 (n=2)</u> | <u>40.00 ± 0.00 (n=1)</u> | <u>50.00 ± 0.00 (n=1)</u> |" in text


def test_output_is_deterministic_under_reordering():
    assert leaderboard(RECORDS) == leaderboard(list(reversed(RECORDS)))


def test_different_protocols_and_tuning_never_share_a_table():
    text = leaderboard(
        [
            _record("mla", 0, 0.7),
            _record("mla", 0, 0.9, epochs=20),
            _record("mla", 1, 0.8, source="tuned:mla/toy/e10/p1:20-trials"),
        ]
    )
    assert text.count("## toy") == 3 and "10 epochs" in text and "20 epochs" in text
    assert "tuned on validation (20 trials per method and dataset)" in text


def test_different_hyperparameters_get_separate_rows():
    text = leaderboard([_record("mla", 0, 0.7), _record("mla", 1, 0.9, lr=0.01)])
    assert text.count("| mla (cfg ") >= 2


def test_laziness_table_pairs_joint_modalities_with_trained_alone_by_seed():
    alone = [_record("unimodal", s, 0.5, per={"audio": 0.60, "video": 0.70}) for s in (0, 1)]
    for r in alone:
        r["notes"]["per_modality_trained_alone"] = True
    joint = [
        _record("late_fusion", 0, 0.8, per={"audio": 0.50, "video": 0.72}),
        _record("late_fusion", 1, 0.8, per={"audio": 0.54, "video": 0.70}),
    ]
    text = leaderboard(alone + joint)
    assert "| late_fusion | -8.00 ± 2.83 (n=2) | +1.00 ± 1.41 (n=2) |" in text
    assert "| unimodal | " not in text.split("minus the same modality")[1].split("\n\n")[1]


def test_ablation_table_shows_the_fields_that_differ():
    rows = []
    for seed, base in ((0, 0.70), (1, 0.72)):
        rows.append(_record("mla", seed, base, hparams={"lr": 0.001, "hgm": "paper", "fusion": "entropy"}))
        rows.append(_record("mla_no_hgm", seed, base - 0.05, hparams={"lr": 0.001, "hgm": "none", "fusion": "entropy"}))
    text = leaderboard(rows)
    assert "Ablation of the mla/mla_no_hgm family:" in text
    assert "| row | hgm | multimodal acc (no missing) |" in text
    assert "| mla_no_hgm | none | <u>66.00 ± 1.41 (n=2)</u> |" in text


def test_friedman_ranking_across_datasets_by_hand():
    """a > b > c on each of 4 datasets: ranks 1, 2, 3; chi-square = 12*4/(3*4) * (1 + 4 + 9 - 3*16/4) = 8,
    p = exp(-8/2) (chi-square with 2 df); Nemenyi CD = 2.343 * sqrt(3*4 / (6*4)) = 1.657 (Demsar's q for k = 3)."""
    rows = []
    for d in range(4):
        for m, acc in (("a", 0.9), ("b", 0.8), ("c", 0.7 + 0.01 * d)):
            r = _record(m, 0, acc - 0.01 * d)
            r["spec"]["dataset"], r["key"] = f"toy{d}", r["key"] + str(d)
            rows.append(r)
    text = leaderboard(rows, baseline="a")
    assert f"chi-square = 8.00, p = {math.exp(-4):.3g}" in text and "critical difference at 0.05: 1.66 ranks" in text
    assert "| a | 1.00 | yes |" in text and "| b | 2.00 | yes |" in text and "| c | 3.00 | no |" in text


def test_friedman_helpers_equal_what_scipy_stats_computes():
    """The ranking avoids importing scipy.stats: its ties, p-value and quantile table must equal scipy.stats'."""
    from scipy import stats
    from scipy.special import chdtrc

    from bench.tables.common import STUDENTIZED_RANGE_95, _average_ranks, _studentized_range_95

    for values in ([3.0, 1.0, 2.0], [0.5, 0.5, 0.1, 0.9, 0.5], [1.0] * 4, [2.0, 1.0, 2.0, 1.0]):
        assert _average_ranks(values) == list(stats.rankdata(values))
    assert len(STUDENTIZED_RANGE_95) == 59
    for k in range(2, 62):  # 61: beyond the table, from scipy.stats
        assert _studentized_range_95(k) == float(stats.studentized_range.ppf(0.95, k, 1e6))
    for chi2, df in ((8.0, 2), (13.03, 5), (0.0, 3)):
        assert float(chdtrc(df, chi2)) == float(stats.chi2.sf(chi2, df))


def test_paired_t_pvalue_matches_hand_computation():
    # differences 1, 2, 3: mean 2, sd 1, t = 2 / (1 / sqrt 3) = 3.4641, df 2 -> two-sided p = 0.07418
    assert paired_t_pvalue([1.0, 2.0, 3.0]) == pytest.approx(0.07418, abs=1e-4)
    # identical differences have no variance: no t statistic, hence no claim either way
    assert math.isnan(paired_t_pvalue([0.0, 0.0])) and math.isnan(paired_t_pvalue([0.5, 0.5]))
    assert math.isnan(paired_t_pvalue([1.0]))


def test_holm_adjustment_by_hand():
    # sorted 0.01, 0.02, 0.04 -> 3*0.01, max(0.03, 2*0.02), max(0.04, 1*0.04)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert math.isnan(holm([math.nan, 0.2])[0]) and holm([math.nan, 0.2])[1] == pytest.approx(0.2)


def test_significance_table_marks_rows_not_worse_than_best():
    rows = [_record("late_fusion", s, 0.60 + 0.01 * s) for s in range(5)]
    rows += [_record("mla", s, 0.70 + 0.01 * s + (0.001 if s % 2 else 0)) for s in range(5)]
    rows += [_record("qmf", s, 0.70 + 0.01 * s - (0.001 if s % 2 else 0)) for s in range(5)]
    text = leaderboard(rows)
    table = text.split("Paired t-tests")[1]
    late_row = next(line for line in table.splitlines() if line.startswith("| late_fusion |"))
    assert late_row.startswith("| late_fusion |  |  | -10.04 [") and "(n=5 seeds)" in late_row
    assert late_row.endswith("| worse than best |")
    assert "| qmf | +9.96 [" in table and "≈ best" in table.split("| qmf |")[1].split("\n")[0]


def test_capped_missing_rates_show_the_realised_fraction():
    rows = [_record("mla", 0, 0.7), _record("mla", 0, 0.5, rate=0.7)]
    rows[0]["notes"]["missing_fraction_test"] = 0.0
    rows[1]["notes"]["missing_fraction_test"] = 0.5
    # the capped nominal rate is read as the rate whose masks it realised
    assert "| method | rate 0 | rate 0.5 | AUC over 0-0.5 |" in leaderboard(rows)


def test_plots_never_mix_settings(tmp_path):
    from bench.tables.plots import missing_rate_plots, plot_names

    rows = [
        _record("mla", 0, 0.7),
        _record("mla", 0, 0.5, rate=0.5),
        _record("mla", 0, 0.8, source="tuned:s:5-trials"),
        _record("mla", 0, 0.6, rate=0.5, source="tuned:s:5-trials"),
    ]
    names = plot_names(rows)
    assert len(names) == 2 and names[0][0] != names[1][0]
    assert any("tuned" in caption for _, caption in names)
    written = missing_rate_plots(rows, tmp_path)
    assert sorted(p.name for p in written) == sorted(n for n, _ in names)


def test_the_results_page_names_significant_rows_with_their_holm_p():
    """mla beats late_fusion by 10 +- 1 points on 4 matched cells (p << 0.05 after Holm over 2 rows); qmf's
    differences average 0, so it is counted as not significantly different."""
    from bench.tables.leaderboard import results_readme

    rows = []
    for seed, (lf, mla, qmf) in enumerate(
        [(0.60, 0.70, 0.62), (0.61, 0.72, 0.59), (0.62, 0.71, 0.63), (0.63, 0.74, 0.62)]
    ):
        rows += [_record("late_fusion", seed, lf), _record("mla", seed, mla), _record("qmf", seed, qmf)]
    (line,) = [s for s in results_readme(rows).splitlines() if s.startswith("- **toy**")]
    assert "best without missing modalities is `mla` at 71.75%, 10.25 points ahead of `qmf`" in line
    p = holm([paired_t_pvalue([0.10, 0.11, 0.09, 0.11]), paired_t_pvalue([0.02, -0.02, 0.01, -0.01])])[0]
    assert "significantly better `mla` +10.25 [" in line and f"(n=4 seeds) (p = {p:.2g})" in line
    assert "the other 1 not significantly different" in line and "significantly worse" not in line


def test_the_results_page_says_which_cpus_made_the_records():
    from bench.tables.leaderboard import results_readme

    rows = [_record("late_fusion", seed, 0.6) for seed in range(4)]
    for row, cpu in zip(rows, ["GenuineIntel 6/167 avx2", "GenuineIntel 6/167 avx2", "AuthenticAMD 23/49 avx2"]):
        row["environment"] = {"cpu": cpu}
    (line,) = [s for s in results_readme(rows).splitlines() if s.startswith("Machines:")]
    assert line.startswith(
        "Machines: 4 records, 1 of them made before records named their CPU, the others on "
        "`AuthenticAMD 23/49 avx2` (1); `GenuineIntel 6/167 avx2` (2)."
    )


def _paired_rows(rates, *, seeds=(0, 1, 2, 3)):
    """late_fusion and qmf on the same cells; qmf is ahead by a seed-dependent amount, the same at every rate."""
    rows = []
    for seed in seeds:
        for rate in rates:
            base = 0.6 - 0.1 * rate + 0.01 * seed
            rows += [
                _record("late_fusion", seed, base, rate=rate),
                _record("qmf", seed, base + 0.02 + 0.01 * (seed % 2), rate=rate),
            ]
    return rows


def test_the_paired_test_counts_one_difference_per_seed_not_per_cell():
    """Four seeds x three rates: twelve matched cells, but n = 4, and p is the t-test of the four per-seed means."""
    text = leaderboard(_paired_rows((0.0, 0.25, 0.5)))
    table = text.split("Paired t-tests")[1]
    qmf = next(line for line in table.splitlines() if line.startswith("| qmf |"))
    assert "(n=4 seeds)" in qmf and "n=12" not in qmf
    p = paired_t_pvalue([0.02, 0.03, 0.02, 0.03])  # one difference per seed; Holm over one row leaves it
    assert f"{p:.3g} *" in qmf


def test_fewer_than_three_seeds_make_no_claim():
    """One seed x two rates, qmf ahead of late fusion by exactly the same amount: no p-value, no verdict."""
    rows = _paired_rows((0.0, 0.5), seeds=(0,))
    text = leaderboard(rows)
    table = text.split("Paired t-tests")[1]
    qmf = next(line for line in table.splitlines() if line.startswith("| qmf |"))
    assert "n/a (< 3 seeds)" in qmf and "*" not in qmf
    from bench.tables.leaderboard import results_readme

    (line,) = [s for s in results_readme(rows).splitlines() if s.startswith("- **toy**")]
    assert "significantly" not in line.replace("not significantly", "") and "without a claim" in line


def test_zero_variance_differences_make_no_claim():
    rows = []
    for seed in range(4):
        rows += [_record("late_fusion", seed, 0.60 + 0.01 * seed), _record("qmf", seed, 0.61 + 0.01 * seed)]
    table = leaderboard(rows).split("Paired t-tests")[1].splitlines()
    qmf = next(line for line in table if line.startswith("| qmf |"))
    late = next(line for line in table if line.startswith("| late_fusion |"))
    assert "n/a (no variance)" in qmf and "*" not in qmf
    assert late.endswith("| no claim |") and "n/a (no variance)" in late


def test_the_confidence_interval_is_the_t_interval_of_the_seed_differences():
    from scipy import stats

    from bench.tables.common import Comparison

    c = Comparison((0.01, 0.03, 0.02), p=0.1)
    half = stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert c.interval() == pytest.approx((0.02 - half, 0.02 + half))
    assert c.describe() == f"+2.00 [{100 * (0.02 - half):+.2f}, {100 * (0.02 + half):+.2f}] (n=3 seeds)"


def test_capped_rates_are_one_cell_in_the_tables():
    """Rate 0.7 on two modalities realises the masks of 0.5: its record is dropped where the 0.5 twin exists, so
    the table has no 0.7 column and the AUC has no flat extra segment; without a twin it is read as 0.5."""
    rows = _paired_rows((0.0, 0.5)) + [r for r in _paired_rows((0.7,))]
    text = leaderboard(rows)
    assert "rate 0.7" not in text and "AUC over 0-0.5" in text
    assert text == leaderboard(_paired_rows((0.0, 0.5)))
    alone = leaderboard(_paired_rows((0.0, 0.7)))
    assert "rate 0.7" not in alone and "rate 0.5" in alone


def test_a_bayes_ceiling_is_an_unranked_reference_row_counted_once_per_seed_and_rate():
    records = []
    for seed, ceiling in ((0, 0.90), (1, 0.94)):
        for method, acc in (("late_fusion", 0.70), ("mla", 0.75)):
            for rate, shift in ((0.0, 0.0), (0.5, 0.1)):
                r = _record(method, seed, acc - shift, rate=rate)
                r["notes"].update(bayes_accuracy=ceiling - shift, bayes_accuracy_alone={"audio": 0.6, "video": 0.8})
                records.append(r)
    text = leaderboard(records)
    rows = [line for line in text.splitlines() if line.startswith("| *Bayes ceiling")]
    assert len(rows) == 2  # the complete-data table and the missing-rate table
    main, by_rate = rows
    assert "60.00 ± 0.00 (n=2)" in main and "80.00 ± 0.00 (n=2)" in main  # each modality alone
    assert "92.00 ± 2.83 (n=2)" in main and "**" not in main  # n = seeds, not seeds x methods; never ranked
    assert "82.00 ± 2.83 (n=2)" in by_rate and "87.00 ± 2.83 (n=2)" in by_rate  # rate 0.5, and the AUC
    assert "Bayes" not in leaderboard(RECORDS)  # datasets without an oracle have no such row


def test_the_knob_sweep_gives_each_method_its_gap_to_the_ceiling_at_every_value(tmp_path):
    from bench.tables.plots import sweep_plot_names, sweep_plots

    records = []
    for coverage, ceiling in ((0.5, 0.90), (0.9, 0.96)):
        for seed, acc in ((0, 0.80), (1, 0.84)):
            r = _record("late_fusion", seed, acc)
            r["spec"]["dataset_version"] = f"1-cov{coverage:g}"
            r["spec"]["extra"] = {"dataset_options": {"coverage": coverage}}
            r["notes"].update(bayes_accuracy=ceiling, dataset_options={"coverage": coverage})
            records.append(r)
    text = leaderboard(records)
    section = text.split("## toy: gap to the Bayes ceiling against `coverage`")[1]
    row = next(line for line in section.splitlines() if line.startswith("| late_fusion |"))
    assert "| coverage = 0.5 | coverage = 0.9 |" in section
    assert "8.00 ± 2.83 (n=2)" in row and "14.00 ± 2.83 (n=2)" in row  # one row across the knob's values
    assert len(sweep_plot_names(records)) == 1 and "gap to the Bayes ceiling" not in leaderboard(records[:2])
    (path,) = sweep_plots(records, tmp_path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_critical_difference_diagram_shows_the_friedman_ranking_of_the_table(tmp_path):
    from bench.tables.leaderboard import classification_sections, cross_dataset_rankings
    from bench.tables.plots import cd_diagram_names, cd_diagrams

    records = []
    for d, dataset in enumerate(("a", "b", "c")):
        for m, method in enumerate(("late_fusion", "mla", "qmf")):
            for seed in (0, 1):
                r = _record(method, seed, 0.5 + 0.1 * m + 0.01 * d)
                r["spec"]["dataset"] = dataset
                records.append(r)
    (ranking,) = cross_dataset_rankings(classification_sections(records))
    assert ranking["average"] == {"qmf": 1.0, "mla": 2.0, "late_fusion": 3.0} and ranking["datasets"] == ["a", "b", "c"]
    assert f"{ranking['cd']:.2f} ranks" in leaderboard(records)  # the table and the diagram agree
    ((name, caption),) = cd_diagram_names(records)
    (path,) = cd_diagrams(records, tmp_path)
    assert path.name == name and f"{ranking['cd']:.2f}" in caption and path.read_bytes()[:4] == b"\x89PNG"
    assert cd_diagram_names(records[:12]) == []  # two datasets: no ranking, no diagram


def test_records_scored_from_saved_models_get_their_own_table_with_plain_row_names():
    trained = [_record("mla", seed, 0.7) for seed in (0, 1)] + [_record("late_fusion", seed, 0.6) for seed in (0, 1)]
    evaluated = []
    for r in trained:
        e = _record(r["spec"]["method"], r["spec"]["seed"], 0.3, rate=0.5)
        e["spec"]["extra"] = {"evaluated_from": r["key"]}
        e["key"] += "eval"
        evaluated.append(e)
    text = leaderboard(trained + evaluated)
    assert text.count("## toy") == 2 and "scored from saved models (bench eval)" in text
    assert "(cfg " not in text  # the source key does not split a method into configurations
    trained_section = text.split("scored from saved models")[0]
    assert "30.00" not in trained_section  # evaluated accuracies never enter the trained cells' table
