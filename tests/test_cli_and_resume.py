"""The CLI's contract: one-line errors with exit 2, resume without retraining, table --check."""

from __future__ import annotations

import json

import pytest
from cli_helpers import grid_args, record_paths

FAST = grid_args(missing_rates="0,0.5")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (("run", "--methods", "late_fusoin"), "Did you mean: late_fusion"),
        (("run", "--methods", "nope"), "unknown method 'nope'"),
        (("run", "--datasets", "nope"), "unknown dataset 'nope'"),
        (("run", "--seeds", "a"), "--seeds 'a' is not a comma-separated list of integers"),
        (("run", "--missing-rates", "0,1.5"), "missing rate 1.5 is outside [0, 1)"),
        (("run", "--missing-rates", "x"), "--missing-rates 'x'"),
        (("run", "--set", "late_fusion.nope=1"), "has no hyperparameter 'nope'"),
        (("run", "--set", "late_fusion.lr=fast"), "lr must be float, got 'fast'"),
        (("run", "--set", "late_fusion.lr=-1"), "lr must be > 0"),
        (("run", "--set", "lr=1"), "is not of the form method.param=value"),
        (("run", "--missing-on", "train"), "invalid choice"),
        (("run", "--epochs", "0"), "epochs must be >= 1"),
        (("run", "--data-workers", "-1"), "--data-workers must be >= 0"),
        (("run", "--data-root", "/no/such/dir"), "is not a directory"),
        (("ls", "things"), "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run_cli, argv, fragment, tmp_path):
    code, out, err = run_cli(*argv, *(("--results", str(tmp_path)) if argv[0] == "run" else ()))
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err


def test_validate_reports_every_problem_at_once(run_cli):
    code, _, err = run_cli("validate", "--methods", "nope", "--missing-rates", "2", "--set", "x.y=1")
    assert code == 2 and "3 problems" in err or "problems" in err
    assert "unknown method 'nope'" in err and "missing rate 2.0" in err


def test_run_then_resume_trains_nothing(run_cli, tmp_path):
    code, out, _ = run_cli("run", *FAST, "--results", str(tmp_path))
    assert code == 0 and "2 cells trained" in out
    records = record_paths(tmp_path)
    assert len(records) == 2
    before = [p.read_text() for p in records]
    code, out, _ = run_cli("run", *FAST, "--results", str(tmp_path))
    assert code == 0 and "nothing to train: all 2 cells already have records" in out
    assert [p.read_text() for p in records] == before


def test_corrupt_or_edited_records_are_reported_and_recomputed(run_cli, tmp_path):
    run_cli("run", *FAST, "--results", str(tmp_path))
    truncated, edited = record_paths(tmp_path)
    truncated.write_text(truncated.read_text()[:50])
    record = json.loads(edited.read_text())
    record["metrics"]["accuracy"] = 0.99
    edited.write_text(json.dumps(record))
    code, out, err = run_cli("run", *FAST, "--results", str(tmp_path))
    assert code == 0 and "2 cells trained" in out
    assert "unreadable record" in err and "checksum mismatch" in err
    assert json.loads(edited.read_text())["metrics"]["accuracy"] != 0.99


def test_table_check_detects_stale_tables(run_cli, tmp_path):
    run_cli("run", *FAST, "--results", str(tmp_path))
    assert run_cli("table", "--results", str(tmp_path), "--check")[0] == 0
    board = tmp_path / "leaderboard.md"
    board.write_text(board.read_text() + "edited\n")
    code, _, err = run_cli("table", "--results", str(tmp_path), "--check")
    assert code == 1 and "differ from what" in err
    assert run_cli("table", "--results", str(tmp_path))[0] == 0
    assert run_cli("table", "--results", str(tmp_path), "--check")[0] == 0


def test_failed_cells_are_recorded_shown_as_failed_and_exit_1(run_cli, tmp_path):
    code, out, err = run_cli(
        "run",
        *FAST,
        "--set",
        "late_fusion.lr=1e12",
        "--set",
        "late_fusion.momentum=0",
        "--epochs",
        "3",
        "--results",
        str(tmp_path),
    )
    assert code == 1 and "cells failed" in err and "non-finite loss" in err
    assert "failed (1)" in (tmp_path / "leaderboard.md").read_text()
    statuses = {json.loads(p.read_text())["status"] for p in (tmp_path / "records").rglob("*.json")}
    assert statuses == {"failed"}


def test_ls_lists_methods_and_dataset_status(run_cli, monkeypatch):
    monkeypatch.delenv("BENCH_DATA", raising=False)
    code, out, _ = run_cli("ls", "datasets")
    assert code == 0 and "synthetic_2m" in out and "available" in out
    assert "handwritten" in out and "missing: no data root" in out
    code, out, _ = run_cli("ls", "methods")
    assert code == 0 and "late_fusion" in out


def test_all_datasets_without_data_runs_what_is_available(run_cli, monkeypatch):
    monkeypatch.delenv("BENCH_DATA", raising=False)
    code, _, err = run_cli("validate", "--methods", "late_fusion", "--datasets", "all")
    assert code == 0 and "skipped dataset handwritten" in err


def _reseal(path, edit):
    """Edit a record in place and re-seal it, as if a run had written it that way."""
    from bench.store import seal

    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(seal({k: v for k, v in record.items() if k != "checksum"})))


