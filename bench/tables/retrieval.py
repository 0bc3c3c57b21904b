"""Retrieval leaderboards (representation-alignment objectives) as a pure function of records: no I/O, no torch.

A record belongs to the retrieval track when its notes say ``task: retrieval`` (written by the loop for
methods whose ``task`` is ``"retrieval"``); a failed cell has no notes, so it counts as retrieval when an
ok cell of the same method does. :func:`split_by_task` separates them; the classification tables of
:mod:`bench.tables.leaderboard` never see retrieval records, and :func:`retrieval_sections` renders these.

Per setting (the classification tables' settings: dataset, protocol, epochs, batch size, masks, precision,
tuning), on cells without missing modalities unless said otherwise:

* the main table: Recall@1/5/10 averaged over every direction between the row's modalities, median rank,
  same-class@1, modality gap, alignment and uniformity (per modality and over the union), mean ± std over
  seeds with n;
* the same per direction;
* the *shared pair*, the dataset's first two modalities, which every objective embeds whatever its number of
  modalities: R@1 (both directions averaged) by missing rate, and paired t-tests against a reference objective
  on matched (seed, missing rate) cells, Holm-corrected;
* "2 vs 3 modalities": rows whose hyperparameters differ only in ``modalities`` (e.g. ``align_clip`` and
  ``align_pairwise``) compared on the shared pair, gap and R@1, paired by (seed, missing rate).

Across datasets: the Friedman test on the objectives' ranks by shared-pair R@1, with the Nemenyi critical
difference (Demsar, JMLR 2006), as the classification tables rank methods by accuracy.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.record import Record
from bench.spec import canonical_json
from bench.tables.common import (
    ALPHA,
    MIN_SEEDS,
    SETTING_FIELDS,
    Cell,
    by_setting,
    cells_by_label,
    compare_paired,
    drop_capped_duplicates,
    in_table_order,
    markdown_table,
    mean_std,
    rank_across_datasets,
    ranking_markdown,
    ranks,
    row_labels,
)

__all__ = ["REFERENCE", "retrieval_rankings", "retrieval_sections"]

#: The objective every other one is tested against: CLIP's loss on two modalities.
REFERENCE = "align_clip"


# --------------------------------------------------------------------------------------------------
# Reading metrics


def _retrieval(r: Record) -> Mapping[str, Any]:
    return r.metric("retrieval") or {}


def _shared_pair(records: list[Record]) -> tuple[str, str] | None:
    """The dataset's first two modalities, which every objective embeds."""
    return next(((r.modalities[0], r.modalities[1]) for r in records if len(r.modalities) >= 2), None)


def _pair_r1(r: Record, pair: tuple[str, str]) -> float | None:
    directions = _retrieval(r).get("directions", {})
    a, b = pair
    if f"{a}->{b}" not in directions or f"{b}->{a}" not in directions:
        return None
    return (directions[f"{a}->{b}"]["R@1"] + directions[f"{b}->{a}"]["R@1"]) / 2


def _pair_gap(r: Record, pair: tuple[str, str]) -> float | None:
    return _retrieval(r).get("gap", {}).get(f"{pair[0]}|{pair[1]}")


def _num_modalities(r: Record) -> int | None:
    names = _retrieval(r).get("modalities")
    return len(names) if names else None


# --------------------------------------------------------------------------------------------------
# Formatting


@dataclass(frozen=True)
class _Column:
    header: str
    value: Callable[[Record], float | None]
    percent: bool = False
    digits: int = 3
    better: str | None = None  # "high", "low" or None (no bold / underline)
    applies: Callable[[Record], bool] = lambda r: True  # which records (failed ones too) it counts
    plain: bool = False  # show the distinct values (e.g. a count of modalities), not mean ± std


def _format(cell: Cell, column: _Column, rank: int | None) -> str:
    if column.plain and cell.values:
        return "/".join(f"{v:g}" for v in sorted(set(cell.values)))
    scale, digits = (100.0, 2) if column.percent else (1.0, column.digits)
    return cell.text(rank, scale=scale, digits=digits)


def _ranks(cells: Mapping[str, Cell], better: str | None) -> dict[str, int]:
    if better is None:
        return {}
    return ranks({label: c.mean for label, c in cells.items() if c.values}, higher_is_better=better == "high")


