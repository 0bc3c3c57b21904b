"""Per-epoch loggers, plugins of the entry-point group ``bench.loggers`` (``run --logger csv,tensorboard``).

A logger is a factory ``factory(results_dir, spec) -> logger`` (a class, typically) whose object has
``log_epoch(entry)``, called after every epoch of the cell's training with the entry the record's ``history``
gets (``epoch``, ``train_loss``, ``val_score`` and, where the method splits its model per modality,
``val_per_modality``), and ``close()``, called once when the cell ends (also when it failed). A factory may
have a static ``check() -> str | None``, called when the run is planned: a one-line reason why the logger
cannot run here (e.g. a missing package), or None. Loggers observe; they never change a record, and they see
the cells that train (a cell reused from its record logs nothing).

Built in:

* ``csv``: ``<results>/logs/<dataset>/<method>/<cell key>.csv``, one row per epoch (columns ``epoch``,
  ``train_loss``, ``val_score``, then ``val_per_modality.<modality>``), flushed after every epoch;
* ``tensorboard``: ``<results>/tensorboard/<dataset>/<method>/<cell key>/``, event files written with
  ``torch.utils.tensorboard`` (scalars ``train/loss``, ``val/score``, ``val/per_modality/<modality>``, with the
  epoch as step); needs the ``tensorboard`` package (``pip install 'bench-mml[tensorboard]'``).
  ``tensorboard --logdir <results>/tensorboard`` shows them.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.registry import Registry
from bench.spec import CellSpec

__all__ = ["LOGGERS", "CSVLogger", "TensorBoardLogger", "check_loggers", "open_loggers", "parse_loggers"]

LOGGERS = Registry("logger", "bench.loggers")

TENSORBOARD_MISSING = "--logger tensorboard needs the tensorboard package: pip install 'bench-mml[tensorboard]'"


def _cell_path(results_dir: Path, kind: str, spec: CellSpec) -> Path:
    return Path(results_dir) / kind / spec.dataset / spec.method / spec.key


class CSVLogger:
    """One CSV file per cell (see the module docstring)."""

    def __init__(self, results_dir: Path, spec: CellSpec) -> None:
        self.path = _cell_path(results_dir, "logs", spec).with_suffix(".csv")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._writer: csv.DictWriter | None = None

    def log_epoch(self, entry: dict[str, Any]) -> None:
        row = {"epoch": entry["epoch"], "train_loss": entry["train_loss"], "val_score": entry["val_score"]}
        row.update({f"val_per_modality.{name}": value for name, value in (entry.get("val_per_modality") or {}).items()})
        if self._writer is None:
            self._writer = csv.DictWriter(self._handle, fieldnames=list(row), extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow(row)
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class TensorBoardLogger:
    """TensorBoard event files per cell (see the module docstring)."""

    @staticmethod
    def check() -> str | None:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            return TENSORBOARD_MISSING
        return None

    def __init__(self, results_dir: Path, spec: CellSpec) -> None:
        problem = self.check()
        if problem:
            raise UsageError(problem)
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = _cell_path(results_dir, "tensorboard", spec)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_epoch(self, entry: dict[str, Any]) -> None:
        step = int(entry["epoch"])
        self._writer.add_scalar("train/loss", entry["train_loss"], step)
        self._writer.add_scalar("val/score", entry["val_score"], step)
        for name, value in (entry.get("val_per_modality") or {}).items():
            self._writer.add_scalar(f"val/per_modality/{name}", value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def parse_loggers(text: str | None) -> tuple[str, ...]:
    """``--logger csv,tensorboard`` -> the names, each registered and able to run here (else one UsageError)."""
    if not text:
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise UsageError("--logger is empty; give logger names, e.g. --logger csv,tensorboard")
    check_loggers(names)
    return names


def check_loggers(names: tuple[str, ...]) -> None:
    for name in names:
        check = getattr(LOGGERS.get(name), "check", None)
        problem = check() if check is not None else None
        if problem:
            raise UsageError(problem)


def open_loggers(names: tuple[str, ...], results_dir: Path | None, spec: CellSpec) -> list[Any]:
    if names and results_dir is None:
        raise UsageError("loggers need a results directory")
    opened = []
    try:
        for name in names:
            opened.append(LOGGERS.get(name)(Path(results_dir), spec))
    except BaseException:
        for logger in opened:
            logger.close()
        raise
    return opened