def test_verify_reruns_recorded_cells_and_catches_a_changed_number(run_cli, tmp_path):
    run_cli("run", *FAST, "--results", str(tmp_path))
    code, out, _ = run_cli("verify", "--results", str(tmp_path), "--sample", "2", "--seed", "1")
    assert code == 0 and out.count("  same  ") == 2
    path = record_paths(tmp_path)[0]
    _reseal(path, lambda record: record["metrics"].update(accuracy=record["metrics"]["accuracy"] + 0.001))
    code, out, err = run_cli("verify", "--results", str(tmp_path), "--sample", "2", "--seed", "1")
    assert code == 1 and "DIFFERENT" in out and "1 of 2 re-run cells differ" in err


def test_verify_holds_a_record_from_another_cpu_to_determinism_and_strict_to_its_bits(run_cli, tmp_path):
    run_cli("run", *FAST, "--results", str(tmp_path))
    changed, untouched = record_paths(tmp_path)

    def from_another_cpu(record):
        record["environment"]["cpu"] = "AuthenticAMD 23/49 avx2 fma"
        record["metrics"]["accuracy"] += 0.001

    _reseal(changed, from_another_cpu)
    code, out, err = run_cli("verify", "--results", str(tmp_path), "--sample", "2", "--seed", "1")
    assert code == 0 and "  other-cpu  " in out and "made on AuthenticAMD 23/49" in out
    assert "identical on two re-runs here" in out and "1 of 2 cells were recorded on another" in err
    code, out, err = run_cli("verify", "--results", str(tmp_path), "--sample", "2", "--seed", "1", "--strict")
    assert code == 1 and "1 of 2 re-run cells differ" in err
    # A record that predates environment.cpu is from an unknown CPU: held to determinism, not to its bits.
    _reseal(untouched, lambda record: record["environment"].pop("cpu"))
    code, out, _ = run_cli("verify", "--results", str(tmp_path), "--sample", "2", "--seed", "1")
    assert code == 0 and out.count("  same  ") == 1


def test_verify_draws_half_its_sample_from_records_made_on_this_cpu(run_cli, tmp_path):
    run_cli("run", *FAST, "--seeds", "0,1", "--results", str(tmp_path))
    paths = record_paths(tmp_path)
    for path in paths[2:]:
        _reseal(path, lambda record: record["environment"].update(cpu="AuthenticAMD 23/49 avx2 fma"))

    def label(path):
        spec = json.loads(path.read_text())["spec"]
        return f"synthetic_2m/late_fusion/seed{spec['seed']}/miss{spec['missing_rate']:g}  "

    here = [label(path) for path in paths[:2]]
    for seed in range(6):  # a uniform draw of 2 of these 4 records gets one from each half only 2/3 of the time
        code, out, _ = run_cli("verify", "--results", str(tmp_path), "--sample", "2", "--seed", str(seed))
        assert code == 0 and out.count("  same  ") == 2 and sum(h in out for h in here) == 1


