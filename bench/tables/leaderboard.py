"""Leaderboards as a pure function of records: no I/O, no torch, deterministic output.

Records are grouped into *settings* (dataset and its version, protocol, epochs, batch size, which splits
are masked, precision, and where the hyperparameters came from): numbers from different settings never
share a table. Within a setting, a row is a method with one set of hyperparameters; a method run with
several sets gets one row per set, labelled by a short hash, so nothing is silently averaged across
configurations.

Per setting (the layout of the MLA paper's tables): accuracy of each modality inside the jointly trained
model, multimodal accuracy and macro-F1 (Table 1); the same modality trained alone as a reference, where a
method provides it; accuracy per missing rate with the normalised area under the accuracy-vs-rate curve
(Table 2); ablations, i.e. rows of one method family that differ in a few hyperparameters (Table 3); and
paired t-tests against the baseline and against the best row, one difference per seed (its mean over the
matched missing rates), with 95% intervals, Holm-corrected, and no claim below three seeds. Across datasets:
the Friedman test with the Nemenyi critical difference (Demsar, JMLR 2006).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.record import Record
from bench.spec import canonical_json
from bench.tables.common import (
    ALPHA,
    MIN_SEEDS,
    SETTING_FIELDS,
    Cell,
    Comparison,
    by_setting,
    ceiling_sweeps,
    cells_by_label,
    compare_paired,
    computed_once,
    drop_capped_duplicates,
    holm,
    in_table_order,
    markdown_table,
    mean_std,
    paired_t_pvalue,
    rank_across_datasets,
    ranking_markdown,
    ranks,
    row_labels,
    setting_key,
    setting_title,
    split_by_task,
    summarize,
    table_order,
    text_order,
)
from bench.tables.regenerate import SCRIPT_FILE, recorded_hours, regenerate_commands
from bench.tables.retrieval import retrieval_sections

__all__ = [
    "holm",
    "leaderboard",
    "paired_t_pvalue",
    "results_readme",
    "run_summary",
    "setting_key",
    "setting_title",
    "summarize",
]


def _ranks(rows: Mapping[str, Mapping[str, Cell]], column: str) -> dict[str, int]:
    """Rank of each row in ``column`` (:func:`ranks`: 1 best, 2 second), among the rows with values there."""
    return ranks(
        {label: cells[column].mean for label, cells in rows.items() if column in cells and cells[column].values}
    )


def _ranked_table(
    header: list[str], rows: dict[str, dict[str, Cell]], columns: list[str], reference: dict[str, Cell] | None = None
) -> list[str]:
    """Rows ranked per column; ``reference`` (column -> cell), when given, is a last, unranked row: a ceiling
    known from the data's generator, not a method."""
    ranked = {col: _ranks(rows, col) for col in columns}
    body = []
    for label in sorted(rows):
        body.append(
            [label] + [rows[label][col].text(ranked[col].get(label)) if col in rows[label] else "" for col in columns]
        )
    if reference:
        body.append([f"*{REFERENCE_ROW}*"] + [reference[col].text() if col in reference else "" for col in columns])
    return markdown_table(header, body)


#: The reference row's label: records whose notes carry ``bayes_accuracy`` (a generated dataset's exact oracle).
REFERENCE_ROW = "Bayes ceiling (exact oracle, not a method)"


def _bayes_by_seed(records) -> dict[tuple[int, float], Mapping[str, Any]]:
    """(seed, missing rate) -> the notes of one record there: every method of a seed shares the masks, hence
    the ceiling, so each (seed, rate) counts once however many methods ran."""
    return {(r.seed, r.missing_rate): r.notes for r in records if r.ok and "bayes_accuracy" in r.notes}


def _reference_cells(records, modalities) -> dict[str, Cell]:
    """The ceiling per column of the main table: each modality alone, and all of them."""
    cells: dict[str, Cell] = defaultdict(Cell)
    for notes in _bayes_by_seed(records).values():
        cells["multimodal"].values.append(notes["bayes_accuracy"])
        for m in modalities:
            if m in notes.get("bayes_accuracy_alone", {}):
                cells[m].values.append(notes["bayes_accuracy_alone"][m])
    return dict(cells)