def _body(records: list[Record], labels: list[str], columns: list[_Column]) -> list[list[str]]:
    """One row per label, one ``mean ± std (n)`` cell per column; best and second marked where ranked."""
    cells: dict[str, list[Cell]] = defaultdict(lambda: [Cell() for _ in columns])
    for r, label in zip(records, labels):
        for cell, column in zip(cells[label], columns):
            if column.applies(r):
                cell.add(r, column.value(r) if r.ok else None)
    ranks = [_ranks({label: row[i] for label, row in cells.items()}, c.better) for i, c in enumerate(columns)]
    return [
        [label] + [_format(row[i], c, ranks[i].get(label)) for i, c in enumerate(columns)]
        for label, row in sorted(cells.items())
    ]


def _table(records: list[Record], labels: list[str], columns: list[_Column], first: str = "objective") -> list[str]:
    return markdown_table([first] + [c.header for c in columns], _body(records, labels, columns))


def _mean_metric(key: str) -> Callable[[Record], float | None]:
    return lambda r: _retrieval(r).get("mean", {}).get(key)


def _top_metric(key: str) -> Callable[[Record], float | None]:
    return lambda r: _retrieval(r).get(key)


MAIN_COLUMNS = [
    _Column("modalities", lambda r: _num_modalities(r), plain=True),
    _Column("R@1", _mean_metric("R@1"), percent=True, better="high"),
    _Column("R@5", _mean_metric("R@5"), percent=True, better="high"),
    _Column("R@10", _mean_metric("R@10"), percent=True, better="high"),
    _Column("median rank", _mean_metric("median_rank"), digits=1, better="low"),
    _Column("same-class@1", _mean_metric("same_class@1"), percent=True, better="high"),
    _Column("gap", _top_metric("gap_mean")),
    _Column("alignment", _top_metric("alignment_mean")),
    _Column("uniformity", _top_metric("uniformity_mean")),
    _Column("uniformity (union)", _top_metric("uniformity_union")),
]


def _direction_metric(direction: str, key: str) -> Callable[[Record], float | None]:
    return lambda r: _retrieval(r).get("directions", {}).get(direction, {}).get(key)


# --------------------------------------------------------------------------------------------------
# Tables of one setting


def _main_table(records: list[Record], labels: list[str]) -> list[str]:
    intro = (
        "No missing modalities. R@K, median rank and same-class@1 averaged over every direction between the "
        "row's modalities (so rows with different modalities are compared on the shared pair below); gap, "
        "alignment: mean over modality pairs; uniformity: mean over modalities, and over their union "
        "(**best**, <u>second</u>):"
    )
    return [intro, ""] + _table(records, labels, MAIN_COLUMNS) + [""]


def _direction_table(records: list[Record], labels: list[str]) -> list[str]:
    """Rows (objective, direction) of the objectives that embed both modalities of the direction."""
    directions = sorted({d for r in records for d in _retrieval(r).get("directions", {})})
    body = []
    for direction in directions:
        embeds = [
            (r, label)
            for r, label in zip(records, labels)
            if direction in _retrieval(r).get("directions", {}) or not r.ok
        ]
        columns = [
            _Column("R@1", _direction_metric(direction, "R@1"), percent=True, better="high"),
            _Column("R@5", _direction_metric(direction, "R@5"), percent=True, better="high"),
            _Column("R@10", _direction_metric(direction, "R@10"), percent=True, better="high"),
            _Column("median rank", _direction_metric(direction, "median_rank"), digits=1, better="low"),
        ]
        body += _body([r for r, _ in embeds], [f"{direction} · {label}" for _, label in embeds], columns)
    if not body:
        return []
    intro = "Per direction (query modality -> gallery modality), no missing modalities (best and second per direction):"
    return [intro, ""] + markdown_table(["direction · objective", "R@1", "R@5", "R@10", "median rank"], body) + [""]


def _shared_pair_by_rate(records: list[Record], labels: list[str], pair: tuple[str, str]) -> list[str]:
    rates = sorted({r.missing_rate for r in records})
    if len(rates) < 2:
        return []
    columns = [
        _Column(
            f"rate {rate:g}",
            lambda r: _pair_r1(r, pair),
            percent=True,
            better="high",
            applies=lambda r, rate=rate: r.missing_rate == rate,
        )
        for rate in rates
    ]
    intro = (
        f"R@1 on the shared pair {pair[0]} <-> {pair[1]} (both directions averaged) by the rate of missing "
        "modalities in training (validation and test retrieval always on complete data):"
    )
    return [intro, ""] + _table(records, labels, columns) + [""]


