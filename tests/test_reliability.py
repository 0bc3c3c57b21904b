"""Crash safety and concurrency, with real processes: SIGKILL part-way, two runners on one directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import grid_args, record_paths

from bench.store import read_record

GRID = list(grid_args("late_fusion,late_fusion_sum", seeds="0,1,2", missing_rates="0,0.5", epochs="2"))
CELLS = 12


def _default_sigint() -> None:
    # An ignored SIGINT survives exec; some library loaded by an earlier test in the same pytest process can leave
    # it ignored, and then the child would never see Ctrl-C. A user's shell starts bench with the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(results: Path, grid: list[str] = GRID) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "run", *grid, "--results", str(results)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _records(results: Path) -> list[Path]:
    return record_paths(results) if (results / "records").exists() else []


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

    resumed = subprocess.run(
        [sys.executable, "-m", "bench", "run", *GRID, "--results", str(killed)], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"{CELLS - done_before} cells trained, {done_before} reused" in resumed.stdout
    uninterrupted = subprocess.run(
        [sys.executable, "-m", "bench", "run", *GRID, "--results", str(clean)], capture_output=True, text=True
    )
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


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    # Longer cells than GRID's, so the grid is still running when the signal lands even on a loaded machine.
    proc = _start(tmp_path, [*GRID[:-1], "40"])
    deadline = time.time() + 120
    while len(_records(tmp_path)) < 1 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "run the same command again to resume" in err and "Traceback" not in err
    assert all(isinstance(read_record(p), dict) for p in _records(tmp_path))


def test_a_raising_plugin_becomes_a_failed_record_and_the_grid_goes_on(tmp_path):
    import dataclasses

    from bench.grid import run_grid
    from bench.methods.late_fusion import LateFusion
    from bench.registry import METHODS
    from bench.testing import tiny_spec

    @dataclasses.dataclass(frozen=True)
    class Exploding(LateFusion):
        def loss(self, model, batch, ctx):
            raise RuntimeError("boom in the plugin")

    METHODS.register("_exploding", Exploding)
    try:
        specs = [tiny_spec("_exploding"), tiny_spec("late_fusion")]
        outcome = run_grid(specs, tmp_path, data_root=None)
    finally:
        METHODS.unregister("_exploding")
    assert outcome.computed == 2 and len(outcome.failed) == 1
    assert "RuntimeError" in outcome.failed[0] and "boom in the plugin" in outcome.failed[0]


def test_parallel_jobs_give_the_records_of_a_sequential_run(tmp_path):
    import json

    def metrics(results):
        return {p.name: json.loads(p.read_text())["metrics"] for p in _records(results)}

    for jobs in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-m", "bench", "run", *GRID, "--jobs", jobs, "--results", str(tmp_path / jobs)],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
    assert len(metrics(tmp_path / "1")) == CELLS
    assert metrics(tmp_path / "1") == metrics(tmp_path / "2")


# --- Bad input: one line on stderr, exit 2, before any cell runs ------------------------------------------


def _bad_input_cases(tmp_path: Path) -> list[tuple[list[str], str]]:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory\n")
    missing = tmp_path / "no_such_folder"
    fast = list(grid_args())
    out = ["--results", str(tmp_path / "out")]
    import torch

    cases = [
        (["run", *fast, "--results", str(a_file)], "is a file, not a directory"),
        (["table", "--results", str(a_file)], "is a file, not a directory"),
        (["run", *fast, "--set", "late_fusion.lr=inf", *out], "late_fusion.lr=inf: not a finite number"),
        (["run", *fast, "--set", "late_fusion.lr=nan", *out], "late_fusion.lr=nan: not a finite number"),
        (
            ["run", *fast, "--set", "data.coverage=nan", "--datasets", "imbalance_2m", *out],
            "data.coverage=nan: not a finite number",
        ),
        (["run", *fast, "--seeds", str(2**64), *out], "outside [0, 2**64 - 1]"),
        (["run", *fast, "--seeds", "-1", *out], "outside [0, 2**64 - 1]"),
        (["run", *fast, "--device", "floob", *out], "--device 'floob' is not a torch device"),
        (["run", *fast, "--noise-levels", "0,5", *out], "--noise-levels needs a noise kind"),
        (["run", *fast, "--seeds", "1,,2", *out], "--seeds '1,,2' has an empty item"),
        (["run", *fast, "--missing-rates", "0,", *out], "has an empty item"),
        (["table", "--results", str(missing)], "no such directory"),
    ]
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 8:
        cases.append((["run", *fast, "--device", "cuda:7", *out], "--device cuda:7: this machine has"))
    return cases


def test_bad_input_is_one_line_exit_2_and_nothing_runs(run_cli, tmp_path, monkeypatch):
    import bench.loop

    monkeypatch.setattr(bench.loop, "run_cell", lambda *a, **k: pytest.fail("a cell ran on bad input"))
    for argv, fragment in _bad_input_cases(tmp_path):
        code, out, err = run_cli(*argv)
        assert code == 2, (argv, out, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, (argv, err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "no_such_folder").exists()


def test_noise_without_levels_scores_the_default_levels():
    from bench.cli import _request, build_parser

    args = build_parser().parse_args(["run", "--noise", "gaussian"])
    assert _request(args).noise_levels == (0.0, 5.0, 10.0)
    assert _request(build_parser().parse_args(["run"])).noise_levels == ()


# --- Ctrl-C with worker processes ---------------------------------------------------------------------------

#: Cells long enough (a few seconds each) that none is about to finish when the signal lands.
SLOW = [*GRID[:-1], "150", "--jobs", "2"]


def _interrupt(results: Path, times: int) -> tuple[subprocess.Popen, str, int, float]:
    """Start a --jobs 2 run in its own process group, wait until both workers hold a cell (their claims), then
    press Ctrl-C ``times`` times as a terminal does (SIGINT to the whole group).
    -> (process, stderr, records then, seconds to exit)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", *SLOW, "--results", str(results)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while len(list(results.rglob("*.lock"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # inside training, past the cells' set-up
    assert proc.poll() is None, proc.communicate()
    done = len(_records(results))
    pressed = time.time()
    for i in range(times):
        if i:
            time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc, err, done, time.time() - pressed


