"""Saved models (run --save-models), bench eval without retraining, per-sample predictions (--log-samples)."""

from __future__ import annotations

import numpy as np
import pytest
from cli_helpers import grid_args, read_records

import bench
from bench.artifacts import CellOutputs, evaluate_saved
from bench.cells import run_one
from bench.loop import task_of
from bench.registry import METHODS, default_method
from bench.spec import CellSpec
from bench.store import write_record
from bench.testing import applicable_tiny_datasets, tiny_spec

CELLS = grid_args(missing_rates="0,0.5", epochs="2")


def _methods() -> list[str]:
    return [n for n in METHODS.names() if METHODS.error(n) is None]


@pytest.mark.parametrize("name", _methods())
def test_eval_at_the_trained_setting_reproduces_the_record(name, tmp_path):
    """The saved weights are the selected ones, and eval rebuilds the model the run scored: at the source's own
    missing rate and noise, every test metric comes back bit for bit (classification and retrieval methods)."""
    dataset = applicable_tiny_datasets(name, ("_tiny_2m", "_tiny_2m_seq"))[0]
    spec = tiny_spec(name, dataset=dataset, missing_rate=0.25, epochs=1)
    spec = CellSpec.from_dict({**spec.to_dict(), "noise": "gaussian", "noise_levels": (0.0, 10.0)})
    record = run_one(spec, data_root=None, outputs=CellOutputs(save_model=True), results_dir=tmp_path)
    assert record["status"] == "ok", record["reason"]
    write_record(tmp_path, record)
    again = evaluate_saved(tmp_path, record, 0.25, "gaussian", (0.0, 10.0), data_root=None)
    selection = task_of(default_method(name)).selection_key
    assert again["metrics"] == record["metrics"] and again["metrics"][selection] == record["metrics"][selection]
    assert again["evaluated_from"]["key"] == record["key"] and again["key"] != record["key"]


def test_records_without_the_options_are_unchanged(tmp_path):
    spec = tiny_spec("late_fusion", missing_rate=0.25)
    plain = run_one(spec, data_root=None)
    kept = run_one(
        spec,
        data_root=None,
        outputs=CellOutputs(save_model=True, log_samples=True, loggers=("csv",)),
        results_dir=tmp_path,
    )
    assert "artifacts" not in plain and set(kept["artifacts"]) == {"model", "samples"}
    for field in ("metrics", "history", "notes", "spec", "key"):
        assert kept[field] == plain[field], field


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from bench.cli import main

    root = tmp_path_factory.mktemp("saved")
    assert main(["run", *CELLS, "--results", str(root), "--save-models", "--log-samples"]) == 0
    return root


def _trained(root):
    records = read_records(root)
    return {r["spec"]["missing_rate"]: r for r in records if "evaluated_from" not in r}


def test_saved_files_sit_next_to_the_record_with_their_sha256(saved):
    import hashlib

    for record in _trained(saved).values():
        folder = saved / "records" / "synthetic_2m" / "late_fusion"
        model = folder / record["artifacts"]["model"]["file"]
        digest = hashlib.sha256(model.read_bytes()).hexdigest()
        assert digest == record["artifacts"]["model"]["sha256"]
        assert model.name == f"{record['key']}.model.{digest[:16]}.pt"  # content-addressed


def test_samples_file_agrees_with_the_record(saved):
    for record in _trained(saved).values():
        folder = saved / "records" / "synthetic_2m" / "late_fusion"
        samples = np.load(folder / record["artifacts"]["samples"]["file"])
        n = record["metrics"]["num_test_samples"]
        assert samples["index"].tolist() == list(range(n))
        assert np.mean(samples["predicted"] == samples["label"]) == pytest.approx(record["metrics"]["accuracy"])
        for modality, value in record["metrics"]["per_modality_accuracy"].items():
            assert np.mean(samples[f"predicted.{modality}"] == samples["label"]) == pytest.approx(value)
        assert ((samples["confidence"] > 0) & (samples["confidence"] <= 1)).all()
        assert samples["confidence"].min() >= 1 / 6 - 1e-6  # a softmax's largest probability over 6 classes


