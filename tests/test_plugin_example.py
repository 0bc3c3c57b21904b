"""The plugin guide's worked example, installed for real by pip and run through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

EXAMPLE = REPO / "examples" / "bench-plugin-example"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    env = {k: v for k, v in os.environ.items() if k != "BENCH_DATA"}  # the plugin needs no real data
    return {**env, "PYTHONPATH": str(target)}


def _bench(env, *args, cwd):
    return subprocess.run([sys.executable, "-m", "bench", *args], env=env, cwd=cwd, capture_output=True, text=True)


def test_installed_plugin_is_listed_run_and_conformant(plugin_env, tmp_path):
    listed = _bench(plugin_env, "ls", "methods", cwd=tmp_path)
    assert "mean_logits" in listed.stdout and "bench-plugin-example 0.1.0" in listed.stdout
    ran = _bench(
        plugin_env,
        "run",
        "--methods",
        "mean_logits,late_fusion",
        "--datasets",
        "xor_pairs",
        "--seeds",
        "0",
        "--missing-rates",
        "0",
        "--results",
        str(tmp_path / "r"),
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert "**xor_pairs**" in ran.stdout  # the who-wins summary; the tables are in the file
    assert "| mean_logits |" in (tmp_path / "r" / "leaderboard.md").read_text()
    check = subprocess.run(
        [sys.executable, "-c", "from bench.testing import check_method; check_method('mean_logits')"],
        env=plugin_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def test_the_old_module_paths_still_import_the_same_objects():
    """Plugins written before bench.nn (this example imported bench.models) keep working: the old paths are
    aliases of the new modules, so a kind registered or a head looked up through either is the same."""
    import bench.backbones
    import bench.fusion
    import bench.models
    import bench.nn.backbones
    import bench.nn.classifiers
    import bench.nn.encoders
    import bench.nn.fusion

    assert bench.fusion is bench.nn.fusion and bench.backbones is bench.nn.backbones
    new_homes = (bench.nn.encoders, bench.nn.fusion, bench.nn.classifiers)
    for name in bench.models.__all__:
        assert any(getattr(home, name, None) is getattr(bench.models, name) for home in new_homes), name
    assert bench.models.ENCODER_FACTORIES is bench.nn.ENCODER_FACTORIES
