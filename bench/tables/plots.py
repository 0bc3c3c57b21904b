"""Accuracy-against-missing-rate plots and training-dynamics plots (PNG), one per dataset setting, from
records. Needs matplotlib.

Settings are the leaderboard's (dataset, protocol, epochs, tuning, ...), so a plot never averages records
of different protocols, e.g. default and tuned hyperparameters.

The dynamics plots draw each modality's validation accuracy against the epoch, from the records' ``history``
(the figure the OGM-GE and MLA papers use to show modality laziness): every method whose records split the
model per modality, at missing rate 0 without test noise, one line per (method, modality), mean over seeds.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from bench.record import Record, records_of
from bench.tables.common import by_setting, ceiling_sweeps, row_labels, setting_title, text_order

__all__ = [
    "Dynamics",
    "dynamics_curves",
    "dynamics_plot_names",
    "dynamics_plots",
    "missing_rate_plots",
    "plot_names",
    "sweep_plot_names",
    "sweep_plots",
    "cd_diagram_names",
    "cd_diagrams",
    "cd_rankings",
]

#: Above this many methods a dynamics figure gets one panel per method instead of one crowded axis.
MAX_METHODS_ON_ONE_AXIS = 6


def _file_name(key: tuple, what: str) -> str:
    """``<dataset>_<what>_<digest>.png``: one file per setting (or sweep) ``key``, whose first field is the
    dataset."""
    return f"{key[0]}_{what}_{hashlib.sha256(repr(key).encode()).hexdigest()[:6]}.png"


@functools.lru_cache(maxsize=1)
def _drawing_environment() -> tuple:
    """Everything a figure's pixels depend on besides its plotted values: the code that draws and titles it
    (this module, and the titles and labels of bench.tables.common and bench.record), matplotlib's and Pillow's
    versions and matplotlib's settings (a user's matplotlibrc included)."""
    import matplotlib

    try:
        import PIL

        pillow = PIL.__version__
    except ImportError:
        pillow = None
    here = Path(__file__).resolve()
    sources = (here, here.with_name("common.py"), here.parents[1] / "record.py")
    code = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()
    return code, matplotlib.__version__, pillow, repr(sorted(matplotlib.rcParams.items()))


def _is_whole_png(data: bytes) -> bool:
    return data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")


def _figure(inputs: tuple, draw: Callable[[], bytes]) -> bytes:
    """A figure's PNG bytes, drawn by ``draw`` or, when the very same figure was drawn before, from the figure
    cache (``$BENCH_CACHE/figures``): drawing and encoding dominate ``bench table`` at scale, and most figures
    do not change between two runs. ``inputs`` holds everything ``draw`` reads (kind, setting, plotted
    values); the cache key adds :func:`_drawing_environment`, so a cached figure is never stale: other values,
    code or library versions make another key. Figures are a pure function of the records either way."""
    from bench.media.cache import cache_root
    from bench.store import atomic_write_bytes

    key = hashlib.sha256(repr((inputs, _drawing_environment())).encode()).hexdigest()
    path = cache_root() / "figures" / f"{key}.png"
    try:
        cached = path.read_bytes()
    except OSError:
        cached = b""
    if _is_whole_png(cached):
        with contextlib.suppress(OSError):
            os.utime(path)  # in use: kept by the pruning below
        return cached
    data = draw()
    with contextlib.suppress(OSError):  # a read-only or full cache only costs the next run a redraw
        atomic_write_bytes(path, data)
        _prune_figures(path.parent)
    return data


def _prune_figures(directory: Path) -> None:
    """Delete cached figures no ``bench table`` has used for 30 days (the records index's rule,
    bench.record_index.STALE_SECONDS), so that a cache kept for years does not grow without bound."""
    from bench.record_index import STALE_SECONDS

    stale = time.time() - STALE_SECONDS
    for old in directory.glob("*.png"):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < stale:
                old.unlink()


def _save(out_dir: Path, name: str, data: bytes) -> Path:
    from bench.store import atomic_write_bytes

    path = Path(out_dir) / name
    atomic_write_bytes(path, data)
    return path


# --------------------------------------------------------------------------------------------------
# Accuracy against the missing rate


def _curves(records: Iterable[Mapping[str, Any]]) -> dict[tuple, dict[str, dict[float, list[float]]]]:
    curves: dict[tuple, dict[str, dict[float, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in records_of(records):
        if r.ok and r.noise == "none":
            curves[r.setting_key][r.method][r.missing_rate].append(r.metrics["accuracy"])
    return {k: m for k, m in curves.items() if max(len(points) for points in m.values()) >= 2}


def plot_names(records: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(file name, caption) of every plot :func:`missing_rate_plots` writes, without drawing."""
    curves = _curves(records)
    return [(_file_name(s, "missing_rate"), setting_title(s)) for s in sorted(curves, key=text_order)]


