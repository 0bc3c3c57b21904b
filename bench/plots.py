"""Accuracy-against-missing-rate plots (PNG), one per dataset setting, from records. Needs matplotlib.

Settings are the leaderboard's (dataset, protocol, epochs, tuning, ...), so a plot never averages records
of different protocols, e.g. default and tuned hyperparameters.
"""

from __future__ import annotations

import hashlib
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from io import BytesIO
from pathlib import Path
from typing import Any

from bench.records_common import noise_kind, setting_key, setting_title

__all__ = ["missing_rate_plots", "plot_names"]


def _curves(records: Iterable[Mapping[str, Any]]) -> dict[tuple, dict[str, dict[float, list[float]]]]:
    curves: dict[tuple, dict[str, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in records:
        if r.get("status") == "ok" and noise_kind(r) == "none":
            spec = r["spec"]
            curves[setting_key(spec)][spec["method"]][spec["missing_rate"]].append(r["metrics"]["accuracy"])
    return {k: m for k, m in curves.items() if max(len(points) for points in m.values()) >= 2}


def _file_name(setting: tuple) -> str:
    digest = hashlib.sha256(repr(setting).encode()).hexdigest()[:6]
    return f"{setting[0]}_missing_rate_{digest}.png"


def plot_names(records: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(file name, caption) of every plot :func:`missing_rate_plots` writes, without drawing."""
    curves = _curves(records)
    return [(_file_name(s), setting_title(s)) for s in sorted(curves, key=lambda s: tuple(str(v) for v in s))]


def missing_rate_plots(records: Iterable[Mapping[str, Any]], out_dir: Path) -> list[Path] | None:
    """One PNG per setting with at least two missing rates; returns the written paths, or None when
    matplotlib cannot be imported."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from bench.store import atomic_write_bytes

    written = []
    for setting, methods in sorted(_curves(records).items(), key=lambda kv: tuple(str(v) for v in kv[0])):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for method in sorted(methods):
            rates = sorted(methods[method])
            ax.plot(rates, [100 * statistics.fmean(methods[method][r]) for r in rates], marker="o", label=method)
        ax.set(xlabel="missing rate", ylabel="multimodal accuracy (%)", title=setting_title(setting))
        ax.title.set_fontsize(8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        buffer = BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
        plt.close(fig)
        path = Path(out_dir) / _file_name(setting)
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written
