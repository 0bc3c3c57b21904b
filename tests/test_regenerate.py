"""results/regenerate.sh: the commands derived from the records must recreate exactly those records."""

from __future__ import annotations

import shlex
import subprocess

from bench.store import iter_records
from bench.tables.regenerate import recorded_hours, regenerate_commands, regenerate_script


def _record_files(results):
    return sorted(p.relative_to(results).as_posix() for p in (results / "records").rglob("*.json"))


def _ragged_results(run_cli, results):
    """A ragged set of records: two methods on different missing rates, one bf16 cell, one noisy cell."""
    common = ("--datasets", "synthetic_2m", "--seeds", "0", "--epochs", "1", "--results", str(results))
    assert run_cli("run", "--methods", "late_fusion", "--missing-rates", "0,0.5", *common)[0] == 0
    assert run_cli("run", "--methods", "qmf", "--missing-rates", "0", *common)[0] == 0
    assert run_cli("run", "--methods", "qmf", "--missing-rates", "0", "--precision", "bf16", *common)[0] == 0
    assert (
        run_cli(
            "run",
            "--methods",
            "late_fusion",
            "--missing-rates",
            "0",
            "--noise",
            "gaussian",
            "--noise-levels",
            "0,5",
            *common,
        )[0]
        == 0
    )
    return [r for r in iter_records(results) if isinstance(r, dict)]


def test_the_commands_recreate_exactly_the_recorded_cells(run_cli, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    records = _ragged_results(run_cli, first)
    commands = regenerate_commands(records, run_extra=f" --results {second}")
    assert len(commands) == 4  # late_fusion x {0, 0.5} and qmf x {0} are separate blocks; bf16; noise
    for line in commands:
        argv = shlex.split(line)
        assert argv[:3] == ["python", "-m", "bench"]
        assert run_cli(*argv[3:])[0] == 0, line
    assert _record_files(second) == _record_files(first)


def _mla_cub_spec(hparams_source: str) -> dict:
    """A 30-epoch MLA cell on CUB, as much of its spec as regenerate_commands reads."""
    return {
        "method": "mla",
        "dataset": "cub",
        "seed": 0,
        "missing_rate": 0.0,
        "epochs": 30,
        "batch_size": 64,
        "missing_on": "all",
        "precision": "fp32",
        "hparams_source": hparams_source,
    }


def test_tuned_records_are_tuned_first_with_their_budget():
    spec = _mla_cub_spec("tuned:mla/cub/e30/p1:10-trials")
    records = [{"spec": dict(spec, seed=s), "timings": {"train_seconds": 6.0, "test_seconds": 1.0}} for s in (0, 1)]
    (line,) = regenerate_commands(records)
    tune, run = line.split(" && ")
    assert tune == "python -m bench tune --methods mla --datasets cub --epochs 30 --batch-size 64 --trials 10"
    assert run.endswith("--seeds 0,1 --missing-rates 0 --tuned")
    cells, cell_hours, tuning_hours = recorded_hours(records)
    assert cells == 2 and abs(cell_hours - 14 / 3600) < 1e-12 and abs(tuning_hours - 70 / 3600) < 1e-12


def test_the_script_is_valid_bash_and_runs_every_command(tmp_path):
    spec = {
        "method": "late_fusion",
        "dataset": "synthetic_2m",
        "seed": 0,
        "missing_rate": 0.0,
        "epochs": 1,
        "batch_size": 64,
        "missing_on": "all",
        "precision": "fp32",
        "hparams_source": "default",
    }
    script = regenerate_script([{"spec": spec}])
    path = tmp_path / "regenerate.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    assert "python -m bench run --methods late_fusion --datasets synthetic_2m" in script
    assert script.rstrip().endswith('python -m bench table --results "$RESULTS"')


def test_the_script_resumes_the_directory_it_was_generated_for(run_cli, tmp_path):
    """Run from another folder with no RESULTS, the script works on the directory that holds it: every cell is
    reused, and no `results` folder appears anywhere."""
    import os
    import sys

    results = tmp_path / "somewhere" / "my-results"
    common = ("--datasets", "synthetic_2m", "--seeds", "0", "--epochs", "1", "--missing-rates", "0")
    assert run_cli("run", "--methods", "late_fusion", *common, "--results", str(results))[0] == 0
    before = {p: p.read_text() for p in (results / "records").rglob("*.json")}
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # `python` as the script calls it
    (bindir / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "JOBS": "1"}
    env.pop("RESULTS", None)
    done = subprocess.run(
        ["bash", str(results / "regenerate.sh")], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "nothing to train: all 1 cells already have records in " + str(results) in done.stdout
    assert {p: p.read_text() for p in (results / "records").rglob("*.json")} == before
    assert not list(tmp_path.rglob("results"))


def test_dataset_options_encoders_and_patience_reach_the_commands(run_cli, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    common = ("--methods", "late_fusion", "--seeds", "0", "--epochs", "1", "--missing-rates", "0")
    assert (
        run_cli("run", *common, "--datasets", "imbalance_2m", "--set", "data.coverage=0.9", "--results", str(first))[0]
        == 0
    )
    assert (
        run_cli(
            "run",
            *common,
            "--datasets",
            "synthetic_2m",
            "--patience",
            "3",
            "--set",
            "encoder.weak=vector",
            "--results",
            str(first),
        )[0]
        == 0
    )
    records = [r for r in iter_records(first) if isinstance(r, dict)]
    commands = regenerate_commands(records, run_extra=f" --results {second}")
    assert any("--set data.coverage=0.9" in line for line in commands)
    assert any("--patience 3" in line and "--set encoder.weak=vector" in line for line in commands)
    for line in commands:
        assert run_cli(*shlex.split(line)[3:])[0] == 0, line
    assert _record_files(second) == _record_files(first)


def test_records_scored_from_saved_models_add_no_training_command():
    spec = _mla_cub_spec("default")
    trained = {"spec": spec, "timings": {"train_seconds": 6.0, "test_seconds": 1.0}}
    evaluated = {
        "spec": dict(spec, missing_rate=0.5, extra={"evaluated_from": "abc"}),
        "timings": {"test_seconds": 1.0},
    }
    assert regenerate_commands([trained, evaluated]) == regenerate_commands([trained])
