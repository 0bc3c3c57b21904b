"""Leaderboards as a pure function of records: no I/O, no torch, deterministic output.

Records are grouped into *settings* (dataset and its version, protocol, epochs, batch size, which
splits are masked, precision): numbers from different settings never share a table. Within a setting,
a row is a method with one set of hyperparameters; a method run with several sets gets one row per set,
labelled by a short hash, so nothing is silently averaged across configurations.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.spec import canonical_json

__all__ = ["leaderboard", "summarize"]

_SETTING_FIELDS = ("dataset", "dataset_version", "protocol", "epochs", "batch_size", "missing_on", "precision")


def _config_id(spec: Mapping[str, Any]) -> str:
    body = {"hparams": spec["hparams"], "patience": spec.get("patience"), "extra": spec.get("extra", {})}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()[:6]


def summarize(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std, n); std is 0 for a single value."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    return statistics.fmean(values), (statistics.stdev(values) if n > 1 else 0.0), n


def _fmt(values: Sequence[float], failed: int, bold: bool) -> str:
    if not values:
        return f"failed ({failed})" if failed else ""
    mean, std, n = summarize(values)
    text = f"{100 * mean:.2f} ± {100 * std:.2f} (n={n})"
    if bold:
        text = f"**{text}**"
    return text + (f" ⚠ {failed} failed" if failed else "")


class _Cell:
    def __init__(self) -> None:
        self.values: list[float] = []
        self.failed = 0


def _table(header: list[str], rows: dict[str, dict[str, _Cell]], columns: list[str]) -> list[str]:
    best = {}
    for col in columns:
        means = [summarize(cells[col].values)[0] for cells in rows.values() if col in cells and cells[col].values]
        best[col] = max(means) if len(means) > 1 else None
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for label in sorted(rows):
        cells = rows[label]
        out = [label]
        for col in columns:
            cell = cells.get(col)
            if cell is None:
                out.append("")
                continue
            is_best = best[col] is not None and cell.values and summarize(cell.values)[0] == best[col]
            out.append(_fmt(cell.values, cell.failed, bool(is_best)))
        lines.append("| " + " | ".join(out) + " |")
    return lines


def _row_labels(records: list[dict[str, Any]]) -> dict[int, str]:
    configs: dict[str, set[str]] = defaultdict(set)
    for r in records:
        configs[r["spec"]["method"]].add(_config_id(r["spec"]))
    labels = {}
    for i, r in enumerate(records):
        method = r["spec"]["method"]
        labels[i] = method if len(configs[method]) == 1 else f"{method} (cfg {_config_id(r['spec'])})"
    return labels


def _add(cell_map: dict[str, dict[str, _Cell]], label: str, column: str, record: dict[str, Any], value: Any):
    cell = cell_map[label].setdefault(column, _Cell())
    if record.get("status") != "ok":
        cell.failed += 1
    elif value is not None:
        cell.values.append(float(value))


def _modalities(records: list[dict[str, Any]]) -> list[str]:
    for r in records:
        if r.get("notes", {}).get("modalities"):
            return list(r["notes"]["modalities"])
    return []


def _setting_section(setting: tuple, records: list[dict[str, Any]]) -> list[str]:
    values = dict(zip(_SETTING_FIELDS, setting))
    masked = "train, validation and test" if values["missing_on"] == "all" else "validation and test only"
    lines = [
        f"## {values['dataset']}",
        "",
        f"Protocol v{values['protocol']} · dataset version {values['dataset_version']} · "
        f"{values['epochs']} epochs · batch {values['batch_size']} · {values['precision']} · "
        f"missing modalities on {masked} · selection on validation, scores on the full test split · "
        f"accuracy in %, mean ± std over seeds.",
        "",
    ]
    labels = _row_labels(records)
    modalities = _modalities(records)
    complete = [i for i, r in enumerate(records) if r["spec"]["missing_rate"] == 0]
    if complete:
        rows: dict[str, dict[str, _Cell]] = defaultdict(dict)
        for i in complete:
            r = records[i]
            per_mod = (r.get("metrics") or {}).get("per_modality_accuracy") or {}
            for m in modalities:
                if r.get("status") != "ok" or m in per_mod:
                    _add(rows, labels[i], m, r, per_mod.get(m))
            _add(rows, labels[i], "multimodal", r, (r.get("metrics") or {}).get("accuracy"))
            _add(rows, labels[i], "macro-F1", r, (r.get("metrics") or {}).get("macro_f1"))
        columns = modalities + ["multimodal", "macro-F1"]
        header = ["method"] + [f"{m} (in joint model)" for m in modalities] + ["multimodal acc", "macro-F1"]
        lines += ["No missing modalities:", ""] + _table(header, rows, columns) + [""]
    rates = sorted({r["spec"]["missing_rate"] for r in records})
    if len(rates) > 1:
        rows = defaultdict(dict)
        for i, r in enumerate(records):
            _add(rows, labels[i], f"{r['spec']['missing_rate']:g}", r, (r.get("metrics") or {}).get("accuracy"))
        columns = [f"{rate:g}" for rate in rates]
        lines += ["Multimodal accuracy by missing rate:", ""]
        lines += _table(["method"] + [f"rate {c}" for c in columns], rows, columns) + [""]
    return lines


def leaderboard(records: Iterable[Mapping[str, Any]]) -> str:
    """Markdown leaderboards, one section per dataset setting, from cell records."""
    records = [dict(r) for r in records]
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        spec = r["spec"]
        groups[tuple(spec[f] for f in _SETTING_FIELDS)].append(r)
    ok = sum(r.get("status") == "ok" for r in records)
    lines = [
        "# Leaderboard",
        "",
        f"Generated by `python -m bench table` from {len(records)} cell records ({ok} ok, "
        f"{len(records) - ok} failed). Do not edit by hand.",
        "",
    ]
    for setting in sorted(groups, key=lambda s: tuple(str(v) for v in s)):
        group = sorted(groups[setting], key=lambda r: (r["spec"]["method"], r["spec"]["seed"], r["key"]))
        lines += _setting_section(setting, group)
    return "\n".join(lines).rstrip() + "\n"