def test_verify_max_seconds_leaves_out_cells_that_took_longer(run_cli, tmp_path):
    run_cli("run", *FAST, "--results", str(tmp_path))
    long_one, short_one = record_paths(tmp_path)
    _reseal(long_one, lambda record: record["timings"].update(train_seconds=900.0))

    def label(path):
        spec = json.loads(path.read_text())["spec"]
        return f"synthetic_2m/late_fusion/seed{spec['seed']}/miss{spec['missing_rate']:g}  "

    code, out, _ = run_cli("verify", "--results", str(tmp_path), "--sample", "2", "--max-seconds", "600")
    assert code == 0 and "re-running 1 of 1 re-runnable cells (1 that took longer than 600 s left out)" in out
    assert label(short_one) in out and label(long_one) not in out
    code, _, err = run_cli("verify", "--results", str(tmp_path), "--max-seconds", "0.0001")
    assert code == 2 and "every re-runnable cell took longer than --max-seconds 0.0001; raise it" in err
    code, _, err = run_cli("verify", "--results", str(tmp_path), "--max-seconds", "-1")
    assert code == 2 and err.strip().endswith("--max-seconds must be a positive number of seconds, got -1")


def test_verify_fails_a_cell_that_reruns_differently(run_cli, tmp_path, monkeypatch):
    import bench.cells

    run_cli("run", *FAST, "--results", str(tmp_path))
    for path in (tmp_path / "records").rglob("*.json"):
        _reseal(path, lambda record: record["environment"].pop("cpu"))
    real_run_one, calls = bench.cells.run_one, []

    def drifting_run_one(spec, **kwargs):  # a cell whose numbers change from run to run
        record = real_run_one(spec, **kwargs)
        calls.append(spec)
        record["metrics"]["accuracy"] += 0.001 * len(calls)
        return record

    monkeypatch.setattr(bench.cells, "run_one", drifting_run_one)
    code, out, err = run_cli("verify", "--results", str(tmp_path), "--sample", "1", "--seed", "0")
    assert code == 1 and "NOT DETERMINISTIC" in out and len(calls) == 2 and "1 of 1 re-run cells differ" in err


ONE_CELL = grid_args()


def _failing_cells(monkeypatch):
    import bench.loop
    from bench.errors import CellFailure

    def fail(*args, **kwargs):
        raise CellFailure("non-finite loss (nan) at epoch 0, batch 0")

    monkeypatch.setattr(bench.loop, "run_cell", fail)


def test_overwrite_whose_cell_fails_keeps_the_ok_record(run_cli, tmp_path, monkeypatch):
    assert run_cli("run", *ONE_CELL, "--results", str(tmp_path))[0] == 0
    (path,) = record_paths(tmp_path)
    good = path.read_text()
    with monkeypatch.context() as patch:
        _failing_cells(patch)
        code, _, err = run_cli("run", *ONE_CELL, "--overwrite", "--results", str(tmp_path))
    assert code == 1 and "the earlier ok record is kept" in err
    assert path.read_text() == good  # not replaced by the failure
    failure = json.loads(path.with_suffix(".failed").read_text())
    assert failure["status"] == "failed" and "non-finite loss" in failure["reason"]
    assert "failed (1)" not in (tmp_path / "leaderboard.md").read_text()
    # a later ok run replaces the record and clears the failure beside it
    code, out, _ = run_cli("run", *ONE_CELL, "--overwrite", "--results", str(tmp_path))
    assert code == 0 and "1 cells trained" in out and not path.with_suffix(".failed").exists()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_plain_rerun_retries_failed_cells_and_says_so(run_cli, tmp_path, monkeypatch, jobs):
    with monkeypatch.context() as patch:
        _failing_cells(patch)
        assert run_cli("run", *ONE_CELL, "--results", str(tmp_path))[0] == 1
    (path,) = record_paths(tmp_path)
    assert json.loads(path.read_text())["status"] == "failed"
    code, out, err = run_cli("run", *ONE_CELL, "--jobs", jobs, "--results", str(tmp_path))
    assert code == 0 and "1 cells trained, 0 reused" in out
    assert [line for line in err.splitlines() if "retrying" in line] == [
        "retrying 1 cells whose records say they failed (--overwrite recomputes every cell)"
    ]
    assert json.loads(path.read_text())["status"] == "ok"
    code, out, err = run_cli("run", *ONE_CELL, "--results", str(tmp_path))
    assert code == 0 and "nothing to train" in out and "retrying" not in err


