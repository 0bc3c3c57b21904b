"""``bench verify``: re-run a random sample of recorded cells and compare them with their records.

A record made on this CPU model, kernel setting, torch version, thread count and OS build must come back bit for bit
(:func:`bench.cells.numerics`);
one made elsewhere must at least re-run identically twice here (float results differ across CPU models: see
:func:`bench.cells.cpu_identity`). The sampling and the verdicts live here; ``bench.cli`` only prints them.
"""

from __future__ import annotations

import random
from pathlib import Path

from bench.record import Record

__all__ = ["FAILING", "pick_sample", "rerunnable_records", "verify_record", "within_seconds"]

#: Verdicts that fail ``bench verify``; ``other-cpu`` fails only under ``--strict``.
FAILING = ("DIFFERENT", "NOT DETERMINISTIC")


def rerunnable_records(results: Path, data_root: Path | None) -> list[Record]:
    """The ok training records under ``results`` whose dataset is registered and available here. Records
    scored by ``bench eval`` trained nothing: their source record is the one to re-run."""
    from bench.registry import DATASETS
    from bench.store import iter_records

    candidates = []
    for record in iter_records(results):
        if isinstance(record, dict) and record["status"] == "ok" and "evaluated_from" not in record:
            dataset = record["spec"]["dataset"]
            if dataset in DATASETS.names() and DATASETS.get(dataset).available(data_root)[0]:
                candidates.append(record)
    return candidates


def within_seconds(candidates: list[Record], max_seconds: float | None) -> tuple[list[Record], int]:
    """(the candidates whose record took at most ``max_seconds`` to train and test, how many were left out).
    A re-run takes about as long as the record did (:attr:`Record.cell_seconds`), twice for a record made on
    another CPU, so a bound keeps a sampled check (CI's) from drawing a cell of many minutes."""
    if max_seconds is None:
        return candidates, 0
    kept = [record for record in candidates if record.cell_seconds <= max_seconds]
    return kept, len(candidates) - len(kept)


def pick_sample(candidates: list[dict], here: tuple, size: int, seed: int) -> list[dict]:
    """Half the sample (rounded up) from records made on this CPU, which promise identical bits; the rest
    from all others, so that the check also covers the records made elsewhere."""
    from bench.cells import recorded_numerics

    on_this_cpu, others = [], []
    for record in candidates:
        made = recorded_numerics(record)  # kernels aside: each record re-runs under its own (bench.kernels)
        same = made is not None and (made[0], *made[2:]) == (here[0], *here[2:])
        (on_this_cpu if same else others).append(record)
    rng = random.Random(seed)
    rng.shuffle(on_this_cpu)
    rng.shuffle(others)
    first = min((size + 1) // 2, len(on_this_cpu))
    sample = on_this_cpu[:first] + others[: size - first]
    return sample + on_this_cpu[first : first + size - len(sample)]


def verify_record(record: dict, here: tuple, data_root: Path | None) -> tuple[str, str]:
    """Re-run one recorded cell -> (verdict, detail). Verdicts: same; DIFFERENT (made on this CPU, so the
    bits had to match); NOT DETERMINISTIC (two re-runs here disagree); other-cpu (made on another or an
    unrecorded CPU, and re-runs identically here). The cell re-runs under the kernel setting the record
    names (bench.kernels.rerun: in a child process when it is not this process's)."""
    from bench.cells import numerics, recorded_numerics
    from bench.kernels import rerun
    from bench.loop import headline

    fresh = rerun(record, data_root=data_root, threads=here[3])[0]
    if fresh["status"] == "ok" and fresh["metrics"] == record["metrics"]:
        return "same", ""
    if fresh["status"] != "ok":
        return "DIFFERENT", f"failed: {fresh['reason']}"
    detail = f"-> {headline(fresh['metrics'])[1]}"
    if recorded_numerics(record) == numerics(fresh["environment"], here[3]):
        return "DIFFERENT", detail
    again = rerun(record, data_root=data_root, threads=here[3])[0]
    if again["metrics"] != fresh["metrics"]:
        return "NOT DETERMINISTIC", f"{detail}, then -> {headline(again['metrics'])[1]}"
    env = record["environment"]
    made_on = f"{env.get('cpu', 'an unrecorded CPU')}, {env.get('platform', 'an unrecorded OS build')}"
    return "other-cpu", f"{detail} (made on {made_on}; identical on two re-runs here)"