def test_eval_uses_the_test_masks_of_the_rate_and_writes_distinguishable_records(saved, run_cli):
    code, out, err = run_cli("eval", "--results", str(saved), "--missing-rates", "0.5")
    assert code == 0, err
    assert "2 evaluation records written" in out
    trained = _trained(saved)
    records = read_records(saved)
    evaluated = {r["evaluated_from"]["key"]: r for r in records if "evaluated_from" in r}
    from_clean = evaluated[trained[0.0]["key"]]
    assert (
        from_clean["spec"]["missing_rate"] == 0.5
        and from_clean["spec"]["extra"]["evaluated_from"] == trained[0.0]["key"]
    )
    assert from_clean["notes"]["missing_fraction_test"] == trained[0.5]["notes"]["missing_fraction_test"]
    assert from_clean["evaluated_from"]["missing_rate"] == 0.0 and from_clean["history"] == []
    # the model trained at rate 0.5 and scored at 0.5 is the trained cell's own number
    assert evaluated[trained[0.5]["key"]]["metrics"]["accuracy"] == trained[0.5]["metrics"]["accuracy"]
    frame = bench.load_records(saved)
    assert set(frame.loc[frame["evaluated_from"].notna(), "key"]) == {r["key"] for r in evaluated.values()}
    code, out, _ = run_cli("eval", "--results", str(saved), "--missing-rates", "0.5")
    assert code == 0 and "0 evaluation records written, 2 already there" in out


def test_a_cached_cell_reruns_only_when_a_requested_file_is_missing(saved, run_cli):
    code, out, _ = run_cli("run", *CELLS, "--results", str(saved), "--save-models")
    assert code == 0 and "nothing to train" in out
    record = _trained(saved)[0.0]
    (saved / "records" / "synthetic_2m" / "late_fusion" / record["artifacts"]["model"]["file"]).unlink()
    code, out, _ = run_cli("run", *CELLS, "--results", str(saved), "--save-models", "--log-samples")
    assert code == 0 and "1 cells trained, 1 reused" in out
    assert _trained(saved)[0.0]["metrics"] == record["metrics"]


def test_a_damaged_model_is_refused(tmp_path, run_cli):
    from bench.cli import main

    assert (
        main(["run", *CELLS[:-4], "--missing-rates", "0", "--epochs", "1", "--results", str(tmp_path), "--save-models"])
        == 0
    )
    model = next((tmp_path / "records").rglob("*.pt"))
    model.write_bytes(model.read_bytes()[:-3] + b"xyz")
    code, _, err = run_cli("eval", "--results", str(tmp_path), "--missing-rates", "0.5")
    assert code == 2 and err.count("\n") == 1 and "does not match the sha256" in err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (("--missing-rates", "1.5"), "outside [0, 1)"),
        (("--methods", "qmf"), "has a saved model"),
    ],
)
def test_eval_bad_input_is_one_line(saved, run_cli, argv, fragment):
    code, _, err = run_cli("eval", "--results", str(saved), *argv)
    assert code == 2 and err.count("\n") == 1 and fragment in err


def test_save_models_with_ray_is_refused(tmp_path, run_cli):
    code, _, err = run_cli("run", *CELLS, "--results", str(tmp_path), "--save-models", "--executor", "ray")
    assert code == 2 and "local executor" in err


def test_verify_re_runs_trained_records_only(saved, run_cli):
    run_cli("eval", "--results", str(saved), "--missing-rates", "0.25")
    code, out, err = run_cli("verify", "--results", str(saved), "--sample", "10", "--seed", "0")
    assert code == 0, err
    assert "re-running 2 of 2 re-runnable cells" in out


def test_eval_can_log_samples_under_noise(saved, run_cli):
    code, _, err = run_cli(
        "eval",
        "--results",
        str(saved),
        "--missing-rates",
        "0",
        "--noise",
        "salt_pepper",
        "--noise-levels",
        "0,10",
        "--log-samples",
    )
    assert code == 0, err
    records = read_records(saved)
    noisy = [r for r in records if "evaluated_from" in r and r["spec"].get("noise") == "salt_pepper"]
    assert len(noisy) == 2
    for record in noisy:
        samples = np.load(saved / "records" / "synthetic_2m" / "late_fusion" / record["artifacts"]["samples"]["file"])
        assert np.mean(samples["predicted"] == samples["label"]) == pytest.approx(record["metrics"]["accuracy"])
        level = record["metrics"]["noise"]["10"]["accuracy"]
        assert np.mean(samples["noise.10.predicted"] == samples["label"]) == pytest.approx(level)
