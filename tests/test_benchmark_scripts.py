"""Smoke tests of the scripts under benchmarks/ (imported by path: benchmarks/ is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ogm_bench():
    pytest.importorskip("av")
    pytest.importorskip("timm")
    return _load("ogm_ge_official")


def test_ogm_ge_dry_run_trains_one_step_of_bench_on_generated_cremad(ogm_bench, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "unused"))  # dry_run points BENCH_CACHE at its own folder
    result = ogm_bench.dry_run(tmp_path)
    assert (result["code"], result["clips"], result["steps"]) == ("bench", 2, 1)
    assert result["epoch_seconds"] > 0 and result["prepare_seconds"] > 0


def test_official_training_list_is_what_bench_trains_on(ogm_bench):
    total = ogm_bench.clips_for(128)
    kept = ogm_bench.rows_bench_trains([i % 6 for i in range(total)])
    assert len(kept) == 128 and total > 128  # bench carved a validation split from the rest


def test_official_frames_follow_video_preprocessing(ogm_bench, tmp_path):
    """video2frame_update keeps frame n when n % int(fps) == 0, full size, named {n:05d}.jpg."""
    from PIL import Image

    mf = ogm_bench.media_fixtures()
    mf.FRAME_SIZE = ogm_bench.VIDEO_SIZE
    flv = tmp_path / "clip.flv"
    mf.write_video(flv, label=2, seconds=2.5, fps=30, container="flv", video_codec="flv")
    names = ogm_bench.extract_official_frames(flv, tmp_path / "frames")
    assert names == ["00000.jpg", "00030.jpg", "00060.jpg"]
    with Image.open(tmp_path / "frames" / "00030.jpg") as image:
        assert image.size == ogm_bench.VIDEO_SIZE
        red, green, _ = image.convert("RGB").getpixel((10, 10))
    assert abs(red - mf.frame_colour(2, 30)[0]) <= 6 and abs(green - mf.frame_colour(2, 30)[1]) <= 6


def test_official_main_edits_are_exact(ogm_bench):
    text = "    device = torch.device('cuda:0')\n    model.to(device)\n    model.cuda()\n    x(num_workers=32)\n"
    patched = ogm_bench.patched_main(text, workers=None)
    assert "cuda" not in patched and "torch.device('cpu')" in patched and "num_workers=32" in patched
    assert "num_workers=2" in ogm_bench.patched_main(text, workers=2)
    with pytest.raises(SystemExit, match="343dc1d"):
        ogm_bench.patched_main("device = torch.device('cuda:1')\n", workers=None)


def test_gpu_check_parses_and_without_a_gpu_says_so_in_one_line():
    import subprocess

    import torch

    script = REPO / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: run benchmarks/gpu_check.sh itself")
    done = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); run it on a machine with one"
    ]


def test_loop_overhead_runs_on_the_cpu_device(tmp_path):
    import subprocess

    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "loop_overhead.py"), "--epochs", "2", "--device", "cpu"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "ratio" in done.stdout and "cpu" in done.stdout.splitlines()[-1]
