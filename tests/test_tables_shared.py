"""What makes ``bench table`` fast at lab scale must never change what it writes: fields kept per record,
results kept per RecordSet, and the leaderboard built in a forked child (bench.tables.forked)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.record import Record
from bench.store import iter_records
from bench.tables import forked
from bench.tables.common import RecordSet, computed_once, drop_capped_duplicates, split_by_task
from bench.tables.leaderboard import leaderboard

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _record(method: str, seed: int, rate: float = 0.0) -> Record:
    spec = {"method": method, "dataset": "toy", "seed": seed, "missing_rate": rate, "hparams": {}}
    notes = {"modalities": ["a", "b"], "task": "classification"}
    return Record({"key": f"{method}-{seed}-{rate}", "status": "ok", "spec": spec, "metrics": {}, "notes": notes})


def test_a_kept_field_is_computed_once_and_a_changed_copy_recomputes():
    record = _record("qmf", 0, 0.7)
    assert record.at_rate_cap and record.effective_missing_rate == 0.5
    calls = []

    def compute(r: Record) -> str:
        calls.append(r.key)
        return r.method.upper()

    assert record.kept(compute) == record.kept(compute) == "QMF" and len(calls) == 1
    copy = record.with_spec(method="mla", missing_rate=0.2)
    assert (copy.method, copy.missing_rate, copy.at_rate_cap) == ("mla", 0.2, False)
    assert copy.kept(compute) == "MLA" and len(calls) == 2


def test_results_are_kept_on_a_record_set_and_never_on_a_list():
    calls = []

    @computed_once
    def count(records, label):
        calls.append(label)
        return [label, len(records)]

    plain = [_record("qmf", s) for s in range(3)]
    tabled = drop_capped_duplicates(plain)
    assert type(tabled) is RecordSet and drop_capped_duplicates(tabled) is tabled
    assert count(tabled, "x") is count(tabled, "x") and count(tabled, "y") == ["y", 3]
    assert calls == ["x", "y"]
    count(plain, "x"), count(plain, "x")
    assert calls == ["x", "y", "x", "x"]
    assert split_by_task(tabled) is split_by_task(tabled)


def test_capped_twins_are_dropped_into_the_record_set():
    rows = [_record("qmf", 0, 0.5), _record("qmf", 0, 0.7), _record("qmf", 1, 0.7)]
    kept = drop_capped_duplicates(rows)
    # seed 0's 0.7 repeats its 0.5 cell; seed 1's 0.7 has no twin and is read at its realised rate 0.5
    assert [(r.seed, r.missing_rate) for r in kept] == [(0, 0.5), (1, 0.5)]


def _pid(records) -> int:
    return os.getpid()


def _fails_in_a_child(records, parent: int = os.getpid()) -> str:
    if os.getpid() != parent:
        raise RuntimeError("only in the child")
    return "computed here"


@pytest.mark.skipif(not hasattr(os, "fork") or forked._cores() < 2, reason="needs fork and two cores")
def test_in_child_runs_in_a_child_and_falls_back_here_when_the_child_fails():
    records = list(range(5))
    assert forked.in_child(_pid, records, fork_at=5)() != os.getpid()
    assert forked.in_child(_pid, records, fork_at=6)() == os.getpid()  # below the threshold: here
    assert forked.in_child(_fails_in_a_child, records, fork_at=0)() == "computed here"


def test_in_child_runs_here_on_one_core(monkeypatch):
    monkeypatch.setattr(forked, "_cores", lambda: 1)
    assert forked.in_child(_pid, [1, 2], fork_at=0)() == os.getpid()


@pytest.mark.skipif(not hasattr(os, "fork") or forked._cores() < 2, reason="needs fork and two cores")
def test_the_leaderboard_built_in_a_child_is_the_one_built_here():
    records = drop_capped_duplicates(r for r in iter_records(RESULTS) if isinstance(r, dict))
    assert len(records) > 1000
    assert forked.in_child(leaderboard, records, fork_at=0)() == leaderboard(records)
