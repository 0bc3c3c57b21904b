"""Our top-level datasets/ folder must never shadow Hugging Face's `datasets`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

PROBE = (
    "import datasets, bench.datasets; print(datasets.__file__); print(bench.datasets.__file__); "
    "print(hasattr(datasets, 'load_dataset'))"
)


@pytest.mark.parametrize("cwd", ["repo_root", "elsewhere"])
def test_hugging_face_datasets_is_not_shadowed(cwd, tmp_path):
    where = REPO if cwd == "repo_root" else tmp_path
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=where, capture_output=True, text=True, check=True)
    hf_file, ours, has_loader = out.stdout.split()
    assert "site-packages" in hf_file and not hf_file.startswith(str(REPO / "datasets")), hf_file
    assert has_loader == "True"
    assert ours != hf_file and ours.endswith("datasets/__init__.py"), ours


def test_plugin_packages_hold_the_top_level_folders():
    import bench.datasets.synthetic
    import bench.methods.late_fusion

    assert bench.methods.late_fusion.__file__.endswith("methods/late_fusion.py")
    assert bench.datasets.synthetic.__file__.endswith("datasets/synthetic.py")


def test_importing_bench_does_not_import_torch():
    code = "import sys, bench, bench.tables.leaderboard, bench.store, bench.spec; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