def test_table_check_fails_on_a_damaged_record(run_cli, tmp_path):
    run_cli("run", *FAST, "--results", str(tmp_path))
    assert run_cli("table", "--results", str(tmp_path), "--check")[0] == 0
    first, second = record_paths(tmp_path)
    good = first.read_text()
    first.write_text(good[: len(good) // 2])  # truncated JSON
    code, _, err = run_cli("table", "--results", str(tmp_path), "--check")
    assert code == 1 and "1 damaged record(s)" in err and "unreadable record" in err
    first.write_text(good)
    record = json.loads(second.read_text())
    record["metrics"]["accuracy"] = 0.999  # a hand-edited value: the stored digest of the body no longer matches
    second.write_text(json.dumps(record, indent=1, sort_keys=True))
    code, _, err = run_cli("table", "--results", str(tmp_path), "--check")
    assert code == 1 and "checksum mismatch" in err


def test_table_prints_the_short_summary_and_the_paths_it_wrote(run_cli, tmp_path):
    run_cli("run", *FAST, "--results", str(tmp_path))
    code, out, _ = run_cli("table", "--results", str(tmp_path))
    assert code == 0
    board = (tmp_path / "leaderboard.md").read_text()
    assert len(out.splitlines()) < len(board.splitlines()) / 2  # not the whole leaderboard
    from bench.store import iter_records
    from bench.tables.leaderboard import run_summary

    assert out.startswith(run_summary(list(iter_records(tmp_path))))
    (wrote,) = [line for line in out.splitlines() if line.startswith("wrote ")]
    assert str(tmp_path / "leaderboard.md") in wrote and str(tmp_path / "regenerate.sh") in wrote


def test_version_and_the_help_hint_name_the_right_command(run_cli):
    import subprocess
    import sys

    from bench import __version__

    done = subprocess.run([sys.executable, "-m", "bench", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"bench {__version__}"
    code, _, err = run_cli("--nope")
    assert code == 2 and "(see python -m bench --help)" in err
    code, _, err = run_cli("run", "--nope")
    assert code == 2 and "(see python -m bench run --help)" in err


def test_quiet_prints_only_the_summary_and_verbose_every_epoch(run_cli, tmp_path):
    grid = ("run", *grid_args("late_fusion,fusion_xattn", epochs="2"))
    code, out, err = run_cli(*grid, "-q", "--results", str(tmp_path / "q"))
    assert code == 0 and err == "", err  # no note about fusion_xattn, no progress bar
    assert "1 cells trained" in out and "late_fusion" in out
    code, out, err = run_cli(*grid, "--results", str(tmp_path / "plain"))
    assert code == 0 and "note: fusion_xattn does not apply" in err and "epoch 1/2" not in err
    code, out, err = run_cli(*grid, "-v", "--results", str(tmp_path / "v"))
    lines = [line for line in err.splitlines() if "synthetic_2m/late_fusion/seed0/miss0 epoch" in line]
    assert code == 0 and [line.split(" epoch ")[1].split(":")[0] for line in lines] == ["1/2", "2/2"]
    assert all("train loss" in line and "validation 0." in line for line in lines)
    assert run_cli(*grid, "-q", "-v", "--results", str(tmp_path / "both"))[0] == 2
