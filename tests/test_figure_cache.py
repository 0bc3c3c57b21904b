"""The figure cache of ``bench table`` (bench.tables.plots._figure): a cached figure is byte-identical to the
one drawn afresh, other plotted values or other drawing code make another key, and a damaged cache file is
redrawn, so the cache can never make a figure stale."""

from __future__ import annotations

import bench.tables.plots as plots
from tests.test_dynamics_plots import _run


def _records(audio=(0.2, 0.4, 0.6)):
    return [_run("mla", 0, list(audio)), _run("mla", 1, list(audio)), _run("late_fusion", 0, [0.5, 0.5, 0.5])]


def _draws(monkeypatch) -> list:
    """Count the dynamics figures actually drawn (not taken from the cache)."""
    drawn = []
    real = plots._draw_dynamics

    def counting(*args, **kwargs):
        drawn.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(plots, "_draw_dynamics", counting)
    return drawn


def test_a_cached_figure_is_the_figure_drawn_afresh(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    drawn = _draws(monkeypatch)
    (first,) = plots.dynamics_plots(_records(), tmp_path / "a")
    (second,) = plots.dynamics_plots(_records(), tmp_path / "b")
    assert len(drawn) == 1  # the second run read the cache
    assert second.read_bytes() == first.read_bytes()
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "empty"))
    (fresh,) = plots.dynamics_plots(_records(), tmp_path / "c")
    assert len(drawn) == 2 and fresh.read_bytes() == first.read_bytes()


def test_other_values_or_other_code_draw_again(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    drawn = _draws(monkeypatch)
    (before,) = plots.dynamics_plots(_records(), tmp_path / "a")
    (after,) = plots.dynamics_plots(_records(audio=(0.2, 0.4, 0.7)), tmp_path / "b")
    assert len(drawn) == 2 and after.read_bytes() != before.read_bytes()
    code, *rest = plots._drawing_environment()
    monkeypatch.setattr(plots, "_drawing_environment", lambda: ("edited code", *rest))
    plots.dynamics_plots(_records(), tmp_path / "c")
    assert len(drawn) == 3


def test_a_damaged_cache_file_is_redrawn(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    drawn = _draws(monkeypatch)
    (first,) = plots.dynamics_plots(_records(), tmp_path / "a")
    (cached,) = (tmp_path / "cache" / "figures").iterdir()
    cached.write_bytes(cached.read_bytes()[:100])  # truncated
    (again,) = plots.dynamics_plots(_records(), tmp_path / "b")
    assert len(drawn) == 2 and again.read_bytes() == first.read_bytes()


def test_figures_unused_for_30_days_are_pruned_and_used_ones_kept(tmp_path, monkeypatch):
    import os
    import time

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    plots.dynamics_plots(_records(), tmp_path / "a")
    (used,) = (tmp_path / "cache" / "figures").iterdir()
    month_ago = time.time() - 31 * 86400
    os.utime(used, (month_ago, month_ago))
    plots.dynamics_plots(_records(), tmp_path / "b")  # a cache hit marks the figure as used
    assert used.stat().st_mtime > month_ago + 86400
    forgotten = used.with_name("0" * 64 + ".png")
    forgotten.write_bytes(used.read_bytes())
    os.utime(forgotten, (month_ago, month_ago))
    plots.dynamics_plots(_records(audio=(0.3, 0.5, 0.7)), tmp_path / "c")  # a new figure is drawn and kept
    assert not forgotten.exists() and used.exists()
