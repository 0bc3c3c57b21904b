"""The commands that regenerate a results directory's records, and how long they take: ``regenerate.sh``.

A pure function of the records (``bench table`` writes it next to the tables and ``table --check`` compares
it), so the script always lists exactly the grids whose records are committed: one ``run`` per block of
methods that share seeds and missing rates within a setting, preceded by ``tune`` for tuned records. Run
again over the same results directory it resumes (finished cells are reused); pointed at an empty one
(``RESULTS=DIR``) it recomputes everything, tuning included. Without ``RESULTS`` it works on the directory that
holds the script, wherever it is run from. Every setting of a cell's spec that a command line sets (epochs,
batch size, patience, precision, missing-on, noise, ``--set encoder.*`` and ``--set data.*``) is part of a
block's key and of its commands, so the commands recreate the records' exact cells.
"""

from __future__ import annotations

import json
import shlex
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from bench.record import Record, records_of
from bench.tables.common import text_order

__all__ = ["SCRIPT_FILE", "regenerate_commands", "regenerate_script", "recorded_hours"]

SCRIPT_FILE = "regenerate.sh"


def _joined(values: Iterable[Any]) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in sorted(set(values)))


def _trials(r: Record) -> int | None:
    """The tuning budget of a tuned record (``tuned:<study>:<N>-trials``), None for untuned ones."""
    source = r.hparams_source
    return int(source.rsplit(":", 1)[-1].split("-")[0]) if source.startswith("tuned") else None


def _grid_key(r: Record) -> tuple:
    """What one ``run`` command fixes for all its cells (besides methods, seeds and missing rates); kept per
    record, since the script and the results page each group every record by it."""
    return r.kept(_compute_grid_key)


def _compute_grid_key(r: Record) -> tuple:
    extra = r.extra or {}
    sets = tuple(sorted((f"encoder.{m}", k) for m, k in (extra.get("encoders") or {}).items()))
    sets += tuple(sorted((f"data.{o}", _value(v)) for o, v in (extra.get("dataset_options") or {}).items()))
    return (
        r.dataset,
        r.epochs,
        r.batch_size,
        r.missing_on,
        r.precision,
        _trials(r) or 0,
        r.noise,
        tuple(r.noise_levels),
        r.patience,
        sets,
    )


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _options(key: tuple, *, tune: bool = False) -> list[str]:
    """The options of one block's ``run`` (``tune``: of its ``tune``, which takes the settings that change a
    trial's cell and refuses the evaluation-only ones: missing-on and noise)."""
    dataset, epochs, batch_size, missing_on, precision, _trials_, noise, levels, patience, sets = key
    options = [f"--datasets {dataset}", f"--epochs {epochs}", f"--batch-size {batch_size}"]
    if patience is not None:
        options.append(f"--patience {patience}")
    if missing_on != "all" and not tune:
        options.append(f"--missing-on {missing_on}")
    if precision != "fp32":
        options.append(f"--precision {precision}")
    if noise != "none" and not tune:
        options.append(f"--noise {noise} --noise-levels {_joined(levels)}")
    options += [f"--set {shlex.quote(f'{name}={value}')}" for name, value in sets]
    return options


def regenerate_commands(
    records: Iterable[Mapping[str, Any]], *, tune_extra: str = "", run_extra: str = ""
) -> list[str]:
    """One command line per block of records: methods with the same seeds and missing rates in one grid
    (``tune ... &&`` first for tuned ones). The extras are appended to every ``tune`` and ``run``."""
    cells: dict[tuple, dict[str, tuple[set, set]]] = defaultdict(lambda: defaultdict(lambda: (set(), set())))
    for r in records_of(records):
        if r.from_saved_model:
            continue  # scored from a saved model by `bench eval`: its source cell's command remakes the model
        seeds, rates = cells[_grid_key(r)][r.method]
        seeds.add(r.seed)
        rates.add(r.missing_rate)
    lines = []
    for key in sorted(cells, key=text_order):
        blocks: dict[tuple, list[str]] = defaultdict(list)
        for method, (seeds, rates) in cells[key].items():
            blocks[(_joined(seeds), _joined(rates))].append(method)
        for (seeds, rates), methods in sorted(blocks.items()):
            options = _options(key)
            run = " ".join(
                [
                    "python -m bench run",
                    f"--methods {_joined(methods)}",
                    *options,
                    f"--seeds {seeds}",
                    f"--missing-rates {rates}",
                ]
            )
            trials = key[5]
            if trials:
                tune = " ".join(
                    [
                        "python -m bench tune",
                        f"--methods {_joined(methods)}",
                        *_options(key, tune=True),
                        f"--trials {trials}",
                    ]
                )
                lines.append(f"{tune}{tune_extra} && {run} --tuned{run_extra}")
            else:
                lines.append(run + run_extra)
    return lines


def recorded_hours(records: Iterable[Mapping[str, Any]]) -> tuple[int, float, float]:
    """(cells, hours of the cells' recorded train + test time, estimated hours of tuning).

    Tuning is estimated, not recorded: each tuned (method, dataset) ran its trial budget, and a trial costs
    about one cell of that method at missing rate 0 (pruned trials cost less, so this is an upper estimate).
    """
    records = records_of(records)
    cell_seconds = sum(r.cell_seconds for r in records)
    clean: dict[tuple, list[float]] = defaultdict(list)
    budget: dict[tuple, int] = {}
    for r in records:
        trials = _trials(r)
        if trials and r.missing_rate == 0:
            study = (r.method, r.dataset, r.epochs, r.precision)
            clean[study].append(r.cell_seconds)
            budget[study] = trials
    tuning_seconds = sum(budget[s] * statistics.fmean(v) for s, v in clean.items())
    return len(records), cell_seconds / 3600, tuning_seconds / 3600


def regenerate_script(records: Iterable[Mapping[str, Any]]) -> str:
    """``results/regenerate.sh``: every command behind the records, then the tables."""
    records = records_of(records)
    cells, cell_hours, tuning_hours = recorded_hours(records)
    noisy = sum(r.noise != "none" for r in records)
    lines = [
        "#!/usr/bin/env bash",
        "# Regenerates every record in this results directory, then its tables. Generated by",
        "# `python -m bench table` from the records; do not edit by hand.",
        "#",
        "#   bash regenerate.sh                      # resume this directory: only cells without a record run",
        "#   RESULTS=/tmp/fresh bash regenerate.sh   # recompute everything into another one, tuning included",
        "#",
        "# Real datasets are read from $BENCH_DATA. JOBS (default 2) cells run at once.",
        f"# Time, from the records: {cells} cells ({noisy} of them also scored under test-time noise) took",
        f"# {cell_hours:.1f} hours of single-thread compute; tuning adds about {tuning_hours:.1f} hours (each trial",
        "# estimated as one cell of its method at missing rate 0). With JOBS=2 on 2 cores that is about",
        f"# {(cell_hours + tuning_hours) / 2:.1f} hours of wall time.",
        "set -euo pipefail",
        "# The directory that holds this script, from wherever it is run.",
        'RESULTS="${RESULTS:-$(cd "$(dirname "$0")" && pwd)}"',
        'JOBS="${JOBS:-2}"',
        "",
    ]
    lines += regenerate_commands(
        records, tune_extra=' --results "$RESULTS"', run_extra=' --results "$RESULTS" --jobs "$JOBS"'
    )
    lines += ['python -m bench table --results "$RESULTS"', ""]
    return "\n".join(lines)
