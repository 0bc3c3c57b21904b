"""Records as data: bench.load_records and bench export."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
from cli_helpers import grid_args, record_paths

import bench
from bench.cli import main
from bench.tables.frame import BASE_COLUMNS, load_history

CELLS = grid_args(missing_rates="0,0.5", epochs="2")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("frame")
    assert main(["run", *CELLS, "--results", str(root)]) == 0
    noisy = (*grid_args(seeds="1"), "--noise", "gaussian", "--noise-levels", "0,10")
    assert main(["run", *noisy, "--results", str(root)]) == 0
    return root


def _records(root):
    return {p.stem: json.loads(p.read_text()) for p in (root / "records").rglob("*.json")}


def test_one_row_per_record_with_the_documented_columns(results):
    frame = bench.load_records(results)
    records = _records(results)
    assert len(frame) == len(records) == 3
    assert tuple(frame.columns[: len(BASE_COLUMNS)]) == BASE_COLUMNS
    dotted = list(frame.columns[len(BASE_COLUMNS) :])
    assert dotted == sorted(dotted) and all("." in name for name in dotted)
    for _, row in frame.iterrows():
        record = records[row["key"]]
        assert row["method"] == record["spec"]["method"] and row["seed"] == record["spec"]["seed"]
        assert row["missing_rate"] == record["spec"]["missing_rate"]
        assert row["accuracy"] == record["metrics"]["accuracy"]
        assert row["missing_fraction_test"] == record["notes"]["missing_fraction_test"]
        assert row["env_cpu"] == record["environment"]["cpu"]
        assert row["schema_version"] == record["schema_version"] == 1
        for modality, value in record["metrics"]["per_modality_accuracy"].items():
            assert row[f"per_modality_accuracy.{modality}"] == value
        assert json.loads(row["hparams"]) == record["spec"]["hparams"]
        assert not row["tuned"] and row["hparams_source"] == "default"
    assert frame["seed"].dtype.kind == "i" and frame["accuracy"].dtype.kind == "f"


def test_noise_levels_become_dotted_columns(results):
    frame = bench.load_records(results)
    noisy = frame[frame["noise"] == "gaussian"]
    assert len(noisy) == 1 and noisy["noise_levels"].iloc[0] == "0,10"
    record = _records(results)[noisy["key"].iloc[0]]
    assert noisy["noise.10.accuracy"].iloc[0] == record["metrics"]["noise"]["10"]["accuracy"]
    assert frame[frame["noise"] == "none"]["noise.10.accuracy"].isna().all()


def test_damaged_records_are_skipped_with_a_warning(results, tmp_path):
    copy = tmp_path / "copy"
    for path in (results / "records").rglob("*.json"):
        target = copy / path.relative_to(results)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    victim = record_paths(copy)[0]
    victim.write_text(victim.read_text()[:40])
    with pytest.warns(UserWarning, match="unreadable record"):
        frame = bench.load_records(copy)
    assert len(frame) == 2 and victim.stem not in set(frame["key"])


def test_history_in_long_form(results):
    history = load_history(results)
    records = _records(results)
    assert len(history) == sum(len(r["history"]) for r in records.values())
    first = history[(history["key"] == next(iter(records))) & (history["epoch"] == 0)].iloc[0]
    entry = records[first["key"]]["history"][0]
    assert first["train_loss"] == entry["train_loss"] and first["val_score"] == entry["val_score"]


@pytest.mark.parametrize("suffix, reader", [("csv", pd.read_csv), ("parquet", pd.read_parquet)])
def test_export_round_trips(results, tmp_path, run_cli, suffix, reader):
    out = tmp_path / f"records.{suffix}"
    code, stdout, _ = run_cli("export", "--results", str(results), "--out", str(out))
    assert code == 0 and "wrote 3 records" in stdout and f"({suffix})" in stdout
    back = reader(out).set_index("key").sort_index()
    frame = bench.load_records(results).set_index("key").sort_index()
    assert list(back.columns) == list(frame.columns)
    assert back["accuracy"].tolist() == frame["accuracy"].tolist()
    assert back["per_modality_accuracy.weak"].tolist() == frame["per_modality_accuracy.weak"].tolist()


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (("--out", "records.xlsx"), "cannot tell the format of 'records.xlsx'"),
        (("--out", "/no/such/dir/r.csv"), "does not exist"),
    ],
)
def test_export_bad_input_is_one_line(results, run_cli, extra, fragment):
    code, _, err = run_cli("export", "--results", str(results), *extra)
    assert code == 2 and err.count("\n") == 1 and fragment in err


def test_export_without_records_or_pyarrow_says_what_to_do(results, run_cli, tmp_path, monkeypatch):
    code, _, err = run_cli("export", "--results", str(tmp_path), "--out", str(tmp_path / "r.csv"))
    assert code == 2 and "has no records/ folder" in err
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    code, _, err = run_cli("export", "--results", str(results), "--out", str(tmp_path / "r.parquet"))
    assert code == 2 and err.count("\n") == 1 and "pip install 'pyarrow>=12'" in err
    assert not (tmp_path / "r.parquet").exists()