def missing_rate_plots(records: Iterable[Mapping[str, Any]], out_dir: Path) -> list[Path] | None:
    """One PNG per setting with at least two missing rates; returns the written paths, or None when
    matplotlib cannot be imported."""
    plt = _pyplot()
    if plt is None:
        return None
    written = []
    for setting, methods in sorted(_curves(records).items(), key=lambda kv: text_order(kv[0])):
        lines = tuple(
            (method, tuple((r, 100 * statistics.fmean(methods[method][r])) for r in sorted(methods[method])))
            for method in sorted(methods)
        )
        png = _figure(("missing_rate", setting, lines), functools.partial(_draw_missing_rate, plt, setting, lines))
        written.append(_save(out_dir, _file_name(setting, "missing_rate"), png))
    return written


def _draw_missing_rate(plt: Any, setting: tuple, lines: tuple) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for method, points in lines:
        ax.plot([r for r, _ in points], [y for _, y in points], marker="o", label=method)
    ax.set(xlabel="missing rate", ylabel="multimodal accuracy (%)", title=setting_title(setting))
    ax.title.set_fontsize(8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _png(plt, fig, palette=False)


# --------------------------------------------------------------------------------------------------
# Training dynamics: per-modality validation accuracy against the epoch


@dataclass(frozen=True)
class Dynamics:
    """One row (method, or method and config) of a setting: ``per_modality[modality]`` and ``train_loss`` are
    (epoch, mean over seeds) pairs, at the epochs every one of the ``seeds`` records has a value for."""

    seeds: int
    per_modality: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    train_loss: list[tuple[int, float]] = field(default_factory=list)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _mean_over_runs(runs: list[dict[int, float]]) -> list[tuple[int, float]]:
    """Mean at each epoch that every run has."""
    common = set.intersection(*(set(run) for run in runs)) if runs else set()
    return [(epoch, statistics.fmean(run[epoch] for run in runs)) for epoch in sorted(common)]


def _qualifies(r: Record) -> bool:
    history = r.history
    return (
        r.ok
        and r.noise == "none"
        and not r.is_retrieval
        and float(r.missing_rate) == 0
        and isinstance(history, list)
        and any(isinstance(e, Mapping) and e.get("val_per_modality") for e in history)
    )


def dynamics_curves(records: Iterable[Mapping[str, Any]]) -> dict[tuple, dict[str, Dynamics]]:
    """setting -> row label -> :class:`Dynamics`, from the classification records at missing rate 0 without
    noise whose history has per-modality validation accuracy. Pure: numbers only, nothing drawn. Rows are
    labelled as in the tables, so two configs of one method are never averaged together."""
    out: dict[tuple, dict[str, Dynamics]] = {}
    for setting, rows in by_setting(r for r in records_of(records) if _qualifies(r)).items():
        rows = sorted(rows, key=lambda r: (r.method, r.seed, r.get("key", "")))
        runs: dict[str, list[Record]] = defaultdict(list)
        for r, label in zip(rows, row_labels(rows)):
            runs[label].append(r)
        curves = {}
        for label, members in runs.items():
            per_run_modality: list[dict[str, dict[int, float]]] = []
            per_run_loss: list[dict[int, float]] = []
            for r in members:
                accuracy: dict[str, dict[int, float]] = defaultdict(dict)
                loss: dict[int, float] = {}
                for entry in r.history:
                    if not isinstance(entry, Mapping) or not isinstance(entry.get("epoch"), int):
                        continue
                    for modality, value in (entry.get("val_per_modality") or {}).items():
                        if _number(value) is not None:
                            accuracy[modality][entry["epoch"]] = _number(value)
                    if _number(entry.get("train_loss")) is not None:
                        loss[entry["epoch"]] = _number(entry["train_loss"])
                per_run_modality.append(accuracy)
                per_run_loss.append(loss)
            modalities = sorted(set().union(*per_run_modality))
            per_modality = {m: _mean_over_runs([run.get(m, {}) for run in per_run_modality]) for m in modalities}
            per_modality = {m: points for m, points in per_modality.items() if points}
            if per_modality:
                curves[label] = Dynamics(len(members), per_modality, _mean_over_runs(per_run_loss))
        if curves:
            out[setting] = curves
    return out


def _dynamics_caption(setting: tuple) -> str:
    return f"{setting_title(setting)}: per-modality validation accuracy by epoch (mean over seeds)"


def dynamics_plot_names(
    records: Iterable[Mapping[str, Any]], *, curves: Mapping[tuple, Mapping[str, Dynamics]] | None = None
) -> list[tuple[str, str]]:
    """(file name, caption) of every figure :func:`dynamics_plots` writes, without drawing. ``curves``: the
    records' :func:`dynamics_curves` when the caller has them already."""
    curves = dynamics_curves(records) if curves is None else curves
    return [(_file_name(s, "dynamics"), _dynamics_caption(s)) for s in sorted(curves, key=text_order)]


_LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))


