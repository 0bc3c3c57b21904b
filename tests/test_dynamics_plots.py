"""Training-dynamics figures: per-modality validation accuracy by epoch, from hand-made records' history."""

from __future__ import annotations

import json

import pytest

from bench.tables.common import setting_key
from bench.tables.plots import dynamics_curves, dynamics_plot_names, dynamics_plots
from tests.test_leaderboard import _record

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _with_history(record, accuracies, losses=None, *, modalities=("audio", "video")):
    """``accuracies``: one {modality: acc} per epoch (epochs 1, 2, ...); a None entry has no per-modality part."""
    history = []
    for epoch, per in enumerate(accuracies, 1):
        entry = {"epoch": epoch, "train_loss": (losses or [1.0 / epoch] * len(accuracies))[epoch - 1], "val_score": 0.5}
        if per is not None:
            entry["val_per_modality"] = {m: per[m] for m in modalities if m in per}
        history.append(entry)
    return {**record, "history": history}


def _run(method, seed, epochs_of_audio, *, rate=0.0, source="default", epochs=10):
    accuracies = [{"audio": a, "video": a / 2} for a in epochs_of_audio]
    return _with_history(_record(method, seed, 0.7, rate=rate, source=source, epochs=epochs), accuracies)


def test_mean_over_seeds_uses_only_the_epochs_every_seed_has():
    records = [
        _run("mla", 0, [0.2, 0.4, 0.6]),
        _run("mla", 1, [0.4, 0.6]),  # seed 1 stopped early
        _run("late_fusion", 0, [0.5, 0.5, 0.5, 0.5]),
    ]
    [(setting, rows)] = dynamics_curves(records).items()
    assert setting == setting_key(records[0]["spec"])
    assert rows["mla"].seeds == 2
    assert rows["mla"].per_modality["audio"] == [(1, pytest.approx(0.3)), (2, pytest.approx(0.5))]
    assert rows["mla"].per_modality["video"] == [(1, pytest.approx(0.15)), (2, pytest.approx(0.25))]
    assert rows["mla"].train_loss == [(1, pytest.approx(1.0)), (2, pytest.approx(0.5))]
    assert rows["late_fusion"].seeds == 1 and [e for e, _ in rows["late_fusion"].per_modality["audio"]] == [1, 2, 3, 4]


def test_epochs_without_a_modality_are_left_out_for_that_modality():
    one = _with_history(_record("mla", 0, 0.7), [{"audio": 0.2, "video": 0.1}, {"audio": 0.4}, None])
    two = _with_history(_record("mla", 1, 0.7), [{"audio": 0.4, "video": 0.3}, {"audio": 0.6, "video": 0.5}, None])
    rows = next(iter(dynamics_curves([one, two]).values()))
    assert rows["mla"].per_modality["audio"] == [(1, pytest.approx(0.3)), (2, pytest.approx(0.5))]
    assert rows["mla"].per_modality["video"] == [(1, pytest.approx(0.2))]
    assert [e for e, _ in rows["mla"].train_loss] == [1, 2, 3]


def test_only_settings_with_qualifying_history_get_a_figure():
    plain = _record("late_fusion", 0, 0.6)  # made before the history existed
    no_per_modality = _with_history(_record("early_fusion", 0, 0.6, epochs=20), [None, None])
    missing = _run("mla", 0, [0.2, 0.4], rate=0.5, epochs=30)
    noisy = _run("mla", 0, [0.2, 0.4], epochs=40)
    noisy["spec"] = {**noisy["spec"], "noise": "gaussian"}
    failed = {**_run("mla", 0, [0.2, 0.4], epochs=50), "status": "failed", "metrics": None}
    assert dynamics_plot_names([plain, no_per_modality, missing, noisy, failed]) == []
    good = [
        _run("mla", 0, [0.2, 0.4]),
        _run("late_fusion", 0, [0.3, 0.3]),
        _run("mla", 0, [0.1, 0.2], source="tuned:mla/toy/e10/p1:20-trials"),
    ]
    names = dynamics_plot_names(good + [plain, no_per_modality, missing, noisy, failed])
    assert len(names) == 2  # default and tuned hyperparameters are separate settings
    assert all(name.startswith("toy_dynamics_") and name.endswith(".png") for name, _ in names)
    assert len({name for name, _ in names}) == 2
    captions = " ".join(caption for _, caption in names)
    assert "paper-default hyperparameters" in captions and "tuned on validation" in captions
    assert dynamics_plot_names(list(reversed(good))) == dynamics_plot_names(good)
    rows = next(iter(dynamics_curves(good[:2] + [no_per_modality.copy()]).values()))
    assert sorted(rows) == ["late_fusion", "mla"]  # a method without per-modality history is not drawn


def test_two_configs_of_one_method_are_not_averaged_together():
    a = _with_history(_record("mla", 0, 0.7, lr=0.001), [{"audio": 0.2, "video": 0.1}])
    b = _with_history(_record("mla", 0, 0.7, lr=0.01), [{"audio": 0.8, "video": 0.9}])
    rows = next(iter(dynamics_curves([a, b]).values()))
    assert len(rows) == 2 and all(label.startswith("mla (cfg ") for label in rows)


@pytest.mark.parametrize("methods", [2, 8])  # one axis; small multiples above six methods
def test_the_png_is_written_and_small(tmp_path, methods):
    pytest.importorskip("matplotlib")
    records = [
        _run(f"method_{i}", seed, [0.1 * i + 0.05 * e for e in range(5)]) for i in range(methods) for seed in (0, 1)
    ]
    [path] = dynamics_plots(records, tmp_path)
    assert path.name == dynamics_plot_names(records)[0][0]
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and b"IEND" in data[-16:]
    assert 5_000 < len(data) < 60_000  # a few tens of kB
    assert dynamics_plots(records, tmp_path / "again")[0].read_bytes() == data  # deterministic bytes


def test_bench_table_draws_the_dynamics_figure_and_lists_it(run_cli, tmp_path):
    pytest.importorskip("matplotlib")
    from bench.store import write_record

    records = [
        _run("late_fusion", 0, [0.3, 0.5, 0.6]),
        _run("mla", 0, [0.4, 0.6, 0.7]),
        _run("mla", 0, [0.3, 0.4, 0.5], rate=0.5),
    ]
    for r in records:
        _write(tmp_path, r, write_record)
    assert run_cli("table", "--results", str(tmp_path))[0] == 0
    [(name, caption)] = dynamics_plot_names(records)
    assert (tmp_path / "plots" / name).read_bytes().startswith(PNG_SIGNATURE)
    readme = (tmp_path / "README.md").read_text()
    assert "## Training dynamics" in readme and f"![{caption}](plots/{name})" in readme
    assert run_cli("table", "--results", str(tmp_path), "--check")[0] == 0
    # the history gone, the figure goes too (stale PNGs of either kind are deleted)
    for path in (tmp_path / "records").rglob("*.json"):
        path.unlink()
    for r in records:
        _write(tmp_path, {k: v for k, v in r.items() if k != "history"}, write_record)
    assert run_cli("table", "--results", str(tmp_path))[0] == 0
    assert not (tmp_path / "plots" / name).exists()
    assert "Training dynamics" not in (tmp_path / "README.md").read_text()


def _write(results_dir, record, write_record):
    """A hand-made record as the store writes one: a full spec and its key."""
    from bench.spec import CellSpec

    spec = CellSpec.from_dict({k: v for k, v in record["spec"].items() if k != "key"})
    full = {**record, "spec": json.loads(json.dumps(spec.to_dict())), "key": spec.key}
    write_record(results_dir, full)
