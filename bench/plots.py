"""Accuracy-against-missing-rate plots (PNG), one per dataset setting, from records. Needs matplotlib."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from io import BytesIO
from pathlib import Path
from typing import Any

__all__ = ["missing_rate_plots", "plot_names"]


def _curves(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[float, list[float]]]]:
    curves: dict[str, dict[str, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in records:
        if r.get("status") == "ok":
            spec = r["spec"]
            curves[spec["dataset"]][spec["method"]][spec["missing_rate"]].append(r["metrics"]["accuracy"])
    return {d: m for d, m in curves.items() if max(len(points) for points in m.values()) >= 2}


def plot_names(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The file names :func:`missing_rate_plots` writes, without drawing (needs no matplotlib)."""
    return [f"{dataset}_missing_rate.png" for dataset in sorted(_curves(records))]


def missing_rate_plots(records: Iterable[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per dataset with at least two missing rates; returns the written paths (sorted).
    Returns [] when matplotlib is not installed (``pip install bench-mml[plots]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    from bench.store import atomic_write_bytes

    curves = _curves(records)
    written = []
    for dataset in sorted(curves):
        methods = curves[dataset]
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for method in sorted(methods):
            rates = sorted(methods[method])
            ax.plot(rates, [100 * statistics.fmean(methods[method][r]) for r in rates], marker="o", label=method)
        ax.set(xlabel="missing rate", ylabel="multimodal accuracy (%)", title=dataset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = Path(out_dir) / f"{dataset}_missing_rate.png"
        buffer = BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
        plt.close(fig)
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written
