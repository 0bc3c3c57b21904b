"""What every table of records shares: settings, row labels, record accessors and the paired statistics.

Pure functions of record dictionaries (no I/O, no torch), used by the classification leaderboards
(:mod:`bench.leaderboard`), the retrieval ones (:mod:`bench.leaderboard_retrieval`), the plots and the
reported-numbers table.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.spec import canonical_json

__all__ = [
    "ALPHA", "SETTING_FIELDS", "config_id", "holm", "is_ok", "is_retrieval_record", "markdown_table", "metric",
    "noise_kind", "paired_t_pvalue", "row_labels", "setting_key", "setting_title", "split_by_task", "summarize",
]

Record = dict[str, Any]

SETTING_FIELDS = ("dataset", "dataset_version", "protocol", "epochs", "batch_size", "missing_on", "precision")
ALPHA = 0.05


# --------------------------------------------------------------------------------------------------
# Statistics


def summarize(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std, n); std is 0 for a single value."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    return statistics.fmean(values), (statistics.stdev(values) if n > 1 else 0.0), n


def paired_t_pvalue(differences: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test (H0: mean difference 0); nan with fewer than 2 pairs."""
    n = len(differences)
    if n < 2:
        return math.nan
    mean, std, _ = summarize(differences)
    if std == 0:
        return 1.0 if mean == 0 else 0.0
    from scipy import stats

    return float(2 * stats.t.sf(abs(mean / (std / math.sqrt(n))), df=n - 1))


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


def config_id(spec: Mapping[str, Any]) -> str:
    body = {"hparams": spec["hparams"], "patience": spec.get("patience"), "extra": spec.get("extra", {})}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()[:6]


def tuning_label(source: str) -> str:
    kind = source.split(":", 1)[0].split("+", 1)[0]
    if kind == "tuned":
        budget = source.rsplit(":", 1)[-1].replace("+set", "").replace("-", " ")
        return f"hyperparameters tuned on validation ({budget} per method and dataset)"
    return {"default": "paper-default hyperparameters (untuned)", "set": "hyperparameters set by hand (--set)"}.get(
        kind, f"hyperparameters from {source}")


def setting_key(spec: Mapping[str, Any]) -> tuple:
    """What must be equal for two records to share a table."""
    return tuple(spec[f] for f in SETTING_FIELDS) + (tuning_label(spec.get("hparams_source", "default")),)


def setting_title(setting: tuple) -> str:
    values = dict(zip(SETTING_FIELDS + ("tuning",), setting))
    return f"{values['dataset']}: {values['tuning']}, {values['epochs']} epochs, {values['precision']}"


def row_labels(records: list[dict[str, Any]]) -> list[str]:
    configs: dict[str, set[str]] = defaultdict(set)
    for r in records:
        configs[r["spec"]["method"]].add(config_id(r["spec"]))
    return [
        r["spec"]["method"] if len(configs[r["spec"]["method"]]) == 1 else f"{r['spec']['method']} (cfg {config_id(r['spec'])})"
        for r in records
    ]


def is_ok(r: Mapping[str, Any]) -> bool:
    return r.get("status") == "ok"


def metric(r: Mapping[str, Any], name: str) -> Any:
    return (r.get("metrics") or {}).get(name)


# --------------------------------------------------------------------------------------------------
# Formatting


def markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"] + [
        "| " + " | ".join(row) + " |" for row in body
    ]


def noise_kind(r: Mapping[str, Any]) -> str:
    """The record's test-time noise kind; "none" for cells without the noise axis (and older records)."""
    return r["spec"].get("noise", "none")


def is_retrieval_record(record: Mapping[str, Any]) -> bool:
    return (record.get("notes") or {}).get("task") == "retrieval"


def split_by_task(records: Iterable[Mapping[str, Any]]) -> tuple[list[Record], list[Record]]:
    """(classification records, retrieval records), keeping the input order."""
    records = [dict(r) for r in records]
    retrieval_methods = {r["spec"]["method"] for r in records if is_retrieval_record(r)}
    chosen = [is_retrieval_record(r) or (not is_ok(r) and r["spec"]["method"] in retrieval_methods) for r in records]
    return [r for r, c in zip(records, chosen) if not c], [r for r, c in zip(records, chosen) if c]