def _add(rows: dict[str, dict[str, Cell]], label: str, column: str, record: Record, value: Any) -> None:
    rows[label].setdefault(column, Cell()).add(record, value)


def _modalities(records: list[Record]) -> list[str]:
    return next((list(r.modalities) for r in records if r.modalities), [])


# --------------------------------------------------------------------------------------------------
# Tables of one setting


def _main_table(records, labels, modalities) -> list[str]:
    rows: dict[str, dict[str, Cell]] = defaultdict(dict)
    for r, label in zip(records, labels):
        per_mod = r.metric("per_modality_accuracy") or {}
        for m in modalities:
            if not r.ok or m in per_mod:
                _add(rows, label, m, r, per_mod.get(m))
            elif r.metric("per_modality_accuracy") is None:  # a model that cannot be split per modality
                rows[label].setdefault(m, Cell()).not_applicable = True
        _add(rows, label, "multimodal", r, r.metric("accuracy"))
        _add(rows, label, "macro-F1", r, r.metric("macro_f1"))
    header = ["method"] + [f"{m} (in joint model)" for m in modalities] + ["multimodal acc", "macro-F1"]
    table = _ranked_table(header, rows, modalities + ["multimodal", "macro-F1"], _reference_cells(records, modalities))
    return ["No missing modalities (**best**, <u>second</u>):", ""] + table + [""]


def _laziness(records, labels) -> dict[str, dict[str, list[float]]]:
    """label -> modality -> per-seed differences: inside the joint model minus trained alone."""
    alone: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in records:
        if r.ok and r.notes.get("per_modality_trained_alone"):
            for m, acc in (r.metric("per_modality_accuracy") or {}).items():
                alone[(m, r.seed)].append(acc)
    rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r, label in zip(records, labels):
        if not r.ok or r.notes.get("per_modality_trained_alone"):
            continue
        for m, acc in (r.metric("per_modality_accuracy") or {}).items():
            if alone.get((m, r.seed)):
                rows[label][m].append(acc - statistics.fmean(alone[(m, r.seed)]))
    return rows


def _laziness_table(records, labels, modalities) -> list[str]:
    """Each modality inside a jointly trained model minus the same modality trained alone, paired by seed.

    The reference rows are those whose records say ``per_modality_trained_alone``; negative numbers mean
    the joint model under-trains that modality (modality laziness)."""
    rows = _laziness(records, labels)
    if not rows:
        return []
    body = []
    for label in sorted(rows):
        cells = []
        for m in modalities:
            cells.append(mean_std(rows[label][m], signed=True))
        body.append([label] + cells)
    intro = (
        "Per-modality accuracy inside the joint model minus the same modality trained alone "
        "(percentage points, paired by seed; negative = the modality is under-trained):"
    )
    return [intro, ""] + markdown_table(["method"] + modalities, body) + [""]


def _curve_auc(points: Mapping[float, float]) -> float:
    """Trapezoid area under accuracy-vs-rate, divided by the rate range (MultiBench-style robustness)."""
    rates = sorted(points)
    area = sum((b - a) * (points[a] + points[b]) / 2 for a, b in zip(rates, rates[1:]))
    return area / (rates[-1] - rates[0])


def _rate_header(records, rate: float) -> str:
    """``rate r``, plus the realised test fraction when the one-modality-kept rule capped it."""
    realized = [
        r.notes["missing_fraction_test"]
        for r in records
        if r.missing_rate == rate and "missing_fraction_test" in r.notes
    ]
    if realized and abs(statistics.fmean(realized) - rate) > 0.01:
        return f"rate {rate:g} (realised {statistics.fmean(realized):.2g})"
    return f"rate {rate:g}"


