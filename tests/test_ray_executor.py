"""``bench run --executor ray``: the records of a local run, on a local instance and on a 2-node cluster, resume,
no Ray processes left behind.

Needs Ray (``pip install 'bench-mml[ray]'``); without it the subprocess test skips. Starting a local Ray
instance costs several seconds (about 7 s on a busy 2-core machine), plus torch imports in its workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import grid_args, record_paths

GRID = list(grid_args(seeds="0,1", missing_rates="0,0.5"))
CELLS = 4
RAY_PROCESS_MARKERS = ("raylet", "gcs_server", "ray::", "ray/_private", "ray/dashboard", "ray/autoscaler")


def _metrics(results: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text())["metrics"] for p in record_paths(results)}


def _ray_processes() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(marker in cmdline for marker in RAY_PROCESS_MARKERS):
            pids.add(int(entry.name))
    return pids


def _run(results: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(
        [sys.executable, "-m", "bench", "run", *GRID, "--results", str(results), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="the leak check reads /proc (Linux)")
def test_ray_executor_gives_the_records_of_a_local_run_and_resumes(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'bench-mml[ray]'")
    before = _ray_processes()
    local = _run(tmp_path / "local")
    assert local.returncode == 0, local.stderr
    # A relative --results: Ray workers run in another cwd, so the executor must send an absolute path.
    on_ray = subprocess.run(
        [sys.executable, "-m", "bench", "run", *GRID, "--results", "ray", "--executor", "ray"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        timeout=300,
    )
    assert on_ray.returncode == 0, on_ray.stderr
    assert f"{CELLS} cells trained, 0 reused" in on_ray.stdout
    assert len(_metrics(tmp_path / "local")) == CELLS
    assert _metrics(tmp_path / "ray") == _metrics(tmp_path / "local")
    assert not list((tmp_path / "ray").rglob("*.lock"))

    resumed = _run(tmp_path / "ray", "--executor", "ray")
    assert resumed.returncode == 0, resumed.stderr
    assert f"nothing to train: all {CELLS} cells already have records" in resumed.stdout

    deadline = time.time() + 15  # ray.shutdown() stops the instance bench started; let its processes exit
    while (leaked := _ray_processes() - before) and time.time() < deadline:
        time.sleep(0.2)
    assert not leaked, f"Ray processes left running: {sorted(leaked)}"


def test_executor_ray_without_ray_installed_is_a_usage_error(monkeypatch, run_cli, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    code, out, err = run_cli("run", *GRID, "--results", str(tmp_path), "--executor", "ray")
    assert code == 2
    assert err.strip().splitlines() == ["error: --executor ray needs Ray: pip install 'bench-mml[ray]'"]
    assert not (tmp_path / "records").exists()


def start_cluster(nodes: int):
    """A Ray cluster of ``nodes`` nodes on this machine, one CPU each (``ray.cluster_utils.Cluster``)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    return cluster


def test_a_two_node_cluster_gives_the_records_of_the_local_executor(tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'bench-mml[ray]'")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    local = _run(tmp_path / "local")
    assert local.returncode == 0, local.stderr
    cluster = start_cluster(2)
    try:
        import ray

        ray.init(address=cluster.address)
        try:
            alive = [node for node in ray.nodes() if node["Alive"]]
            assert len(alive) == 2 and sum(node["Resources"].get("CPU", 0) for node in alive) == 2
        finally:
            ray.shutdown()
        on_cluster = _run(tmp_path / "cluster", "--executor", "ray", "--ray-address", cluster.address)
        assert on_cluster.returncode == 0, on_cluster.stderr
        assert f"{CELLS} cells trained, 0 reused" in on_cluster.stdout
    finally:
        cluster.shutdown()
    assert _metrics(tmp_path / "cluster") == _metrics(tmp_path / "local")
    assert not list((tmp_path / "cluster").rglob("*.lock"))


def test_a_pinned_run_on_ray_records_the_pin(tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'bench-mml[ray]'")
    if sys.platform != "linux" or os.uname().machine not in ("x86_64", "amd64"):
        pytest.skip("the AVX2 pin is for x86")
    on_ray = _run(tmp_path, "--executor", "ray", "--cpu-kernels", "avx2")
    assert on_ray.returncode == 0, on_ray.stderr
    environments = [json.loads(p.read_text())["environment"] for p in (tmp_path / "records").rglob("*.json")]
    assert len(environments) == CELLS
    assert all(e["cpu_kernels"] == "AVX2" and e["cpu_kernel_env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2" for e in environments)