def _draw_dynamics(plt: Any, setting: tuple, rows: dict[str, Dynamics]) -> bytes:
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    labels = sorted(rows)
    modalities = sorted({m for d in rows.values() for m in d.per_modality})
    palette = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    colour = {label: palette(i % palette.N) for i, label in enumerate(labels)}
    style = {m: _LINE_STYLES[i % len(_LINE_STYLES)] for i, m in enumerate(modalities)}
    has_loss = any(d.train_loss for d in rows.values())
    grid = len(labels) > MAX_METHODS_ON_ONE_AXIS

    def accuracy_lines(ax: Any, label: str) -> None:
        for m, points in sorted(rows[label].per_modality.items()):
            ax.plot(
                [e for e, _ in points],
                [100 * v for _, v in points],
                color=colour[label],
                linestyle=style[m],
                linewidth=1.2,
            )

    if grid:
        panels = len(labels) + has_loss
        ncols = min(4, panels)
        nrows = math.ceil(panels / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 1.7 * nrows + 0.5), dpi=100, squeeze=False)
        flat = list(axes.flat)
        for ax, label in zip(flat, labels):
            accuracy_lines(ax, label)
            ax.set_title(f"{label} (n={rows[label].seeds})", fontsize=7)
        accuracy_axes = flat[: len(labels)]
        for ax in accuracy_axes[1:]:
            ax.sharey(accuracy_axes[0])  # panels compare at a glance
        loss_ax = flat[len(labels)] if has_loss else None
        for ax in flat[len(labels) + has_loss :]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel("val accuracy (%)", fontsize=7)
    else:
        fig, axes = plt.subplots(1, 1 + has_loss, figsize=(4.4 * (1 + has_loss), 3.2), dpi=100, squeeze=False)
        for label in labels:
            accuracy_lines(axes[0, 0], label)
        axes[0, 0].set_ylabel("per-modality val accuracy (%)", fontsize=8)
        accuracy_axes = [axes[0, 0]]
        loss_ax = axes[0, 1] if has_loss else None
    if loss_ax is not None:
        for label in labels:
            points = rows[label].train_loss
            loss_ax.plot([e for e, _ in points], [v for _, v in points], color=colour[label], linewidth=1.2)
        loss_ax.set_title("training loss", fontsize=7 if grid else 8)
    for ax in accuracy_axes + ([loss_ax] if loss_ax is not None else []):
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("epoch", fontsize=7 if grid else 8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    modality_handles = [Line2D([], [], color="0.3", linestyle=style[m], label=m) for m in modalities]
    # modalities by line style, in a strip under the panels; methods by colour (panel titles in the grid)
    fig.legend(
        handles=modality_handles,
        fontsize=7,
        loc="lower center",
        ncol=len(modalities),
        frameon=False,
        title="modality (line style)",
        title_fontsize=7,
    )
    if not grid:
        method_handles = [
            Line2D([], [], color=colour[label], label=f"{label} (n={rows[label].seeds})") for label in labels
        ]
        axes[0, 0].legend(handles=method_handles, fontsize=6, loc="best", title="method", title_fontsize=6)
    fig.suptitle(setting_title(setting), fontsize=8)
    fig.tight_layout(rect=(0, 0.09 if not grid else 0.3 / fig.get_figheight(), 1, 1))
    return _png(plt, fig)


class _LazyPyplot:
    """matplotlib's pyplot, imported on its first use: when every figure comes from the figure cache nothing
    is drawn, and importing pyplot alone took 0.35 s of a 12 s ``bench table`` over 100,000 records."""

    def __getattr__(self, name: str) -> Any:
        import matplotlib.pyplot as plt

        return getattr(plt, name)


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (imported when first used), or None when matplotlib is
    not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        return None
    return _LazyPyplot()


def _png(plt: Any, fig: Any, *, palette: bool = True) -> bytes:
    """The figure as PNG bytes without a timestamped Software tag (same records, same bytes); closed after."""
    buffer = BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return _palette_png(buffer.getvalue()) if palette else buffer.getvalue()


def _palette_png(data: bytes) -> bytes:
    """The PNG with a 128-colour palette (a few tens of kB instead of ~80); unchanged without Pillow."""
    try:
        from PIL import Image
    except ImportError:
        return data
    out = BytesIO()
    Image.open(BytesIO(data)).convert("RGB").quantize(colors=128).save(out, format="PNG", optimize=True)
    return out.getvalue()


def dynamics_plots(
    records: Iterable[Mapping[str, Any]],
    out_dir: Path,
    *,
    curves: Mapping[tuple, Mapping[str, Dynamics]] | None = None,
) -> list[Path] | None:
    """One PNG per setting whose records have per-modality validation history (see :func:`dynamics_curves`;
    ``curves``: those of ``records`` when the caller has them already); returns the written paths, or None when
    matplotlib cannot be imported."""
    plt = _pyplot()
    if plt is None:
        return None
    curves = dynamics_curves(records) if curves is None else curves
    return [
        _save(
            out_dir,
            _file_name(setting, "dynamics"),
            _figure(("dynamics", setting, rows), functools.partial(_draw_dynamics, plt, setting, rows)),
        )
        for setting, rows in sorted(curves.items(), key=lambda kv: text_order(kv[0]))
    ]


# --------------------------------------------------------------------------------------------------
# Gap to the Bayes ceiling against a dataset option (bench.tables.common.ceiling_sweeps)


def _sweep_caption(key: tuple) -> str:
    dataset, option, tuning, epochs, precision = key
    return f"{dataset}: gap to the Bayes ceiling against {option} ({tuning}, {epochs} epochs, {precision})"


def sweep_plot_names(records: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(file name, caption) of every figure :func:`sweep_plots` writes, without drawing."""
    return [
        (_file_name(k, f"sweep_{k[1]}"), _sweep_caption(k)) for k in sorted(ceiling_sweeps(records), key=text_order)
    ]


def sweep_plots(records: Iterable[Mapping[str, Any]], out_dir: Path) -> list[Path] | None:
    """One PNG per swept option: each method's mean gap (points) against the option's value; None without
    matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    written = []
    for key, rows in sorted(ceiling_sweeps(records).items(), key=lambda kv: text_order(kv[0])):
        lines = tuple(
            (label, tuple((v, 100 * statistics.fmean(rows[label][v])) for v in sorted(rows[label])))
            for label in sorted(rows)
        )
        png = _figure(("sweep", key, lines), functools.partial(_draw_sweep, plt, key, lines))
        written.append(_save(out_dir, _file_name(key, f"sweep_{key[1]}"), png))
    return written


def _draw_sweep(plt: Any, key: tuple, lines: tuple) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for label, points in lines:
        ax.plot([v for v, _ in points], [y for _, y in points], marker="o", label=label)
    ax.set(xlabel=key[1], ylabel="Bayes accuracy - test accuracy (points)", title=_sweep_caption(key))
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return _png(plt, fig)


# --------------------------------------------------------------------------------------------------
# Critical-difference diagrams (Demsar, JMLR 2006, Fig. 1) of the cross-dataset Friedman ranking


def _cd_file_name(ranking: Mapping[str, Any]) -> str:
    track = "" if ranking["track"] == "classification" else f"{ranking['track']}_"
    return f"critical_difference_{track}{hashlib.sha256(ranking['tuning'].encode()).hexdigest()[:6]}.png"


def _cd_title(ranking: Mapping[str, Any]) -> str:
    track = "" if ranking["track"] == "classification" else f"{ranking['track'].capitalize()} objectives. "
    return f"{track}Average rank across {len(ranking['datasets'])} datasets, {ranking['tuning']}"


def _cd_caption(ranking: Mapping[str, Any]) -> str:
    return f"{_cd_title(ranking)}: Nemenyi critical difference {ranking['cd']:.2f} (Friedman p = {ranking['p']:.3g})"


def cd_rankings(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The cross-dataset rankings a critical-difference diagram is drawn for: the classification track's and
    the retrieval track's (bench.tables.leaderboard, bench.tables.retrieval)."""
    from bench.tables.common import drop_capped_duplicates, split_by_task
    from bench.tables.leaderboard import classification_rankings
    from bench.tables.retrieval import retrieval_rankings

    records = drop_capped_duplicates(records)  # what both rankings read; given one, the leaderboard's set
    return classification_rankings(records) + retrieval_rankings(split_by_task(records)[1])


def cd_diagram_names(
    records: Iterable[Mapping[str, Any]], *, rankings: list[dict[str, Any]] | None = None
) -> list[tuple[str, str]]:
    """(file name, caption) of every diagram :func:`cd_diagrams` writes, without drawing. ``rankings``: the
    records' :func:`cd_rankings` when the caller has them already."""
    return [(_cd_file_name(r), _cd_caption(r)) for r in (cd_rankings(records) if rankings is None else rankings)]


def cd_diagrams(
    records: Iterable[Mapping[str, Any]], out_dir: Path, *, rankings: list[dict[str, Any]] | None = None
) -> list[Path] | None:
    """One PNG per kind of hyperparameters: each method at its average rank (1 = best), the critical
    difference drawn as a bar, and the band of ranks not significantly worse than the best shaded
    (``rankings``: the records' :func:`cd_rankings` when the caller has them already)."""
    plt = _pyplot()
    if plt is None:
        return None
    written = []
    for ranking in cd_rankings(records) if rankings is None else rankings:
        png = _figure(("cd", repr(sorted(ranking.items()))), functools.partial(_draw_cd, plt, ranking))
        written.append(_save(out_dir, _cd_file_name(ranking), png))
    return written


def _draw_cd(plt: Any, ranking: Mapping[str, Any]) -> bytes:
    average, cd = ranking["average"], ranking["cd"]
    order = sorted(average, key=lambda m: (average[m], m))
    k = len(order)
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.28 * k), dpi=100)
    best = average[order[0]]
    ax.axvspan(best, min(best + cd, k), color="0.9", label="within CD of the best")
    for row, method in enumerate(order):
        ax.plot([average[method]], [row], "o", color="black")
        ax.annotate(method, (average[method], row), xytext=(6, -3), textcoords="offset points", fontsize=7)
    ax.plot([1, 1 + cd], [-1.2, -1.2], color="black", linewidth=2)
    ax.text(1 + cd / 2, -1.6, f"CD = {cd:.2f}", ha="center", fontsize=7)
    ax.set(
        xlim=(0.5, k + 0.5),
        ylim=(k, -2.2),
        yticks=[],
        xlabel="average rank (1 = best)",
        title=f"{_cd_title(ranking)}\nNemenyi critical difference {cd:.2f}, Friedman p = {ranking['p']:.3g}",
    )
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _png(plt, fig)
