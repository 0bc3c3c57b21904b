"""Multi-view .mat adapters, end to end on files written in the real layouts, and on ../shared/data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.io

from bench.errors import UsageError
from bench.loop import run_cell
from bench.testing import tiny_spec


def _write_cub_like(root, n=60):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(1, 11), n // 10)
    views = np.empty((1, 2), dtype=object)
    views[0, 0] = rng.standard_normal((1024, 10))[:, y - 1] + 0.1 * rng.standard_normal((1024, n))
    views[0, 1] = rng.standard_normal((300, 10))[:, y - 1] + 0.1 * rng.standard_normal((300, n))
    (root / "multiview" / "cub").mkdir(parents=True)
    scipy.io.savemat(root / "multiview" / "cub" / "CUB.mat", {"X": views, "gt": y.reshape(-1, 1).astype(np.uint8)})


def _write_handwritten_like(root):
    rng = np.random.default_rng(1)
    mat = {}
    for split, n in (("train", 80), ("test", 20)):
        y = np.tile(np.arange(1, 11), n // 10)
        mat[f"gt_{split}"] = y.reshape(-1, 1).astype(np.uint8)
        for i, d in enumerate((240, 76, 216, 47, 64, 6), start=1):
            mat[f"x{i}_{split}"] = rng.standard_normal((10, d))[y - 1] + 0.1 * rng.standard_normal((n, d))
    (root / "multiview" / "handwritten").mkdir(parents=True)
    scipy.io.savemat(root / "multiview" / "handwritten" / "handwritten_6views.mat", mat)


@pytest.mark.parametrize(
    "name, writer, train_size", [("cub", _write_cub_like, 50), ("handwritten", _write_handwritten_like, 80)]
)
def test_adapter_reads_the_real_layout_and_trains(tmp_path, name, writer, train_size):
    writer(tmp_path)
    spec = dataclasses.replace(tiny_spec("late_fusion"), dataset=name, epochs=1)
    result = run_cell(spec, data_root=tmp_path)
    sizes = result["notes"]["split_sizes"]
    assert sizes["train"] + sizes["val"] == train_size
    assert result["notes"]["validation"].startswith("carved from train")
    assert result["metrics"]["num_test_samples"] == sizes["test"]


def test_corrupt_mat_file_is_one_clear_line(tmp_path):
    from bench.registry import DATASETS

    path = tmp_path / "multiview" / "cub" / "CUB.mat"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 40)
    with pytest.raises(UsageError) as err:
        DATASETS.get("cub").load(tmp_path)
    assert str(path) in str(err.value) and "download it again" in str(err.value) and "\n" not in str(err.value)


def test_wrong_file_names_the_missing_variable(tmp_path):
    from bench.registry import DATASETS

    path = tmp_path / "multiview" / "cub" / "CUB.mat"
    path.parent.mkdir(parents=True)
    scipy.io.savemat(path, {"something": np.zeros(3)})
    with pytest.raises(UsageError, match="has no variable 'X'"):
        DATASETS.get("cub").load(tmp_path)


def test_missing_file_says_where_to_get_it(tmp_path):
    from bench.registry import DATASETS

    ok, why = DATASETS.get("scene15").available(tmp_path)
    assert not ok and "Scene-15.mat not found" in why and "github.com" in why


def test_handwritten_on_shared_data_is_far_above_chance(data_root):
    spec = dataclasses.replace(tiny_spec("late_fusion"), dataset="handwritten", epochs=5, batch_size=64)
    metrics = run_cell(spec, data_root=data_root)["metrics"]
    assert metrics["num_test_samples"] == 400
    assert metrics["accuracy"] > 0.5  # chance is 0.1; measured 0.97