def test_ctrl_c_with_jobs_ends_running_cells_promptly(tmp_path):
    proc, err, done, seconds = _interrupt(tmp_path, times=1)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    assert seconds < 20
    # The two running cells were ended, not finished (the old shutdown let them and the queued ones train).
    assert len(_records(tmp_path)) <= done + 1
    assert all(isinstance(read_record(p), dict) for p in _records(tmp_path))
    assert not list(tmp_path.rglob("*.lock"))  # the ended workers gave their cells back
    time.sleep(2)
    assert len(_records(tmp_path)) <= done + 1  # and no worker is still training in the background


def test_a_second_ctrl_c_never_hangs_or_prints_a_traceback(tmp_path):
    proc, err, done, seconds = _interrupt(tmp_path, times=2)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and seconds < 20
    assert all(isinstance(read_record(p), dict) for p in _records(tmp_path))


# --- WAV reading -------------------------------------------------------------------------------------------


def _extensible_wav_24bit(path: Path, frames: list[tuple[int, int]], rate: int = 16000) -> None:
    """A 24-bit stereo WAV with the extensible header (format tag 65534, PCM sub-format), as ffmpeg and sox
    write 24-bit audio."""
    import struct

    pcm_guid = bytes.fromhex("0100000000001000800000aa00389b71")
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 2, rate, rate * 6, 6, 24, 22, 24, 0b11) + pcm_guid
    data = b"".join(v.to_bytes(3, "little", signed=True) for frame in frames for v in frame)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_read_wav_reads_a_24_bit_extensible_wav(tmp_path):
    from bench.media import read_wav

    path = tmp_path / "sox.wav"
    frames = [(0, -1), (2**23 - 1, -(2**23)), (2**22, -(2**21)), (1, 123456)]
    _extensible_wav_24bit(path, frames)
    samples, rate = read_wav(path, fix="re-export it")
    assert rate == 16000 and samples.shape == (2, 4) and samples.dtype == np.float32
    expected = np.array(frames, dtype=np.float64).T / 2**23  # 24-bit PCM scaled by 1/2**23, as soundfile does
    np.testing.assert_array_equal(samples, expected.astype(np.float32))


def test_read_wav_still_reads_16_bit_pcm_and_rejects_a_truncated_one(tmp_path):
    import wave

    from bench.errors import UsageError
    from bench.media import read_wav

    path = tmp_path / "plain.wav"
    values = np.array([0, 1, -1, 32767, -32768, 1000], dtype="<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes(values.tobytes())
    samples, rate = read_wav(path, fix="x")
    assert rate == 8000
    np.testing.assert_array_equal(samples[0], values.astype(np.float32) / 32768)
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(UsageError, match=r"is truncated \(4 of 6 samples\)"):
        read_wav(path, fix="x")