def _missing_rate_table(records, labels) -> list[str]:
    rates = sorted({r.missing_rate for r in records})
    if len(rates) < 2:
        return []
    rows: dict[str, dict[str, Cell]] = defaultdict(dict)
    curves: dict[tuple[str, int], dict[float, float]] = defaultdict(dict)
    for r, label in zip(records, labels):
        _add(rows, label, f"{r.missing_rate:g}", r, r.metric("accuracy"))
        if r.ok:
            curves[(label, r.seed)][r.missing_rate] = r.metric("accuracy")
    for (label, _), points in sorted(curves.items()):
        if len(points) == len(rates):
            rows[label].setdefault("AUC", Cell()).values.append(_curve_auc(points))
    columns = [f"{rate:g}" for rate in rates] + ["AUC"]
    header = ["method"] + [_rate_header(records, rate) for rate in rates] + [f"AUC over {rates[0]:g}-{rates[-1]:g}"]
    return (
        ["Multimodal accuracy by missing rate (AUC: area under the curve divided by the rate range, per seed):", ""]
        + _ranked_table(header, rows, columns, _reference_by_rate(records, rates))
        + [""]
    )


def _reference_by_rate(records, rates) -> dict[str, Cell]:
    """The ceiling at each missing rate (the oracle under the same masks) and its AUC, per seed."""
    cells: dict[str, Cell] = defaultdict(Cell)
    curves: dict[int, dict[float, float]] = defaultdict(dict)
    for (seed, rate), notes in sorted(_bayes_by_seed(records).items()):
        cells[f"{rate:g}"].values.append(notes["bayes_accuracy"])
        curves[seed][rate] = notes["bayes_accuracy"]
    for points in curves.values():
        if len(points) == len(rates):
            cells["AUC"].values.append(_curve_auc(points))
    return dict(cells)