def _significance_table(records: list[Record], labels: list[str], pair: tuple[str, str], reference: str) -> list[str]:
    present = sorted({label for r, label in zip(records, labels) if r.ok and _pair_r1(r, pair) is not None})
    if reference not in present or len(present) < 2:
        return []
    others = [label for label in present if label != reference]
    r1 = lambda r: _pair_r1(r, pair)  # noqa: E731
    cells = cells_by_label(records, labels, r1)
    compared = compare_paired([(cells.get(label, {}), cells.get(reference, {})) for label in others])
    body = []
    for label, c in zip(others, compared):
        if not c.n:
            body.append([label, "", "", "no matched cells"])
            continue
        verdict = "no claim" if not c.claim else ("differs" if c.significant else "no significant difference")
        body.append([label, c.describe(), c.p_text(), verdict])
    intro = (
        f"Paired t-tests against `{reference}` on R@1 of the shared pair {pair[0]} <-> {pair[1]}, with the seed "
        f"as the unit (each seed's difference averaged over the missing rates both rows have, i.e. the same "
        f"masks), 95% CI, Holm-corrected; * = p < {ALPHA}; fewer than {MIN_SEEDS} seeds or identical "
        f"differences make no claim:"
    )
    header = ["objective", f"Δ R@1 vs {reference} (pp) [95% CI]", "p (Holm)", "verdict"]
    return [intro, ""] + markdown_table(header, body) + [""]


def _family_key(r: Record) -> str:
    hparams = {k: v for k, v in r.hparams.items() if k != "modalities"}
    return canonical_json(hparams)


def _modality_families(records: list[Record], labels: list[str]) -> list[tuple[str, str]]:
    """(fewer, more) row labels whose hyperparameters differ only in the number of modalities used."""
    counts: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for r, label in zip(records, labels):
        if r.ok and _num_modalities(r) is not None:
            counts[_family_key(r)][label].add(_num_modalities(r))
    pairs = []
    for members in counts.values():
        single = {label: next(iter(ks)) for label, ks in members.items() if len(ks) == 1}
        by_count = sorted(single.items(), key=lambda kv: (kv[1], kv[0]))
        for (few, k_few), (many, k_many) in zip(by_count, by_count[1:]):
            if k_few < k_many:
                pairs.append((few, many))
    return sorted(pairs)


def _modalities_table(records: list[Record], labels: list[str], pair: tuple[str, str]) -> list[str]:
    families = _modality_families(records, labels)
    if not families:
        return []
    counts = {label: _num_modalities(r) for r, label in zip(records, labels) if r.ok and _num_modalities(r)}
    body = []
    for rate in sorted({r.missing_rate for r in records}):
        at_rate = [(r, label) for r, label in zip(records, labels) if r.missing_rate == rate]
        recs, labs = [r for r, _ in at_rate], [label for _, label in at_rate]
        for few, many in families:
            row = [f"{few} ({counts[few]}) → {many} ({counts[many]})", f"{rate:g}"]
            for value, scale in ((lambda r: _pair_r1(r, pair), 100.0), (lambda r: _pair_gap(r, pair), 1.0)):
                row += _before_after(recs, labs, few, many, value, scale)
            if any(row[2:]):
                body.append(row)
    if not body:
        return []
    intro = (
        f"2 vs 3 modalities: the same objective trained on the first two modalities and on more, measured on "
        f"the shared pair {pair[0]} <-> {pair[1]} (R@1 in %, both directions averaged; gap = distance between "
        f"the two modality centroids). Δ = more minus fewer modalities, paired by seed; p: paired t-test, "
        f"uncorrected:"
    )
    header = [
        "objective (modalities)",
        "missing rate",
        "R@1 fewer",
        "R@1 more",
        "Δ R@1 (pp)",
        "p",
        "gap fewer",
        "gap more",
        "Δ gap",
        "p",
    ]
    return [intro, ""] + markdown_table(header, body) + [""]


