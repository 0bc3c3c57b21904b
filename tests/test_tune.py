"""Tuning: same budget per method, validation only, best hyperparameters in a file that run --tuned uses."""

from __future__ import annotations

import json

import pytest
from cli_helpers import grid_args

# tune refuses --seeds and --missing-rates: they only choose evaluation cells
TINY = grid_args(seeds=None, missing_rates=None, epochs="2")


def test_tune_writes_best_params_and_run_tuned_uses_them(run_cli, tmp_path):
    code, out, err = run_cli("tune", *TINY, "--trials", "3", "--results", str(tmp_path))
    assert code == 0, out
    progress = [line for line in err.splitlines() if line.startswith("  late_fusion/synthetic_2m/e2/p1: trial ")]
    assert [line.split(" trial ")[1].split()[0] for line in progress] == ["1/3", "2/3", "3/3"]
    assert all("validation 0." in line or "pruned after epoch" in line for line in progress)
    tuned = json.loads((tmp_path / "tuned" / "synthetic_2m" / "late_fusion.json").read_text())
    assert tuned["method"] == "late_fusion" and tuned["trials"] == 3 and tuned["finished_trials"] == 3
    assert tuned["study"] == "late_fusion/synthetic_2m/e2/p1" and 0 < tuned["best_value"] <= 1
    assert set(tuned["params"]) <= set(tuned["hparams"])

    code, _, _ = run_cli("tune", *TINY, "--trials", "3", "--results", str(tmp_path))
    assert code == 0  # the study already holds its budget: no new trial
    again = json.loads((tmp_path / "tuned" / "synthetic_2m" / "late_fusion.json").read_text())
    assert again["finished_trials"] == 3 and again["params"] == tuned["params"]

    code, out, err = run_cli(
        "run", *TINY, "--seeds", "0", "--missing-rates", "0", "--tuned", "--results", str(tmp_path)
    )
    assert code == 0, err
    record = json.loads(next((tmp_path / "records").rglob("*.json")).read_text())
    assert record["spec"]["hparams_source"] == "tuned:late_fusion/synthetic_2m/e2/p1:3-trials"
    for name, value in tuned["params"].items():
        assert record["spec"]["hparams"][name] == value


def test_a_committed_tuned_file_resumes_without_its_journal(run_cli, tmp_path, monkeypatch):
    """regenerate.sh re-runs `tune` on a fresh clone, where the (uncommitted) journal is absent: the tuned
    file of the same study and budget is kept and no trial runs; a larger budget tunes again."""
    import shutil

    import bench.loop

    assert run_cli("tune", *TINY, "--trials", "2", "--results", str(tmp_path))[0] == 0
    path = tmp_path / "tuned" / "synthetic_2m" / "late_fusion.json"
    before = path.read_text()
    shutil.rmtree(tmp_path / "tuning")
    trained = []
    original = bench.loop.run_cell
    monkeypatch.setattr(bench.loop, "run_cell", lambda *a, **k: trained.append(1) or original(*a, **k))
    assert run_cli("tune", *TINY, "--trials", "2", "--results", str(tmp_path))[0] == 0
    assert path.read_text() == before and trained == []
    assert run_cli("tune", *TINY, "--trials", "3", "--results", str(tmp_path))[0] == 0
    assert json.loads(path.read_text())["trials"] == 3 and trained


def _tune_late_fusion(results_dir, *, trials: int, epochs: int) -> dict:
    """tune_one in-process on the synthetic grid; imported on call, after the test has patched bench.loop."""
    from bench.tune import tune_one

    return tune_one(
        "late_fusion",
        "synthetic_2m",
        trials=trials,
        results_dir=results_dir,
        storage=None,
        epochs=epochs,
        batch_size=64,
        data_root=None,
    )


def test_tuning_never_evaluates_test(monkeypatch, tmp_path):
    import bench.loop

    calls = []
    original = bench.loop.evaluate
    monkeypatch.setattr(
        bench.loop,
        "evaluate",
        lambda method, model, split, *rest: calls.append(len(split)) or original(method, model, split, *rest),
    )
    _tune_late_fusion(tmp_path, trials=1, epochs=2)
    assert calls and set(calls) == {500}  # the validation split only; test has 1,000 samples


