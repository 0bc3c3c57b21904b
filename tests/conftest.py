"""Shared fixtures. Tests that need ../shared/data use `data_root` and skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# One thread: the test models are tiny, and threads competing for 2 cores slow them many-fold.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    raw = os.environ.get("BENCH_DATA")
    candidate = Path(raw).resolve() if raw else REPO.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


@pytest.fixture
def data_root() -> Path:
    root = _shared_data()
    if root is None:
        pytest.skip("real data not found: set BENCH_DATA to the shared data folder (../shared/data)")
    return root


@pytest.fixture
def run_cli(capsys):
    """Run `python -m bench ...` in-process; returns (exit code, stdout, stderr)."""
    from bench.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
