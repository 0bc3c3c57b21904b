"""The loop's protocol: validation-only selection, full test counting, determinism, failure handling."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.errors import CellFailure
from bench.loop import run_cell
from bench.protocol import DatasetInfo, LoadedData, ModalitySpec, SplitData
from bench.registry import DATASETS
from bench.testing import tiny_spec


@dataclasses.dataclass(frozen=True)
class _Adversarial:
    """Validation follows the training rule; test labels are shifted by one class, so the better a model
    is on validation, the worse it is on test. Selecting on test would pick a different epoch."""

    info: DatasetInfo
    test_size: int = 1037  # not a multiple of any batch size used

    def available(self, data_root: Path | None):
        return True, ""

    def load(self, data_root: Path | None) -> LoadedData:
        rng = np.random.default_rng(0)
        n = 300 + 200 + self.test_size
        y = rng.integers(0, 3, size=n)
        x = (1.5 * rng.standard_normal((3, 4))[y] + rng.standard_normal((n, 4))).astype(np.float32)
        shown = y.copy()
        shown[500:] = (y[500:] + 1) % 3

        def split(a, b):
            return SplitData(
                {"a": torch.from_numpy(x[a:b, :2]), "b": torch.from_numpy(x[a:b, 2:])}, torch.from_numpy(shown[a:b])
            )

        return LoadedData(
            (ModalitySpec("a", (2,)), ModalitySpec("b", (2,))), split(0, 300), split(500, n), split(300, 500)
        )


@pytest.fixture(scope="module")
def adversarial():
    info = DatasetInfo(
        name="_adversarial",
        modalities=("a", "b"),
        num_classes=3,
        version="1",
        license="x",
        citation="x",
        homepage="x",
        needs_data_root=False,
    )
    if "_adversarial" not in DATASETS.names():
        DATASETS.register("_adversarial", _Adversarial(info))
    return "_adversarial"


def test_best_epoch_is_chosen_on_validation_never_test(adversarial):
    spec = dataclasses.replace(tiny_spec("late_fusion", epochs=8, overrides={"lr": 0.05}), dataset=adversarial)
    seen: list[float] = []
    result = run_cell(spec, on_epoch=lambda epoch, val: seen.append(val))
    metrics = result["metrics"]
    assert len(seen) == 8
    assert metrics["selected_epoch"] == int(np.argmax(seen))
    assert metrics["best_val_accuracy"] == max(seen)
    assert metrics["best_val_accuracy"] > 0.6 and metrics["accuracy"] < 0.4  # val and test disagree


def test_whole_test_split_is_scored(adversarial):
    spec = dataclasses.replace(tiny_spec("late_fusion", epochs=1), dataset=adversarial)
    assert run_cell(spec)["metrics"]["num_test_samples"] == 1037


def test_same_seed_gives_identical_metrics_and_other_seeds_differ():
    a = run_cell(tiny_spec("late_fusion", seed=0, missing_rate=0.3))
    b = run_cell(tiny_spec("late_fusion", seed=0, missing_rate=0.3))
    c = run_cell(tiny_spec("late_fusion", seed=1, missing_rate=0.3))
    assert a["metrics"] == b["metrics"]
    assert a["metrics"] != c["metrics"]


def test_non_finite_loss_fails_the_cell():
    with pytest.raises(CellFailure, match="non-finite loss"):
        run_cell(tiny_spec("late_fusion", overrides={"lr": 1e12, "momentum": 0.0}, epochs=3))


def test_early_stopping_stops_after_patience():
    spec = dataclasses.replace(tiny_spec("late_fusion", epochs=40, overrides={"lr": 0.05}), patience=2)
    metrics = run_cell(spec)["metrics"]
    assert metrics["epochs_run"] < 40
    assert metrics["epochs_run"] == metrics["selected_epoch"] + 1 + 2


def test_bf16_autocast_runs_every_step_and_is_recorded():
    spec = dataclasses.replace(tiny_spec("mla", epochs=2), precision="bf16")
    result = run_cell(spec)
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
    assert spec.key != tiny_spec("mla", epochs=2).key


def test_the_history_has_one_entry_per_epoch_with_loss_and_validation_accuracy():
    """Training dynamics: one entry per epoch run, the training loss, the validation score that selects the epoch
    (whose maximum is the recorded best) and the per-modality validation accuracy of a late-fusion model."""
    from bench.loop import run_cell
    from bench.testing import tiny_spec

    result = run_cell(tiny_spec("late_fusion", epochs=3))
    history = result["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert all(math.isfinite(h["train_loss"]) and h["train_loss"] > 0 for h in history)
    assert max(h["val_score"] for h in history) == result["metrics"]["best_val_accuracy"]
    assert all(set(h["val_per_modality"]) == set(result["metrics"]["per_modality_accuracy"]) for h in history)
    assert "history" not in result["metrics"]  # verify compares metrics; older records stay verifiable


# --------------------------------------------------------------------------------------------------
# The resample and pretrain hooks

_SEEN: list = []


@dataclasses.dataclass(frozen=True)
class _ResampleSpy:
    """Late fusion that trains every epoch on rows 0..9 of the training split, each twice, without modality b."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    optimizer: str = "sgd"
    lr_step: int = 70
    lr_gamma: float = 0.1
    zero_fill_missing = True

    def build(self, description):
        from bench.nn import SlicedFusionNet

        return SlicedFusionNet(description, "concat")

    def resample(self, model, epoch):
        rows = torch.arange(10).repeat(2)
        keep = torch.ones(20, 2, dtype=torch.bool)
        keep[:, 1] = False
        return rows, keep

    def loss(self, model, batch, ctx):
        from bench.protocol import LossOut

        _SEEN.append((batch.label.clone(), batch.mask.clone(), batch.inputs["b"].clone()))
        logits, _ = model(batch.inputs)
        return LossOut(torch.nn.functional.cross_entropy(logits, batch.label))

    def predict(self, model, batch):
        from bench.protocol import Prediction

        return Prediction(model(batch.inputs)[0])

    @staticmethod
    def search_space(trial):
        return {}