def test_missing_or_foreign_tuned_file_is_one_line(run_cli, tmp_path):
    code, _, err = run_cli("run", *TINY, "--tuned", "--results", str(tmp_path))
    assert code == 2 and "no tuned hyperparameters for late_fusion on synthetic_2m" in err and "bench tune" in err
    path = tmp_path / "tuned" / "synthetic_2m" / "late_fusion.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"method": "qmf", "dataset": "synthetic_2m", "params": {}, "study": "x", "trials": 1}))
    code, _, err = run_cli("run", *TINY, "--tuned", "--results", str(tmp_path))
    assert code == 2 and "holds hyperparameters of 'qmf'" in err and err.count("\n") == 1


def test_evaluation_seeds_must_not_reuse_tuning_seeds(run_cli):
    code, _, err = run_cli("validate", *TINY, "--seeds", "0,1000")
    assert code == 2 and "reserved for tuning" in err


def test_two_tuners_share_one_journal_safely(tmp_path):
    import subprocess
    import sys

    args = [sys.executable, "-m", "bench", "tune", *TINY, "--trials", "4", "--results", str(tmp_path)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    import optuna

    from bench.tune import open_storage

    study = optuna.load_study(study_name="late_fusion/synthetic_2m/e2/p1", storage=open_storage(tmp_path, None))
    finished = [t for t in study.trials if t.state.is_finished()]
    assert 4 <= len(finished) <= 5  # MaxTrialsCallback may let one in-flight trial finish past the budget


def test_a_diverging_trial_scores_zero_and_counts_toward_the_budget(tmp_path, monkeypatch, capsys):
    import bench.loop
    from bench.errors import CellFailure

    real = bench.loop.run_cell
    calls = {"n": 0}

    def sometimes_diverges(spec, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise CellFailure("non-finite loss (nan) at epoch 0, batch 0")
        return real(spec, **kwargs)

    monkeypatch.setattr(bench.loop, "run_cell", sometimes_diverges)
    summary = _tune_late_fusion(tmp_path, trials=3, epochs=1)
    assert summary["finished_trials"] == 3 and calls["n"] == 3
    assert "trial 2/3 diverged, scores 0" in capsys.readouterr().err
    assert summary["best_value"] > 0


def test_run_tuned_skips_a_method_that_does_not_apply_instead_of_asking_for_its_tuning(run_cli, tmp_path):
    """`tune` skips cross-attention fusion on vector modalities, so it has no tuned file there: `run --tuned`
    skips its cells with the usual note, where it used to stop the whole run asking for that tuning."""
    code, _, _ = run_cli("tune", *TINY, "--trials", "1", "--results", str(tmp_path))
    assert code == 0
    code, out, err = run_cli(
        "run", *grid_args("late_fusion,fusion_xattn", epochs="2"), "--tuned", "--results", str(tmp_path)
    )
    assert code == 0, err
    assert "fusion_xattn does not apply to synthetic_2m" in out + err
    assert [json.loads(p.read_text())["spec"]["method"] for p in (tmp_path / "records").rglob("*.json")] == [
        "late_fusion"
    ]


def _trial_specs(monkeypatch):
    """Record the spec of every trial cell (the real cell still runs)."""
    import bench.loop

    seen = []
    original = bench.loop.run_cell
    monkeypatch.setattr(bench.loop, "run_cell", lambda spec, **k: seen.append(spec) or original(spec, **k))
    return seen


ONE = (*grid_args(seeds=None, missing_rates=None), "--trials", "1")


@pytest.mark.parametrize(
    "option, study_part, check",
    [
        (
            ("--set", "encoder.strong=vector"),
            "/encoder.strong=vector",
            lambda spec: spec.extra["encoders"] == {"strong": "vector"},
        ),
        (("--patience", "3"), "/patience3", lambda spec: spec.patience == 3),
        (("--batch-size", "32"), "/b32", lambda spec: spec.batch_size == 32),
        (("--set", "late_fusion.momentum=0.5"), "/set.momentum=0.5", lambda spec: spec.hparams["momentum"] == 0.5),
    ],
)
def test_tune_honours_every_option_that_changes_a_cell(run_cli, tmp_path, monkeypatch, option, study_part, check):
    """Each option reaches every trial's cell and names the study: `run --tuned` with the tuning's options uses
    the file, without them it refuses in one line (the cells would differ from the tuned ones)."""
    seen = _trial_specs(monkeypatch)
    code, _, err = run_cli("tune", *ONE, *option, "--results", str(tmp_path))
    assert code == 0, err
    assert seen and all(check(spec) for spec in seen)
    tuned = json.loads((tmp_path / "tuned" / "synthetic_2m" / "late_fusion.json").read_text())
    assert tuned["study"] == f"late_fusion/synthetic_2m/e1/p1{study_part}"
    grid = (*grid_args(), "--tuned", "--results", str(tmp_path))
    code, _, err = run_cli("run", *grid)
    assert code == 2 and err.count("\n") == 1 and "not 'late_fusion/synthetic_2m/e1/p1'" in err, err
    code, _, err = run_cli("run", *grid, *option)
    assert code == 0, err
    record = json.loads(next((tmp_path / "records").rglob("*.json")).read_text())
    assert record["spec"]["hparams_source"].startswith(f"tuned:{tuned['study']}:1-trials")  # +set with --set


def test_tune_honours_a_dataset_option(run_cli, tmp_path, monkeypatch):
    seen = _trial_specs(monkeypatch)
    tune = ("tune", *grid_args(datasets="imbalance_2m", seeds=None, missing_rates=None), "--trials", "1")
    code, _, err = run_cli(*tune, "--set", "data.coverage=0.9", "--results", str(tmp_path))
    assert code == 0, err
    assert seen and all(spec.extra["dataset_options"] == {"coverage": 0.9} for spec in seen)
    assert all(spec.dataset_version.endswith("cov0.9") for spec in seen)  # the adapter names its option
    tuned = json.loads((tmp_path / "tuned" / "imbalance_2m" / "late_fusion.json").read_text())
    assert tuned["study"] == "late_fusion/imbalance_2m/e1/p1/data.coverage=0.9"


def test_run_tune_tunes_on_the_encoder_it_runs_on(run_cli, tmp_path, monkeypatch):
    seen = _trial_specs(monkeypatch)
    code, _, err = run_cli(
        "run", *grid_args(), "--tune", "1", "--set", "encoder.weak=vector", "--results", str(tmp_path)
    )
    assert code == 0, err
    trials = [s for s in seen if s.hparams_source == "tuning-trial"]
    cells = [s for s in seen if s.hparams_source != "tuning-trial"]
    assert trials and cells and {s.extra["encoders"]["weak"] for s in trials + cells} == {"vector"}


def test_a_batch_size_change_does_not_reuse_the_default_batch_study(run_cli, tmp_path, monkeypatch):
    assert run_cli("tune", *ONE, "--results", str(tmp_path))[0] == 0
    seen = _trial_specs(monkeypatch)
    assert run_cli("tune", *ONE, "--batch-size", "32", "--results", str(tmp_path))[0] == 0
    assert seen and {s.batch_size for s in seen} == {32}  # tuned again, not the batch-64 file reused


@pytest.mark.parametrize(
    "option",
    [
        ("--seeds", "0,1"),
        ("--missing-rates", "0.5"),
        ("--noise", "gaussian"),
        ("--noise-levels", "5"),
        ("--missing-on", "test"),
    ],
)
def test_tune_refuses_options_that_only_choose_evaluation_cells(run_cli, tmp_path, option):
    code, _, err = run_cli("tune", *ONE, *option, "--results", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and f"tune does not take {option[0]}" in err, err
    assert not (tmp_path / "tuned").exists()


def test_run_tuned_with_other_epochs_than_the_tuning_refuses_in_one_line(run_cli, tmp_path):
    assert run_cli("tune", *TINY, "--trials", "1", "--results", str(tmp_path))[0] == 0
    code, _, err = run_cli("run", *grid_args(epochs="3"), "--tuned", "--results", str(tmp_path))
    assert code == 2 and err.count("\n") == 1
    assert "tuned with --epochs 2, but this run uses --epochs 3" in err
    assert not (tmp_path / "records").exists()
