"""The records index (bench.record_index): loading through it gives exactly what reading every file gives, and
a file is re-read whenever it could have changed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench import record_index
from bench.spec import CellSpec
from bench.store import iter_records, read_record, record_path, write_record


def _record(seed: int, method: str = "late_fusion", accuracy: float = 0.5) -> dict:
    spec = CellSpec(
        method=method,
        dataset="synthetic_2m",
        dataset_version="2",
        seed=seed,
        missing_rate=0.0,
        epochs=1,
        batch_size=64,
        hparams={"lr": 0.1},
    )
    return {
        "schema_version": 1,
        "key": spec.key,
        "spec": spec.to_dict(),
        "status": "ok",
        "reason": None,
        "metrics": {"accuracy": accuracy},
        "timings": None,
        "notes": {},
        "environment": {},
    }


def _fresh(results: Path) -> list:
    return [read_record(p) for p in sorted((results / "records").rglob("*.json"))]


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "results"
    for seed in range(4):
        write_record(folder, _record(seed))
    write_record(folder, _record(0, method="qmf"))
    return folder


class Counting:
    def __init__(self):
        self.paths = []

    def __call__(self, path):
        self.paths.append(Path(path).name)
        return read_record(path)


def _settle(monkeypatch, seconds: float = 10.0):
    """Pretend the files were written ``seconds`` ago (they are then old enough to be indexed)."""
    real = time.time_ns
    monkeypatch.setattr(record_index.time, "time_ns", lambda: real() + int(seconds * 1e9))


def test_second_load_reads_no_file_and_returns_the_same_records_in_the_same_order(results, monkeypatch):
    _settle(monkeypatch)
    first, second = Counting(), Counting()
    assert record_index.load(results, first) == _fresh(results)
    assert len(first.paths) == 5 and record_index.index_path(results).exists()
    assert record_index.load(results, second) == _fresh(results) and second.paths == []
    assert list(iter_records(results)) == _fresh(results)


def test_a_changed_added_or_removed_file_is_seen(results, monkeypatch):
    _settle(monkeypatch)
    record_index.load(results, Counting())
    paths = sorted((results / "records").rglob("*.json"))
    time.sleep(0.05)  # past the file system's clock tick
    write_record(results, _record(1, accuracy=0.75))  # rewritten (os.replace: new inode, new times)
    write_record(results, _record(9))  # added
    paths[0].unlink()  # removed
    seen = Counting()
    loaded = record_index.load(results, seen)
    assert loaded == _fresh(results) and len(seen.paths) == 2
    assert {r["metrics"]["accuracy"] for r in loaded if r["spec"]["seed"] == 1} == {0.75}


def test_an_edit_in_place_of_the_same_size_is_caught_and_a_damaged_record_is_never_indexed(results, monkeypatch):
    _settle(monkeypatch)
    record_index.load(results, Counting())
    path = record_path(results, CellSpec.from_dict(_record(2)["spec"]))
    text = path.read_text()
    time.sleep(0.05)
    path.write_text(text.replace('"accuracy": 0.5', '"accuracy": 0.6'))  # same size, same inode
    for _ in range(2):
        seen = Counting()
        loaded = record_index.load(results, seen)
        assert loaded == _fresh(results) and seen.paths == [path.name]
        (problem,) = [r for r in loaded if not isinstance(r, dict)]
        assert problem.path == path and "checksum mismatch" in str(problem)


def test_recent_files_are_read_every_time_until_they_settle(results):
    for _ in range(2):
        seen = Counting()
        assert record_index.load(results, seen) == _fresh(results) and len(seen.paths) == 5


def test_an_index_of_other_code_or_garbage_is_ignored(results, monkeypatch):
    _settle(monkeypatch)
    record_index.load(results, Counting())
    monkeypatch.setattr(record_index, "_code_digest", lambda: "other code")
    seen = Counting()
    assert record_index.load(results, seen) == _fresh(results) and len(seen.paths) == 5
    record_index.index_path(results).write_bytes(b"not marshal")
    seen = Counting()
    assert record_index.load(results, seen) == _fresh(results) and len(seen.paths) == 5


def test_order_is_that_of_sorted_rglob_even_where_names_sort_differently_as_strings(results, monkeypatch):
    # "a" < "a-b" by path components, but "a-b/..." < "a/..." as strings ('-' < '/').
    for folder in ("a", "a-b", "a.b"):
        target = results / "records" / "synthetic_2m" / folder / "x.json"
        target.parent.mkdir(parents=True)
        target.write_text(json.dumps({"not": "a record"}))
    loaded = record_index.load(results, read_record)
    assert [str(r.path) if not isinstance(r, dict) else r["key"] for r in loaded] == [
        str(r.path) if not isinstance(r, dict) else r["key"] for r in _fresh(results)
    ]


def test_records_come_back_typed_from_the_files_and_from_the_index_alike(results, monkeypatch):
    from bench.record import Record

    _settle(monkeypatch)
    for _ in range(2):  # the first load reads the files, the second takes them from the index
        loaded = list(iter_records(results))
        assert all(type(r) is Record for r in loaded) and loaded == _fresh(results)
        assert sorted((r.method, r.seed) for r in loaded) == [("late_fusion", s) for s in range(4)] + [("qmf", 0)]
        assert all(r.task == "classification" and r.ok and r.schema_version == 1 for r in loaded)


def test_new_record_carries_the_store_schema_version_and_its_file_is_what_a_dict_gives(tmp_path):
    from bench import store
    from bench.record import Record

    spec = CellSpec.from_dict(_record(0)["spec"])
    record = store.new_record(spec, status="ok", metrics={"accuracy": 0.5}, notes={"task": "retrieval"}, environment={})
    assert record.schema_version == store.SCHEMA_VERSION and record.key == spec.key and record.is_retrieval
    assert "history" not in record and "artifacts" not in record  # optional fields are left out when None
    plain = {**record}
    assert type(plain) is dict and store.seal(plain) == store.seal(record)
    written = write_record(tmp_path, record)
    assert written.read_text() == json.dumps(store.seal(plain), indent=1, sort_keys=True) + "\n"
    with pytest.raises(TypeError, match="read-only"):
        record["status"] = "failed"
    assert Record.of(record) is record and Record.of(plain) == record