def _register(name, obj):
    from bench.registry import METHODS

    if name not in METHODS.names():
        METHODS.register(name, obj, origin="tests")


def test_resample_hook_replaces_each_epochs_training_split_and_removes_the_modalities_it_drops():
    from bench.data import cell_data

    _register("_resample_spy", _ResampleSpy)
    _SEEN.clear()
    spec = tiny_spec("_resample_spy", epochs=2)
    result = run_cell(spec)
    assert [h["train_samples"] for h in result["history"]] == [20, 20]
    train = cell_data(spec, data_root=None, zero_fill=True, device=torch.device("cpu")).train
    labels = torch.cat([label for label, _, _ in _SEEN])
    assert len(labels) == 40  # two epochs of 20 rows, batch size 16
    counts = torch.bincount(labels, minlength=int(train.labels.max()) + 1)
    expected = torch.bincount(train.labels[:10].repeat(4), minlength=len(counts))
    assert torch.equal(counts, expected)
    for _, mask, b in _SEEN:
        assert not mask[:, 1].any()  # b removed from every resampled row...
        assert torch.count_nonzero(b) == 0  # ...and zero-filled like a missing modality


def test_resampled_split_keeps_the_rows_own_missing_modalities():
    from bench.data import MaskedSplit
    from bench.loop import resampled_split

    x = {"a": torch.arange(1.0, 5.0).reshape(4, 1), "b": torch.arange(10.0, 14.0).reshape(4, 1)}
    mask = torch.tensor([[True, True], [True, False], [False, True], [True, True]])
    split = MaskedSplit({k: v * mask[:, i : i + 1] for i, (k, v) in enumerate(x.items())}, torch.arange(4), mask)
    keep = torch.tensor([[True, False], [True, True], [True, True]])
    out = resampled_split(split, torch.tensor([3, 1, 2]), keep, zero_fill=True)
    assert out.labels.tolist() == [3, 1, 2]
    assert out.mask.tolist() == [[True, False], [True, False], [False, True]]
    assert out.inputs["a"].flatten().tolist() == [4.0, 2.0, 0.0]
    assert out.inputs["b"].flatten().tolist() == [0.0, 0.0, 12.0]


@dataclasses.dataclass(frozen=True)
class _PretrainSpy(_ResampleSpy):
    """Late fusion with a late-fusion "teacher" trained first and kept frozen inside the model."""

    def resample(self, model, epoch):
        return None

    def pretrain(self, description):
        from bench.registry import default_method

        return {"teacher": default_method("late_fusion")}

    def adopt_pretrained(self, model, models):
        model.teacher = models["teacher"]
        model.teacher.requires_grad_(False)
        model.register_buffer("teacher_start", torch.nn.utils.parameters_to_vector(model.teacher.parameters()).clone())


