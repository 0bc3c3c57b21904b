"""Numbers reported in papers: the CSV is validated, and the table pairs each number with ours or leaves it empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.errors import UsageError
from bench.tables.papers import COLUMNS, REPORTED_FILE, papers_table, read_reported

REPO = Path(__file__).resolve().parents[1]
ROW = "d,late_fusion,Baseline,accuracy,65.50,Some paper Table 1,their protocol"


def _record(method: str, seed: int, accuracy: float, missing_rate: float = 0.0) -> dict:
    spec = {
        "method": method,
        "dataset": "d",
        "dataset_version": "1",
        "protocol": 1,
        "epochs": 1,
        "batch_size": 8,
        "missing_on": "all",
        "precision": "fp32",
        "seed": seed,
        "missing_rate": missing_rate,
        "hparams": {},
    }
    return {
        "key": f"{method}{seed}{missing_rate}",
        "status": "ok",
        "spec": spec,
        "metrics": {"accuracy": accuracy, "macro_f1": accuracy},
    }


def _csv(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / REPORTED_FILE
    path.write_text(",".join(COLUMNS) + "\n" + "\n".join(rows) + "\n")
    return path


def test_ours_is_the_mean_over_seeds_of_complete_data_cells(tmp_path):
    reported = read_reported(_csv(tmp_path, ROW, ROW.replace("late_fusion", "qmf")))
    records = [
        _record("late_fusion", 0, 0.60),
        _record("late_fusion", 1, 0.70),
        _record("late_fusion", 0, 0.10, missing_rate=0.5),
    ]
    table = papers_table(records, reported)
    late = next(line for line in table.splitlines() if "late_fusion (Baseline)" in line)
    assert "| 65.50 | 65.00 ± 7.07 (n=2;" in late
    qmf = next(line for line in table.splitlines() if "qmf (Baseline)" in line)
    assert qmf.endswith("| 65.50 |  |")  # no record of ours: the cell stays empty


@pytest.mark.parametrize(
    "row, fragment",
    [
        ("d,late_fusion,Baseline,accuracy,65.5,,their protocol", "every column needs a value"),
        ("d,late_fusion,Baseline,top5,65.5,src,setup", "metric 'top5'"),
        ("d,late_fusion,Baseline,accuracy,high,src,setup", "value 'high' is not a number"),
    ],
)
def test_a_malformed_row_is_a_one_line_error_naming_the_line(tmp_path, row, fragment):
    with pytest.raises(UsageError, match=fragment) as info:
        read_reported(_csv(tmp_path, ROW, row))
    assert ":3:" in str(info.value) and "\n" not in str(info.value)


def test_the_committed_reported_numbers_are_well_formed():
    rows = read_reported(REPO / "results" / REPORTED_FILE)
    assert rows and all(0 < float(r["value"]) <= 100 for r in rows)
