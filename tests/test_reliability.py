"""Crash safety and concurrency, with real processes: SIGKILL part-way, two runners on one directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.store import read_record

GRID = ["--methods", "late_fusion,late_fusion_sum", "--datasets", "synthetic_2m", "--seeds", "0,1,2",
        "--missing-rates", "0,0.5", "--epochs", "2"]
CELLS = 12


def _start(results: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", "run", *GRID, "--results", str(results)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _records(results: Path) -> list[Path]:
    return sorted((results / "records").rglob("*.json")) if (results / "records").exists() else []


def test_sigkill_part_way_then_resume_gives_the_uninterrupted_tables(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _start(killed)
    deadline = time.time() + 120
    while len(_records(killed)) < 3 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(_records(killed))
    assert 3 <= done_before < CELLS, "the run must be killed part-way"

    resumed = subprocess.run([sys.executable, "-m", "bench", "run", *GRID, "--results", str(killed)],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{CELLS - done_before} cells trained, {done_before} reused" in resumed.stdout
    uninterrupted = subprocess.run([sys.executable, "-m", "bench", "run", *GRID, "--results", str(clean)],
                                   capture_output=True, text=True)
    assert uninterrupted.returncode == 0
    assert len(_records(killed)) == CELLS
    assert (killed / "leaderboard.md").read_text() == (clean / "leaderboard.md").read_text()
    assert not list(killed.rglob("*.lock"))


def test_two_runners_on_one_directory_compute_each_cell_once(tmp_path):
    first, second = _start(tmp_path), _start(tmp_path)
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    trained = 0
    for out, _ in outputs:
        line = next(line for line in out.splitlines() if "cells trained" in line or "nothing to train" in line)
        trained += int(line.split()[0]) if "cells trained" in line else 0
    assert trained == CELLS
    records = _records(tmp_path)
    assert len(records) == CELLS
    assert all(isinstance(read_record(path), dict) for path in records)
    assert not list(tmp_path.rglob("*.lock")) and not list(tmp_path.rglob("*.tmp"))