def test_pretrain_stage_trains_like_a_cell_of_its_own_and_its_frozen_weights_stay_out_of_the_optimizer():
    _register("_pretrain_spy", _PretrainSpy)
    spec = tiny_spec("_pretrain_spy", epochs=3, overrides={"lr": 0.05})
    result = run_cell(spec)
    alone = run_cell(tiny_spec("late_fusion", epochs=3, overrides={}))["metrics"]
    note = result["notes"]["pretrained"]["teacher"]
    assert note == {
        "best_val_accuracy": alone["best_val_accuracy"],
        "selected_epoch": alone["selected_epoch"],
        "epochs_run": 3,
    }


def test_pretrained_teacher_is_unchanged_by_the_main_training():
    from bench.data import cell_data
    from bench.loop import _fit, _pretrain, autocast_for, build_method, task_of

    _register("_pretrain_spy", _PretrainSpy)
    spec = tiny_spec("_pretrain_spy", epochs=2, overrides={"lr": 0.05})
    method = build_method(spec)
    data = cell_data(spec, data_root=None, zero_fill=True, device=torch.device("cpu"))
    autocast = autocast_for("fp32", torch.device("cpu"))
    models, _, _ = _pretrain(method, data, None, spec, torch.device("cpu"), autocast)
    before = torch.nn.utils.parameters_to_vector(models["teacher"].parameters()).clone()
    fit = _fit(method, task_of(method), data, None, spec, torch.device("cpu"), autocast, pretrained=models)
    after = torch.nn.utils.parameters_to_vector(fit.model.teacher.parameters())
    assert torch.equal(before, after)
    assert torch.equal(fit.model.teacher_start, before)


# --------------------------------------------------------------------------------------------------
# The optional no_weight_decay hook: parameter groups of the optimizer


def test_without_no_weight_decay_the_optimizer_has_one_group_of_every_trainable_parameter():
    from bench.loop import _make_optimizer, build_method

    for method_name in ("late_fusion", "qmf", "align_uniform"):
        method = build_method(tiny_spec(method_name))
        model = method.build(_tiny_description(method_name))
        # late fusion and QMF have no hook; align_uniform has it (shared by the alignment objectives) but no
        # temperatures
        assert not list(getattr(method, "no_weight_decay", lambda m: [])(model))
        optimizer = _make_optimizer(method, model)
        assert len(optimizer.param_groups) == 1
        group = optimizer.param_groups[0]
        assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters() if p.requires_grad]
        assert group["weight_decay"] == method.weight_decay


def _tiny_description(method_name: str):
    from bench.data import cell_data

    spec = tiny_spec(method_name)
    return cell_data(spec, data_root=None, zero_fill=True, device=torch.device("cpu")).description


def test_no_weight_decay_names_go_to_a_group_without_decay_under_every_optimizer():
    from bench.loop import _make_optimizer, build_method

    for optimizer_name in ("sgd", "adam", "adamw"):
        base = build_method(tiny_spec("late_fusion", overrides={"optimizer": optimizer_name, "weight_decay": 0.01}))
        model = base.build(_tiny_description("late_fusion"))
        chosen = [n for n, _ in model.named_parameters()][:2]

        class Marking(type(base)):
            def no_weight_decay(self, model, names=tuple(chosen)):
                return names

        method = Marking(**dataclasses.asdict(base))
        optimizer = _make_optimizer(method, model)
        params = dict(model.named_parameters())
        decayed, free = optimizer.param_groups
        assert decayed["weight_decay"] == 0.01 and free["weight_decay"] == 0.0
        assert {id(p) for p in free["params"]} == {id(params[n]) for n in chosen}
        assert len(decayed["params"]) + len(free["params"]) == len(params)


def test_no_weight_decay_naming_an_unknown_parameter_fails_the_cell():
    from bench.loop import _make_optimizer, build_method

    base = build_method(tiny_spec("late_fusion"))

    class Wrong(type(base)):
        def no_weight_decay(self, model):
            return ["no.such.parameter"]

    method = Wrong(**dataclasses.asdict(base))
    with pytest.raises(CellFailure, match="no.such.parameter"):
        _make_optimizer(method, method.build(_tiny_description("late_fusion")))