def _ablation_tables(records, labels) -> list[str]:
    """Rows whose hyperparameters have the same field names (one method family, e.g. MLA and its variants)
    and differ in a few of them: the differing fields become columns, as in the MLA paper's Table 3."""
    families: dict[tuple[str, ...], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r, label in zip(records, labels):
        families[tuple(sorted(r.hparams))][label] = r.hparams
    lines = []
    for _, members in sorted(families.items(), key=lambda kv: sorted(kv[1])):
        if len(members) < 2:
            continue
        fields = sorted(
            f for f in next(iter(members.values())) if len({canonical_json(h[f]) for h in members.values()}) > 1
        )
        if not fields or len(fields) > 4:
            continue
        rows: dict[str, dict[str, Cell]] = defaultdict(dict)
        for r, label in zip(records, labels):
            if label in members:
                column = "multimodal" if r.missing_rate == 0 else "missing"
                _add(rows, label, column, r, r.metric("accuracy"))
        body = []
        ranked = {c: _ranks(rows, c) for c in ("multimodal", "missing")}
        for label in sorted(members):
            cells = [str(members[label][f]) for f in fields]
            for c in ("multimodal", "missing"):
                cells.append(rows[label][c].text(ranked[c].get(label)) if c in rows[label] else "")
            body.append([label] + cells)
        header = ["row"] + fields + ["multimodal acc (no missing)", "multimodal acc (all missing rates > 0)"]
        lines += [f"Ablation of the {'/'.join(sorted(members))} family:", ""] + markdown_table(header, body) + [""]
    return lines


def _accuracy_cells(records, labels) -> dict[str, dict[tuple[int, float], float]]:
    """label -> (seed, missing rate) -> accuracy of that row (:func:`bench.tables.common.cells_by_label`)."""
    return cells_by_label(records, labels, lambda r: r.metric("accuracy"))


def _seed_means(cells: Mapping[tuple[int, float], float]) -> list[float]:
    """A row's accuracy averaged over its missing rates, one number per seed (each seed weighs the same)."""
    by_seed: dict[int, list[float]] = defaultdict(list)
    for (seed, _), value in cells.items():
        by_seed[seed].append(value)
    return [statistics.fmean(v) for _, v in sorted(by_seed.items())]


def _against(cells: Mapping[str, Mapping], reference: str, others: Sequence[str]) -> dict[str, Comparison]:
    """label -> paired comparison with ``reference`` (one difference per seed, Holm-adjusted over ``others``);
    rows without matched cells (and the reference itself) are left out. ``cells``: :func:`_accuracy_cells`."""
    rows = [label for label in others if label != reference]
    base = cells.get(reference, {})
    compared = compare_paired([(cells.get(label, {}), base) for label in rows])
    return {label: c for label, c in zip(rows, compared) if c.n}


def _best_row(records, labels) -> str | None:
    cells = _accuracy_cells(records, labels)
    means = {label: _seed_means(cells.get(label, {})) for label in sorted(set(labels))}
    means = {label: v for label, v in means.items() if v}
    return max(sorted(means), key=lambda label: statistics.fmean(means[label])) if means else None


def _significance_table(records, labels, baseline: str) -> list[str]:
    okay = sorted({label for r, label in zip(records, labels) if r.ok})
    if len(okay) < 2:
        return []
    best = _best_row(records, labels)
    cells = _accuracy_cells(records, labels)
    versus_base = _against(cells, baseline, okay) if baseline in okay else {}
    versus_best = _against(cells, best, okay)

    def column(label, versus):
        return [versus[label].describe(), versus[label].p_text()] if label in versus else ["", ""]

    body = []
    for label in okay:
        c = versus_best.get(label)
        verdict = (
            "best"
            if label == best
            else "no claim"
            if c is None or not c.claim
            else "worse than best"
            if c.significant
            else "≈ best"
        )
        body.append([label] + column(label, versus_base) + column(label, versus_best) + [verdict])
    header = [
        "method",
        f"Δ acc vs {baseline} (pp) [95% CI]",
        "p (Holm)",
        f"Δ acc vs {best} (pp) [95% CI]",
        "p (Holm)",
        "verdict",
    ]
    intro = (
        f"Paired t-tests with the seed as the unit: per seed, the accuracy difference averaged over the missing "
        f"rates both rows have (same seed and rate, hence the same masks); one difference per seed, so n is "
        f"the number of seeds. Holm-corrected within each column; * = p < {ALPHA}; fewer than {MIN_SEEDS} seeds "
        f"or identical differences on every seed make no claim; '≈ best' = not significantly worse than the "
        f"best row (the highest mean of per-seed means):"
    )
    return [intro, ""] + markdown_table(header, body) + [""]


def _setting_section(setting: tuple, records: list[Record], baseline: str) -> list[str]:
    values = dict(zip(SETTING_FIELDS + ("tuning",), setting))
    masked = "train, validation and test" if values["missing_on"] == "all" else "validation and test only"
    lines = [
        f"## {values['dataset']}",
        "",
        f"Protocol v{values['protocol']} · dataset version {values['dataset_version']} · {values['tuning']} · "
        f"{values['epochs']} epochs · batch {values['batch_size']} · {values['precision']} · missing modalities on "
        f"{masked} · selection on validation, scores on the full test split · accuracy in %, mean ± std over seeds.",
        "",
    ]
    labels = row_labels(records)
    modalities = _modalities(records)
    complete = [i for i, r in enumerate(records) if r.missing_rate == 0]
    if complete:
        sub_records, sub_labels = [records[i] for i in complete], [labels[i] for i in complete]
        lines += _main_table(sub_records, sub_labels, modalities)
        lines += _laziness_table(sub_records, sub_labels, modalities)
    lines += _missing_rate_table(records, labels)
    lines += _ablation_tables(records, labels)
    lines += _significance_table(records, labels, baseline)
    return lines


def _clean_accuracy(records: list[Record]) -> dict[str, float]:
    """Per row: the mean over seeds of multimodal accuracy without missing modalities."""
    clean = [(r, lab) for r, lab in zip(records, row_labels(records)) if r.missing_rate == 0]
    cells = _accuracy_cells([r for r, _ in clean], [lab for _, lab in clean])
    means = {lab: _seed_means(cells.get(lab, {})) for lab in dict.fromkeys(lab for _, lab in clean)}
    return {lab: statistics.fmean(v) for lab, v in means.items() if v}


def cross_dataset_rankings(sections: Mapping[tuple, list[Record]]) -> list[dict[str, Any]]:
    """The classification track's ranking across datasets (:func:`rank_across_datasets`) on the seed-mean
    multimodal accuracy without missing modalities."""
    return rank_across_datasets(sections, _clean_accuracy, "classification")


def classification_sections(records: Iterable[Mapping[str, Any]]) -> dict[tuple, list[Record]]:
    """The leaderboard's settings of classification records without noise, capped-rate twins dropped."""
    return _sections(drop_capped_duplicates(records))


@computed_once
def _sections(records: Iterable[Record]) -> dict[tuple, list[Record]]:
    return dict(_by_setting(r for r in split_by_task(records)[0] if r.noise == "none"))


@computed_once
def classification_rankings(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """:func:`cross_dataset_rankings` of :func:`classification_sections` (the leaderboard's ranking section
    and its critical-difference diagram)."""
    return cross_dataset_rankings(classification_sections(records))


def _average_rank(records: Iterable[Record]) -> list[str]:
    lines: list[str] = []
    for ranking in classification_rankings(records):
        lines += ranking_markdown(
            ranking, "Ranking across datasets", "the seed-mean multimodal accuracy without missing modalities"
        )
    return lines


def _noise_section(setting: tuple, kind: str, records: list[Record]) -> list[str]:
    """Accuracy of the selected model on test data corrupted at each level (bench.noise), as the MLA paper's
    Table 2 does for missing rates, with the normalised area under the accuracy-vs-level curve per seed."""
    values = dict(zip(SETTING_FIELDS + ("tuning",), setting))
    rows: dict[str, dict[str, Cell]] = defaultdict(dict)
    curves: dict[tuple[str, int, float], dict[float, float]] = defaultdict(dict)
    levels: set[float] = set()
    for r, label in zip(records, row_labels(records)):
        label = label if r.missing_rate == 0 else f"{label} @ missing {r.missing_rate:g}"
        for level_text, scores in (r.metric("noise") or {}).items():
            level = float(level_text)
            levels.add(level)
            _add(rows, label, f"{level:g}", r, scores["accuracy"])
            curves[(label, r.seed, r.missing_rate)][level] = scores["accuracy"]
        if not r.ok:
            _add(rows, label, "AUC", r, None)
    ordered = sorted(levels)
    if len(ordered) >= 2:
        for (label, _, _), points in sorted(curves.items()):
            if len(points) == len(ordered):
                rows[label].setdefault("AUC", Cell()).values.append(_curve_auc(points))
    columns = [f"{level:g}" for level in ordered] + (["AUC"] if len(ordered) >= 2 else [])
    header = (
        ["method"]
        + [f"level {c}" for c in columns[: len(ordered)]]
        + ([f"AUC over {ordered[0]:g}-{ordered[-1]:g}"] if len(ordered) >= 2 else [])
    )
    return (
        [
            f"## {values['dataset']}: test-time {kind.replace('_', ' ')} noise",
            "",
            f"Protocol v{values['protocol']} · {values['tuning']} · {values['epochs']} epochs · "
            f"{values['precision']} · "
            "trained and selected on clean data; each modality of a test sample corrupted with probability 0.5 at the "
            "level shown (`bench.noise`), the same corrupted samples for every method · accuracy in %, mean ± std "
            "over seeds (**best**, <u>second</u>):",
            "",
        ]
        + _ranked_table(header, rows, columns)
        + [""]
    )


def leaderboard(records: Iterable[Mapping[str, Any]], *, baseline: str = "late_fusion") -> str:
    """Markdown leaderboards, one section per dataset setting, from cell records."""
    records = drop_capped_duplicates(records)
    classification, retrieval = split_by_task(records)  # retrieval records get their own tables, at the end
    noisy: dict[tuple, list[Record]] = defaultdict(list)
    for r in classification:
        if r.noise != "none":
            noisy[(r.setting_key, r.noise)].append(r)
    all_records = records
    sections = classification_sections(records)
    ok = sum(r.ok for r in all_records)
    lines = [
        "# Leaderboard",
        "",
        f"Generated by `python -m bench table` from {len(all_records)} cell records ({ok} ok, "
        f"{len(all_records) - ok} failed). Do not edit by hand.",
        "",
    ]
    for setting, ordered in sections.items():
        lines += _setting_section(setting, ordered, baseline)
    for setting, kind in sorted(noisy, key=text_order):
        lines += _noise_section(setting, kind, sorted(noisy[(setting, kind)], key=table_order))
    lines += _sweep_sections(classification)
    lines += _average_rank(records)
    lines += retrieval_sections(retrieval)
    return "\n".join(lines).rstrip() + "\n"


def _sweep_sections(records) -> list[str]:
    """Per dataset option swept (e.g. the imbalance knob): each method's gap to the Bayes ceiling, in points,
    mean ± std over seeds, at every value recorded (no missing modalities)."""
    lines = []
    for (dataset, option, tuning, epochs, precision), rows in sorted(
        ceiling_sweeps(records).items(), key=lambda kv: text_order(kv[0])
    ):
        values = sorted({v for points in rows.values() for v in points})
        body = []
        for label in sorted(rows):
            cells = []
            for v in values:
                cells.append(mean_std(rows[label].get(v, [])))
            body.append([label] + cells)
        lines += (
            [
                f"## {dataset}: gap to the Bayes ceiling against `{option}`",
                "",
                f"{tuning} · {epochs} epochs · {precision} · no missing modalities · Bayes accuracy minus test "
                f"accuracy in points (smaller is better), mean ± std over seeds; set with `--set data.{option}=...`.",
                "",
            ]
            + markdown_table(["method"] + [f"{option} = {v:g}" for v in values], body)
            + [""]
        )
    return lines


def _section_summary(setting: tuple, records: list[Record], baseline: str) -> list[str]:
    """Who is best without missing modalities, by how much, and which rows differ significantly from the
    baseline over all matched (seed, missing rate) cells, with the Holm correction of the full table."""
    records = split_by_task(records)[0]  # accuracy summaries: classification records only
    values = dict(zip(SETTING_FIELDS + ("tuning",), setting))
    labels = row_labels(records)
    clean = {label: [] for label in labels}
    for r, label in zip(records, labels):
        if r.ok and r.missing_rate == 0:
            clean[label].append(r.metric("accuracy"))
    ranked = sorted((statistics.fmean(v), label) for label, v in clean.items() if v)[::-1]
    if not ranked:
        return []
    (best_acc, best), rest = ranked[0], ranked[1:]
    options = next((r.notes["dataset_options"] for r in records if r.notes.get("dataset_options")), {})
    knobs = "".join(
        f", {name} = {value:g}" if isinstance(value, float) else f", {name} = {value}"
        for name, value in sorted(options.items())
    )
    line = (
        f"- **{values['dataset']}**{knobs} ({values['tuning']}, {values['epochs']} epochs, {values['precision']}): "
        f"best without missing modalities is `{best}` at {100 * best_acc:.2f}%"
    )
    if rest:
        gap = 100 * (best_acc - rest[0][0])
        line += f", tied with `{rest[0][1]}`" if gap < 0.005 else f", {gap:.2f} points ahead of `{rest[0][1]}`"
    ceiling = [notes["bayes_accuracy"] for (_, rate), notes in _bayes_by_seed(records).items() if rate == 0]
    if ceiling:
        line += (
            f", {100 * (statistics.fmean(ceiling) - best_acc):.2f} points below the Bayes ceiling "
            f"({100 * statistics.fmean(ceiling):.2f}%)"
        )
        if baseline in clean and clean[baseline]:
            gap = 100 * (statistics.fmean(ceiling) - statistics.fmean(clean[baseline]))
            line += f"; `{baseline}` is {gap:.2f} below it"
    complete = [i for i, r in enumerate(records) if r.missing_rate == 0]
    lazy = _laziness([records[i] for i in complete], [labels[i] for i in complete]).get(baseline, {})
    if lazy:
        weakest = min(sorted(lazy), key=lambda m: statistics.fmean(lazy[m]))
        line += (
            f"; inside `{baseline}` the `{weakest}` modality is {-100 * statistics.fmean(lazy[weakest]):.2f} "
            f"points below the same modality trained alone (paired by seed, n={len(lazy[weakest])})"
        )
    okay = sorted({label for r, label in zip(records, labels) if r.ok})
    if baseline not in okay:
        return [line + "."]
    versus = _against(_accuracy_cells(records, labels), baseline, okay)
    if not versus:  # no row shares a (seed, missing rate) cell with the baseline
        return [line + "."]
    better = [label for label, c in versus.items() if c.significant and c.mean > 0]
    worse = [label for label, c in versus.items() if c.significant and c.mean < 0]
    unclaimed = [label for label, c in versus.items() if not c.claim]

    def listed(chosen):
        return ", ".join(
            f"`{label}` {versus[label].describe()} (p = {versus[label].p:.2g})"
            for label in sorted(chosen, key=lambda label: -abs(versus[label].mean))
        )

    line += (
        f". Against `{baseline}` (paired t over seeds, each seed's difference averaged over its missing rates, "
        f"95% CI, Holm-corrected over {len(versus)} rows): "
    )
    parts = []
    if better:
        parts.append(f"significantly better {listed(better)}")
    if worse:
        parts.append(f"significantly worse {listed(worse)}")
    others = len(versus) - len(better) - len(worse) - len(unclaimed)
    if others:
        parts.append(f"{'the other ' if parts else ''}{others} not significantly different")
    if unclaimed:
        parts.append(f"{len(unclaimed)} without a claim (fewer than {MIN_SEEDS} seeds or no variance)")
    return [line + "; ".join(parts) + "."]


def _noise_summary(records: list[Record]) -> list[str]:
    """One line per (setting, noise kind): the row whose accuracy falls least over the noise levels (AUC)."""
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        if r.missing_rate == 0:
            groups[(r.setting_key, r.noise)].append(r)
    lines = []
    for (setting, kind), group in sorted(groups.items(), key=lambda kv: text_order(kv[0])):
        aucs: dict[str, list[float]] = defaultdict(list)
        for r, label in zip(group, row_labels(group)):
            points = {float(k): v["accuracy"] for k, v in (r.metric("noise") or {}).items()}
            if r.ok and len(points) >= 2:
                aucs[label].append(_curve_auc(points))
        if aucs:
            best = max(sorted(aucs), key=lambda label: statistics.fmean(aucs[label]))
            lines.append(
                f"- **{setting[0]}** under test-time {kind.replace('_', ' ')} noise: most robust is "
                f"`{best}` (normalised AUC of accuracy over the noise levels "
                f"{100 * statistics.fmean(aucs[best]):.2f}%)."
            )
    return lines


def _machines_paragraph(records: Sequence[Record]) -> list[str]:
    """Which CPUs the records come from: a cell is bit-identical only when re-run on the same CPU model
    (bench.cells.cpu_identity), so a reader re-running one cell elsewhere should expect other digits."""
    cpus = Counter(r.environment.get("cpu") for r in records)
    unnamed = cpus.pop(None, 0)
    named = "; ".join(f"`{cpu}` ({n})" for cpu, n in sorted(cpus.items()))
    text = (
        f"Machines: {len(records)} records, {unnamed} of them made before records named their CPU"
        + (f", the others on {named}" if named else "")
        + ". A cell re-run on another CPU model can give other "
        "digits (float summation order; the top-level README has the measurement): `python -m bench verify` "
        "requires identical bits only on the CPU a record names. Compare methods by their seed means, as the "
        "tables do."
    )
    return [text, ""]


def run_summary(records: Iterable[Mapping[str, Any]], *, baseline: str = "late_fusion") -> str:
    """What ``bench run`` prints at the end: per setting, who wins and which rows differ significantly from
    the baseline (one line each, as at the top of the results page); the full tables are in the files."""
    records = drop_capped_duplicates(records)
    lines = [line for summary in _section_summaries(records, baseline).values() for line in summary]
    for setting, group in _by_setting(r for r in split_by_task(records)[1] if r.noise == "none"):
        lines += _retrieval_summary(setting, group)
    return "\n".join(lines) + ("\n" if lines else "")


@computed_once
def _section_summaries(records: Iterable[Record], baseline: str) -> dict[tuple, list[str]]:
    """Setting -> :func:`_section_summary`, in table order: ``bench run`` prints them and the results page
    opens with them."""
    return {setting: _section_summary(setting, group, baseline) for setting, group in _sections(records).items()}


def _by_setting(records: Iterable[Record]) -> list[tuple[tuple, list[Record]]]:
    return in_table_order(by_setting(records))


def _retrieval_summary(setting: tuple, records: list[Record]) -> list[str]:
    """The objective with the best mean R@1 (all directions) without missing modalities."""
    values = dict(zip(SETTING_FIELDS + ("tuning",), setting))
    scores: dict[str, list[float]] = defaultdict(list)
    for r, label in zip(records, row_labels(records)):
        if r.ok and r.missing_rate == 0:
            scores[label].append(r.metrics["retrieval"]["mean"]["R@1"])
    if not scores:
        return []
    best = max(sorted(scores), key=lambda label: statistics.fmean(scores[label]))
    return [
        f"- **{values['dataset']}** · retrieval ({values['tuning']}, {values['epochs']} epochs): best mean R@1 "
        f"without missing modalities is `{best}` at {100 * statistics.fmean(scores[best]):.2f}% "
        f"(of {len(scores)} objectives)."
    ]


def results_readme(
    records: Iterable[Mapping[str, Any]],
    *,
    baseline: str = "late_fusion",
    plots: Sequence[tuple[str, str]] = (),
    dynamics: Sequence[tuple[str, str]] = (),
) -> str:
    """The results page: who wins where and by how much, then links to the full tables and plots (``plots``:
    accuracy against missing rate, ``dynamics``: per-modality validation accuracy by epoch; (path, caption))."""
    records = drop_capped_duplicates(records)
    every = records
    noisy = [r for r in split_by_task(records)[0] if r.noise != "none"]  # accuracy under noise
    records = [r for r in records if r.noise == "none"]
    groups = by_setting(records)
    lines = [
        "# Results",
        "",
        "Generated by `python -m bench table` from the records in `records/`; do not edit by hand. Every number",
        "traces to one JSON record per cell (its spec, metrics, timings and environment). The full tables,",
        "with per-modality accuracy, the missing-rate curves, ablations and significance tests, are in",
        "[leaderboard.md](leaderboard.md); numbers reported in papers, with their sources, are next to ours in",
        "[papers.md](papers.md) where `reported_in_papers.csv` lists them.",
        "",
        "## Who wins where",
        "",
    ]
    # Settings with a known ceiling (a generated benchmark's Bayes oracle) lead: they are where the tables
    # can say how much of the reachable accuracy each method leaves.
    summaries = _section_summaries(every, baseline)
    for setting in sorted(groups, key=lambda s: (not _bayes_by_seed(groups[s]), text_order(s))):
        lines += summaries.get(setting, [])
    lines += _noise_summary(noisy)
    cells, cell_hours, tuning_hours = recorded_hours(every)
    lines += [
        "",
        "## Regenerate",
        "",
        f"`bash results/{SCRIPT_FILE}` runs every command below (real datasets read from `$BENCH_DATA`; "
        f"`RESULTS=DIR` writes to a fresh directory instead of resuming this one). By the records, the "
        f"{cells} cells took {cell_hours:.1f} hours of single-thread compute and tuning about "
        f"{tuning_hours:.1f} hours more (estimated): about {(cell_hours + tuning_hours) / 2:.1f} hours with "
        f"`--jobs 2` on 2 cores.",
        "",
        "```bash",
    ]
    lines += regenerate_commands(every)
    lines += [
        "python -m bench table          # tables, this page, the plots and the script, from the records",
        "python -m bench table --check  # what CI runs: fails if these files are stale",
        "```",
        "",
    ]
    lines += _machines_paragraph(every)
    if plots:
        lines += ["## Accuracy against missing rate and against dataset options", ""]
        for path, caption in plots:
            lines += [f"{caption}", "", f"![{caption}]({path})", ""]
    if dynamics:
        lines += ["## Training dynamics", ""]
        for path, caption in dynamics:
            lines += [f"{caption}", "", f"![{caption}]({path})", ""]
    return "\n".join(lines).rstrip() + "\n"