def _before_after(records, labels, few: str, many: str, value, scale: float) -> list[str]:
    digits = 2 if scale == 100.0 else 3

    def stat(label: str) -> str:
        values = [v for r, lab in zip(records, labels) if lab == label and r.ok and (v := value(r)) is not None]
        return mean_std(values, scale=scale, digits=digits)

    cells = cells_by_label(records, labels, value)
    more, fewer = cells.get(many, {}), cells.get(few, {})
    (c,) = compare_paired([(more, fewer)])
    if not c.n:
        return [stat(few), stat(many), "", ""]
    return [stat(few), stat(many), c.describe(scale, digits), c.p_text()]


def _section(setting: tuple, records: list[Record], reference: str) -> list[str]:
    values = dict(zip(SETTING_FIELDS + ("tuning",), setting))
    masked = (
        "missing modalities remove sides of training pairs: a pair trains only when both sides are present"
        if values["missing_on"] == "all"
        else "no missing modalities in training (masks on validation and test only)"
    )
    lines = [
        f"## {values['dataset']} · retrieval",
        "",
        f"Protocol v{values['protocol']} · dataset version {values['dataset_version']} · {values['tuning']} · "
        f"{values['epochs']} epochs · batch {values['batch_size']} · {values['precision']} · {masked}; validation "
        f"and test retrieval is measured on the **complete** splits · epoch selected on validation mean R@1 · instance "
        f"retrieval (the match of a query is the same sample in the other modality); ranks count ties against "
        f"the query · R@K in %, mean ± std over seeds.",
        "",
    ]
    labels = row_labels(records)
    complete = [i for i, r in enumerate(records) if r.missing_rate == 0]
    if complete:
        sub, sub_labels = [records[i] for i in complete], [labels[i] for i in complete]
        lines += _main_table(sub, sub_labels)
        lines += _direction_table(sub, sub_labels)
    pair = _shared_pair(records)
    if pair is not None:
        lines += _shared_pair_by_rate(records, labels, pair)
        lines += _significance_table(records, labels, pair, reference)
        lines += _modalities_table(records, labels, pair)
    return lines


def _shared_pair_scores(records: list[Record]) -> dict[str, float]:
    """Per row: the mean over seeds of the shared pair's R@1 without missing modalities."""
    pair = _shared_pair(records)
    if pair is None:
        return {}
    scores: dict[str, list[float]] = defaultdict(list)
    for r, label in zip(records, row_labels(records)):
        if r.ok and r.missing_rate == 0 and (value := _pair_r1(r, pair)) is not None:
            scores[label].append(value)
    return {label: statistics.fmean(values) for label, values in scores.items()}


def _settings(records: Iterable[Mapping[str, Any]]) -> tuple[dict[tuple, list[Record]], int]:
    """Records without test-time noise by setting (capped-rate twins dropped), and how many had noise."""
    records = drop_capped_duplicates(records)
    clean = [r for r in records if r.noise == "none"]
    return by_setting(clean), len(records) - len(clean)


def retrieval_rankings(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The retrieval track's ranking across datasets (:func:`bench.tables.common.rank_across_datasets`) on
    the seed-mean R@1 of each dataset's shared pair without missing modalities: every objective embeds that
    pair, whatever its number of modalities, so the ranks compare like with like."""
    return _rankings(_settings(records)[0])


def _rankings(settings: Mapping[tuple, list[Record]]) -> list[dict[str, Any]]:
    return rank_across_datasets(settings, _shared_pair_scores, "retrieval")


RANKING_SCORE = (
    "the seed-mean R@1 on each dataset's shared pair (its first two modalities, both directions "
    "averaged) without missing modalities"
)


def retrieval_sections(records: Iterable[Mapping[str, Any]], *, reference: str = REFERENCE) -> list[str]:
    """Markdown lines: one section per setting of the given (retrieval) records, then the cross-dataset
    ranking where at least 3 datasets share 3 objectives; nothing for no records.

    Cells scored under test-time noise (``--noise``) are left out, with a line saying how many: their
    per-level retrieval metrics are in their records (``metrics.noise``) but have no table yet."""
    groups, noisy = _settings(records)
    lines: list[str] = []
    if noisy:
        lines += [
            f"Retrieval: {noisy} cell records scored under test-time noise (`--noise`) are not tabulated "
            "here; their records hold the retrieval metrics per noise level.",
            "",
        ]
    for setting, ordered in in_table_order(groups):
        lines += _section(setting, ordered, reference)
    for ranking in _rankings(groups):
        lines += ranking_markdown(ranking, "Retrieval ranking across datasets", RANKING_SCORE)
    return lines
