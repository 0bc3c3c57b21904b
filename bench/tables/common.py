"""What every table of records shares: settings, row labels, grouping and the paired statistics.

Pure functions of records (:class:`bench.record.Record`; no I/O, no torch), used by the classification
leaderboards (:mod:`bench.tables.leaderboard`), the retrieval ones (:mod:`bench.tables.retrieval`), the plots
and the papers table.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.record import SETTING_FIELDS, Record, config_id, records_of, setting_key, tuning_label
from bench.spec import canonical_json

__all__ = [
    "ALPHA",
    "MIN_SEEDS",
    "SETTING_FIELDS",
    "Cell",
    "Comparison",
    "RecordSet",
    "by_setting",
    "ceiling_sweeps",
    "compare_paired",
    "computed_once",
    "config_id",
    "drop_capped_duplicates",
    "friedman_nemenyi",
    "holm",
    "in_table_order",
    "markdown_table",
    "mean_std",
    "cells_by_label",
    "paired_t_pvalue",
    "per_seed_differences",
    "rank_across_datasets",
    "ranked",
    "ranking_markdown",
    "ranks",
    "row_labels",
    "setting_key",
    "setting_title",
    "split_by_task",
    "summarize",
    "table_order",
    "text_order",
    "tuning_label",
]

ALPHA = 0.05
#: A paired comparison over fewer seeds makes no significance claim: the seed is the unit of replication,
#: and two seeds give one degree of freedom, where one lucky test sample decides the verdict.
MIN_SEEDS = 3


# --------------------------------------------------------------------------------------------------
# Statistics


def summarize(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std, n); std is 0 for a single value."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = statistics.fmean(values)
    return mean, (_sample_std(values, mean) if n > 1 else 0.0), n


def _sample_std(values: Sequence[float], mean: float) -> float:
    """The sample standard deviation in floats: ``statistics.stdev`` computes it exactly with fractions, which
    took a third of ``bench table`` at 20,000 records; the tables print 2 to 3 significant digits of it."""
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def paired_t_pvalue(differences: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test (H0: mean difference 0); nan with fewer than 2 pairs and when
    every difference is the same (zero variance: the t statistic is undefined, so there is no claim to make)."""
    n = len(differences)
    if n < 2:
        return math.nan
    mean, std, _ = summarize(differences)
    if std == 0:
        return math.nan
    from scipy.special import stdtr  # Student's t CDF: what scipy.stats.t.sf evaluates, without its overhead

    return float(2 * stdtr(n - 1, -abs(mean / (std / math.sqrt(n)))))


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of two rows, over seeds: the mean difference, its 95% t confidence interval,
    the two-sided p (Holm-adjusted where the caller adjusts) and whether a significance claim may be made."""

    differences: tuple[float, ...]  # one per seed
    p: float

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.differences)

    @property
    def claim(self) -> bool:
        """False with fewer than MIN_SEEDS seeds or zero-variance differences: then no verdict at all."""
        return self.n >= MIN_SEEDS and not math.isnan(self.p)

    @property
    def significant(self) -> bool:
        return self.claim and self.p < ALPHA

    def interval(self) -> tuple[float, float]:
        """95% t interval of the mean difference; (nan, nan) below two seeds."""
        if self.n < 2:
            return math.nan, math.nan
        from scipy.special import stdtrit  # inverse of the t CDF: what scipy.stats.t.ppf evaluates

        half = stdtrit(self.n - 1, 0.975) * statistics.stdev(self.differences) / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    def describe(self, scale: float = 100.0, digits: int = 2) -> str:
        """``+1.23 [0.40, 2.06] (n=5 seeds)``: the mean difference and its 95% interval, in percentage points."""
        low, high = self.interval()
        interval = "" if math.isnan(low) else f" [{scale * low:+.{digits}f}, {scale * high:+.{digits}f}]"
        return f"{scale * self.mean:+.{digits}f}{interval} (n={self.n} seed{'s' if self.n != 1 else ''})"

    def p_text(self) -> str:
        if self.n < MIN_SEEDS:
            return f"n/a (< {MIN_SEEDS} seeds)"
        if math.isnan(self.p):
            return "n/a (no variance)"
        return f"{self.p:.3g}{' *' if self.p < ALPHA else ''}"


def cells_by_label(
    records: Sequence[Record], labels: Sequence[str], value: Callable[[Record], float | None]
) -> dict[str, dict[tuple[int, float], float]]:
    """Row label -> (seed, missing rate) -> ``value`` of that row's ok records (``labels`` name each record's
    row): the cells, hence the masks, that a paired comparison matches (:func:`per_seed_differences`). One pass
    for all rows: a table compares every row with one or two others, and asking row by row would read the
    records once per row."""
    cells: dict[str, dict[tuple[int, float], float]] = defaultdict(dict)
    for r, lab in zip(records, labels):
        if r.ok and (v := value(r)) is not None:
            cells[lab][(r.seed, r.missing_rate)] = v
    return dict(cells)


def per_seed_differences(a: Mapping[tuple[int, float], float], b: Mapping[tuple[int, float], float]) -> list[float]:
    """Row a minus row b, one number per seed: the mean over the missing rates both rows have for that seed.

    Cells of one seed share its initialisation and (nested) masks, so they are not independent replicates;
    pooling them would count one seed several times. ``a`` and ``b`` map (seed, effective rate) -> value."""
    by_seed: dict[int, list[float]] = defaultdict(list)
    for key in sorted(set(a) & set(b)):
        by_seed[key[0]].append(a[key] - b[key])
    return [statistics.fmean(values) for _, values in sorted(by_seed.items())]


def compare_paired(pairs: Sequence[tuple[Mapping, Mapping]]) -> list[Comparison]:
    """Per-seed paired t-tests of each (row, reference) value map, Holm-adjusted together."""
    diffs = [per_seed_differences(a, b) for a, b in pairs]
    adjusted = holm([paired_t_pvalue(d) if len(d) >= MIN_SEEDS else math.nan for d in diffs])
    return [Comparison(tuple(d), p) for d, p in zip(diffs, adjusted)]


#: ``scipy.stats.studentized_range.ppf(0.95, k, 1e6)`` for k = 2 .. 60 (the upper 5 % point of the range of k
#: standard normals; ``tests/test_tables_stats.py`` recomputes every entry). Kept here because importing
#: scipy.stats for it took half a second of every ``bench table``; larger k asks scipy.stats.
STUDENTIZED_RANGE_95 = (
    2.771807648699355,
    3.314493155398122,
    3.6331595749026278,
    3.857655510378623,
    4.030092053180576,
    4.169554155006547,
    4.286309409349043,
    4.38650911549537,
    4.474124221725907,
    4.551863584065974,
    4.621655471868518,
    4.684919847313499,
    4.7427317076846975,
    4.795923860431186,
    4.845154183957343,
    4.890951125576789,
    4.933745358126922,
    4.973892348748306,
    5.0116887941184425,
    5.0473848150087655,
    5.081193155799909,
    5.1132962282719765,
    5.143851577247147,
    5.17299617312959,
    5.200849820280358,
    5.227517890554401,
    5.25309353580552,
    5.27765949383823,
    5.30128957403117,
    5.324049888290209,
    5.345999877836653,
    5.367193175047121,
    5.387678331063073,
    5.4074994334281214,
    5.426696633056341,
    5.445306596002232,
    5.463362892514628,
    5.480896333509614,
    5.4979352627407465,
    5.5145058114663055,
    5.530632121228646,
    5.546336539405832,
    5.561639791421669,
    5.576561132869737,
    5.591118484290078,
    5.605328550912587,
    5.619206929329286,
    5.63276820276599,
    5.646026026380527,
    5.65899320381105,
    5.6716817560264055,
    5.684102983386625,
    5.696267521699102,
    5.708185392951983,
    5.7198660513184985,
    5.731318424949656,
    5.742550954008434,
    5.753571625342619,
    5.764388004145548,
)


def _studentized_range_95(k: int) -> float:
    if 2 <= k < 2 + len(STUDENTIZED_RANGE_95):
        return STUDENTIZED_RANGE_95[k - 2]
    from scipy import stats

    return float(stats.studentized_range.ppf(0.95, k, 1e6))


def _average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values`` in ascending order, ties given the mean of their ranks (what
    ``scipy.stats.rankdata`` computes by default)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def friedman_nemenyi(scores: Mapping[str, Sequence[float]]) -> tuple[dict[str, float], float, float, float]:
    """Demsar (JMLR 2006), section 3.2.2: ``scores[method]`` holds one number per block (dataset), higher is
    better. Returns (average rank per method, 1 = best, ties averaged; Friedman chi-square; its p-value, the
    chi-square survival function with k - 1 degrees of freedom (``scipy.special.chdtrc``, which
    ``scipy.stats.chi2.sf`` evaluates); the Nemenyi critical difference at alpha 0.05,
    q_alpha * sqrt(k (k + 1) / (6 N)), with q_alpha the studentized range quantile over sqrt 2, e.g. 2.569 for
    k = 4 as in Demsar's Table 5)."""
    from scipy.special import chdtrc

    methods = sorted(scores)
    k, n = len(methods), len(next(iter(scores.values())))
    ranks: dict[str, list[float]] = defaultdict(list)
    for block in range(n):
        for m, rank in zip(methods, _average_ranks([-scores[m][block] for m in methods])):
            ranks[m].append(rank)
    average = {m: statistics.fmean(ranks[m]) for m in methods}
    chi2 = 12 * n / (k * (k + 1)) * (sum(r * r for r in average.values()) - k * (k + 1) ** 2 / 4)
    p = float(chdtrc(k - 1, chi2))
    q_alpha = _studentized_range_95(k) / math.sqrt(2)
    return average, chi2, p, q_alpha * math.sqrt(k * (k + 1) / (6 * n))


def rank_across_datasets(
    sections: Mapping[tuple, list[Record]], block_scores: Callable[[list[Record]], Mapping[str, float]], track: str
) -> list[dict[str, Any]]:
    """The Friedman test on each row's rank across datasets, with the Nemenyi critical difference (Demsar
    2006), for one track of tables (``classification`` or ``retrieval``).

    One block per dataset within one kind of hyperparameters (default or tuned), so a dataset is never
    counted twice (where it has several settings, the one with the most records); ``block_scores`` maps a
    setting's records to one score per row label (higher is better); rows present on every block. One dict
    per kind of hyperparameters with at least 3 datasets and 3 common rows: ``track``, ``tuning``,
    ``datasets``, ``average`` (label -> average rank, 1 = best), ``chi2``, ``p``, ``cd``."""
    by_tuning: dict[str, dict[str, tuple]] = defaultdict(dict)
    for setting, _records in sorted(sections.items(), key=lambda kv: (-len(kv[1]), text_order(kv[0]))):
        by_tuning[setting[-1]].setdefault(setting[0], setting)
    rankings = []
    for tuning, chosen in sorted(by_tuning.items()):
        per_block = {dataset: dict(block_scores(sections[setting])) for dataset, setting in sorted(chosen.items())}
        # A dataset with fewer than 3 rows (e.g. a costly one run for two methods) would shrink the common
        # rows below what a ranking needs: it is left out of the ranking, not the other way round.
        per_block = {dataset: scores for dataset, scores in per_block.items() if len(scores) >= 3}
        common = sorted(set.intersection(*(set(v) for v in per_block.values()))) if per_block else []
        if len(per_block) < 3 or len(common) < 3:
            continue
        datasets = sorted(per_block)
        average, chi2, p, cd = friedman_nemenyi({m: [per_block[d][m] for d in datasets] for m in common})
        rankings.append(
            {"track": track, "tuning": tuning, "datasets": datasets, "average": average, "chi2": chi2, "p": p, "cd": cd}
        )
    return rankings


def ranking_markdown(ranking: Mapping[str, Any], title: str, score: str) -> list[str]:
    """One cross-dataset ranking (:func:`rank_across_datasets`) as a titled table; ``score`` says what
    was ranked."""
    average, cd, p, datasets = ranking["average"], ranking["cd"], ranking["p"], ranking["datasets"]
    best = min(average.values())
    body = [
        [m, f"{average[m]:.2f}", "yes" if average[m] - best <= cd else "no"]
        for m in sorted(average, key=lambda m: (average[m], m))
    ]
    return (
        [
            f"## {title}: {ranking['tuning']}",
            "",
            f"Friedman test over {len(datasets)} datasets ({', '.join(datasets)}) and {len(average)} methods "
            f"present on all of them, ranking {score}: "
            f"chi-square = {ranking['chi2']:.2f}, p = {p:.3g}. Nemenyi critical difference at {ALPHA}: "
            f"{cd:.2f} ranks (Demšar, JMLR 2006); 'within CD of the best' = not significantly worse than the "
            f"best-ranked method"
            + ("" if p < ALPHA else ", though the Friedman test itself does not reject equal ranks")
            + ":",
            "",
        ]
        + markdown_table(["method", "average rank", "within CD of the best"], body)
        + [""]
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (nan stays nan), in the input order."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


# --------------------------------------------------------------------------------------------------
# Grouping


def text_order(values: Iterable[Any]) -> tuple[str, ...]:
    """Sort key of a setting (or any tuple of mixed types, None included): its values as text."""
    return tuple(str(v) for v in values)


def table_order(r: Record) -> tuple:
    """The order of a table's records: method, seed, missing rate, then the key (so ties never depend on the
    order records were read in)."""
    return r.method, r.seed, r.missing_rate, r.key


def by_setting(records: Iterable[Record]) -> dict[tuple, list[Record]]:
    """Records grouped by :attr:`Record.setting_key`, in the order they come."""
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        groups[r.setting_key].append(r)
    return groups


def in_table_order(groups: Mapping[tuple, list[Record]]) -> list[tuple[tuple, list[Record]]]:
    """(setting, its records in :func:`table_order`), the settings in :func:`text_order`: the order of a
    page's sections and of their rows."""
    return [(setting, sorted(groups[setting], key=table_order)) for setting in sorted(groups, key=text_order)]


def setting_title(setting: tuple) -> str:
    values = dict(zip(SETTING_FIELDS + ("tuning",), setting))
    return f"{values['dataset']}: {values['tuning']}, {values['epochs']} epochs, {values['precision']}"


def row_labels(records: Sequence[Record]) -> list[str]:
    """One label per record: the method, and its configuration where the method ran with several."""
    configs: dict[str, set[str]] = defaultdict(set)
    for r in records:
        configs[r.method].add(r.config_id)
    return [r.method if len(configs[r.method]) == 1 else f"{r.method} (cfg {r.config_id})" for r in records]


class RecordSet(tuple):
    """The records of one ``bench table``, capped-rate twins dropped (:func:`drop_capped_duplicates`), frozen.

    Every table, page and figure of one command reads the same set, and several need the same intermediate
    results (the sections of each setting, their summaries, the rankings). A RecordSet cannot change, nor can
    its records (:class:`bench.record.Record`), so :func:`computed_once` keeps such results on the set: each is
    computed once per command instead of once per caller, which is what made 100,000 records slow
    (benchmarks/table_scale.py)."""

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self.memo: dict[tuple, Any] = {}


def computed_once(function: Callable) -> Callable:
    """``function(records, *args)`` computed once per :class:`RecordSet` (and arguments) and kept on it; any
    other ``records`` (a plain list, e.g. one setting's) is computed every time, as before. The kept result
    is shared by every caller, so callers must not change it."""

    @functools.wraps(function)
    def once(records: Any, *args: Any) -> Any:
        if type(records) is not RecordSet:
            return function(records, *args)
        key = (function.__module__, function.__qualname__, args)
        if key not in records.memo:
            records.memo[key] = function(records, *args)
        return records.memo[key]

    return once


def drop_capped_duplicates(records: Iterable[Mapping[str, Any]]) -> RecordSet:
    """One record per realised cell: a record whose nominal rate was capped to the masks of another rate is
    dropped when that other record exists (same spec otherwise), else kept and read at its effective rate
    (:attr:`Record.effective_missing_rate`). Tables that counted both would pool one cell twice. A
    :class:`RecordSet` is returned as it is (it has no twins left)."""
    if type(records) is RecordSet:
        return records
    records = records_of(records)

    def identity(r: Record) -> str:
        spec = {k: v for k, v in r.spec.items() if k != "missing_rate"}
        return canonical_json([spec, round(r.effective_missing_rate, 9)])

    # Only records at or above the cap can share realised masks (below it the rate is the masks'), so only
    # they need an identity: the tables call this on every record several times.
    capped = sorted((r for r in records if r.at_rate_cap), key=lambda r: (float(r.missing_rate), r.get("key", "")))
    chosen: dict[str, Record] = {}
    for r in capped:
        chosen.setdefault(identity(r), r)  # the lowest nominal rate, i.e. the uncapped one, wins
    kept = {id(r) for r in chosen.values()}
    out = []
    for r in records:
        if not r.at_rate_cap:
            out.append(r)
        elif id(r) in kept:
            rate = r.effective_missing_rate
            out.append(r if rate == r.missing_rate else r.with_spec(missing_rate=rate))
    return RecordSet(out)


@computed_once
def split_by_task(records: Iterable[Mapping[str, Any]]) -> tuple[list[Record], list[Record]]:
    """(classification records, retrieval records), keeping the input order. A failed cell has no notes,
    hence no task (:attr:`Record.task`): it counts as retrieval when an ok cell of its method is retrieval."""
    records = records_of(records)
    retrieval_methods = {r.method for r in records if r.is_retrieval}
    chosen = [r.is_retrieval or (not r.ok and r.method in retrieval_methods) for r in records]
    return [r for r, c in zip(records, chosen) if not c], [r for r, c in zip(records, chosen) if c]


# --------------------------------------------------------------------------------------------------
# Formatting


def mean_std(values: Sequence[float], *, scale: float = 100.0, digits: int = 2, signed: bool = False) -> str:
    """``mean ± std (n=N)`` of ``values`` times ``scale`` (percent by default), "" for no values: how every
    table states a number over seeds. ``signed``: the mean with its sign (a difference)."""
    mean, std, n = summarize(values)
    if n == 0:
        return ""
    return f"{scale * mean:{'+' if signed else ''}.{digits}f} ± {scale * std:.{digits}f} (n={n})"


def ranked(text: str, rank: int | None) -> str:
    """The best of a column in bold, the second underlined."""
    return f"**{text}**" if rank == 1 else f"<u>{text}</u>" if rank == 2 else text


def ranks(means: Mapping[str, float], *, higher_is_better: bool = True) -> dict[str, int]:
    """label -> 1 for the best mean, 2 for the second (ties share a rank); empty when fewer than two rows
    compete."""
    if len(means) < 2:
        return {}
    distinct = sorted(set(means.values()), reverse=higher_is_better)
    return {label: distinct.index(mean) + 1 for label, mean in means.items()}


class Cell:
    """One cell of a table: the values of its records (one each) and how many of them failed."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.failed = 0
        self.not_applicable = False  # e.g. per-modality accuracy of a head that cannot be split: "n/a"

    def add(self, record: Record, value: Any) -> None:
        """A failed record counts as a failure; an ok one adds its value (None: nothing to add)."""
        if not record.ok:
            self.failed += 1
        elif value is not None:
            self.values.append(float(value))

    @property
    def mean(self) -> float:
        return summarize(self.values)[0]

    def text(self, rank: int | None = None, *, scale: float = 100.0, digits: int = 2) -> str:
        """:func:`mean_std` (:func:`ranked` by ``rank``) and the failures, or why the cell is empty."""
        if not self.values:
            return f"failed ({self.failed})" if self.failed else "n/a" if self.not_applicable else ""
        failed = f" ⚠ {self.failed} failed" if self.failed else ""
        return ranked(mean_std(self.values, scale=scale, digits=digits), rank) + failed


def markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"] + [
        "| " + " | ".join(row) + " |" for row in body
    ]


def ceiling_sweeps(records: Iterable[Mapping[str, Any]]) -> dict[tuple, dict[str, dict[float, list[float]]]]:
    """Gap to the Bayes ceiling against a dataset option (e.g. the imbalance knob): (dataset, option, tuning,
    epochs, precision) -> row label -> option value -> per-seed ``bayes_accuracy - accuracy``.

    From ok classification records without missing modalities or noise whose notes carry the option values
    (``dataset_options``) and ``bayes_accuracy``; only options with at least two values recorded. Rows are
    labelled by method and configuration (``config_id``) within one sweep, like the tables' rows."""
    sweeps: dict[tuple, dict[str, dict[float, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in records_of(records):
        notes = r.notes
        if (
            not r.ok
            or "bayes_accuracy" not in notes
            or not notes.get("dataset_options")
            or r.missing_rate != 0
            or r.noise != "none"
            or "accuracy" not in r.metrics
        ):
            continue
        for option, value in notes["dataset_options"].items():
            key = (r.dataset, option, r.tuning, r.epochs, r.precision)
            label = f"{r.method} (cfg {r.config_id})"
            sweeps[key][label][float(value)].append(notes["bayes_accuracy"] - r.metric("accuracy"))
    out = {}
    for key, rows in sweeps.items():
        if len({v for points in rows.values() for v in points}) >= 2:
            methods = {label.split(" (cfg ")[0] for label in rows}
            # One configuration per method: plain method names; several: keep the configuration id.
            plain = len(methods) == len(rows)
            out[key] = {(label.split(" (cfg ")[0] if plain else label): dict(points) for label, points in rows.items()}
    return out
