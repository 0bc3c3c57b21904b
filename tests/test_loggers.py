"""Per-epoch loggers as plugins (bench.loggers): csv and tensorboard built in, third-party ones registered."""

from __future__ import annotations

import csv
import json
import sys

import pytest
from cli_helpers import grid_args, record_paths

from bench.loggers import LOGGERS

CELLS = grid_args(epochs="3")


def _record(root):
    (path,) = record_paths(root)
    return json.loads(path.read_text())


def test_csv_logger_writes_one_row_per_epoch_of_the_history(tmp_path, run_cli):
    code, _, err = run_cli("run", *CELLS, "--results", str(tmp_path), "--logger", "csv")
    assert code == 0, err
    record = _record(tmp_path)
    path = tmp_path / "logs" / "synthetic_2m" / "late_fusion" / f"{record['key']}.csv"
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == len(record["history"]) == 3
    for row, entry in zip(rows, record["history"]):
        assert int(row["epoch"]) == entry["epoch"]
        assert float(row["train_loss"]) == entry["train_loss"] and float(row["val_score"]) == entry["val_score"]
        for modality, value in entry["val_per_modality"].items():
            assert float(row[f"val_per_modality.{modality}"]) == value
    assert "artifacts" not in record  # loggers observe; the record is the plain one


class _Recorder:
    seen: list = []

    def __init__(self, results_dir, spec):
        self.spec = spec

    def log_epoch(self, entry):
        _Recorder.seen.append((self.spec.key, entry["epoch"], entry["val_score"]))

    def close(self):
        _Recorder.seen.append((self.spec.key, "closed"))


def test_a_registered_logger_sees_every_epoch_and_is_closed(tmp_path, run_cli):
    LOGGERS.register("recorder", _Recorder)
    try:
        _Recorder.seen.clear()
        code, _, err = run_cli("run", *CELLS, "--results", str(tmp_path), "--logger", "recorder")
        assert code == 0, err
    finally:
        LOGGERS.unregister("recorder")
    record = _record(tmp_path)
    assert _Recorder.seen == [(record["key"], e["epoch"], e["val_score"]) for e in record["history"]] + [
        (record["key"], "closed")
    ]


def test_tensorboard_logger_writes_event_files(tmp_path, run_cli):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, _, err = run_cli("run", *CELLS, "--results", str(tmp_path), "--logger", "csv,tensorboard")
    assert code == 0, err
    record = _record(tmp_path)
    folder = tmp_path / "tensorboard" / "synthetic_2m" / "late_fusion" / record["key"]
    events = EventAccumulator(str(folder))
    events.Reload()
    scores = [(e.step, e.value) for e in events.Scalars("val/score")]
    assert scores == [(h["epoch"], pytest.approx(h["val_score"])) for h in record["history"]]
    assert "val/per_modality/weak" in events.Tags()["scalars"]


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("nope", "unknown logger 'nope'"),
        ("tensorboard", "pip install 'bench-mml[tensorboard]'"),
        (",", "--logger is empty"),
    ],
)
def test_bad_logger_is_one_line(tmp_path, run_cli, monkeypatch, value, fragment):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if the package were not installed
    code, _, err = run_cli("run", *CELLS, "--results", str(tmp_path), "--logger", value)
    assert code == 2 and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "records").exists()  # refused before any cell ran
