"""Micro-benchmarks of bench's hot paths, with pytest-benchmark (not part of the test suite: ``testpaths`` is
``tests``). Each benchmark also checks its result, so a fast wrong answer fails.

    python -m pytest benchmarks/test_micro.py --benchmark-only                      # timings
    python -m pytest benchmarks/test_micro.py --benchmark-only --benchmark-autosave # save a baseline
    python -m pytest benchmarks/test_micro.py --benchmark-only --benchmark-compare  # ratios to the last one

``--benchmark-compare`` prints each timing against the saved baseline (the ratios the speed goals of
BENCHMARKS.md are stated in); the committed figures are in BENCHMARKS.md with their machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.masks import missing_mask
from bench.store import iter_records
from bench.testing import tiny_spec

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.fixture(scope="module")
def committed_records() -> list:
    records = [r for r in iter_records(RESULTS) if isinstance(r, dict)]
    if not records:
        pytest.skip("no committed records under results/")
    return records


def test_one_tiny_cell(benchmark):
    """A whole cell (2 epochs of late fusion on the tiny registered dataset), through the harness's loop."""
    from bench.loop import run_cell

    spec = tiny_spec("late_fusion")
    result = benchmark.pedantic(run_cell, args=(spec,), rounds=3, warmup_rounds=1)
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0


def test_missing_masks_of_a_large_split(benchmark):
    """The masks of 100,000 samples over three modalities at rate 0.5 (drawn per cell and split)."""
    mask = benchmark(missing_mask, 100_000, 3, 0.5, seed=0, split="train")
    assert mask.shape == (100_000, 3) and mask.any(axis=1).all()


def test_leaderboard_of_the_committed_records(benchmark, committed_records):
    """The full markdown leaderboard over every committed record (``bench table`` without figures)."""
    from bench.tables.leaderboard import leaderboard

    text = benchmark.pedantic(leaderboard, args=(committed_records,), rounds=3, warmup_rounds=1)
    assert text == (RESULTS / "leaderboard.md").read_text()
