"""Records as data: one flat row per record, as a pandas DataFrame (``bench.load_records``) or a file
(``python -m bench export``).

The tables of ``bench table`` stay the reference; this module is for a researcher's own analysis. Every
column is documented in ``docs/records.md``. Columns come in two groups:

* :data:`BASE_COLUMNS`, always present and always in this order (empty where a record has no value, e.g.
  ``accuracy`` of a retrieval record or ``bayes_accuracy`` of a real dataset);
* dotted columns named after the record field they flatten, one per value found in the records, sorted:
  ``per_modality_accuracy.<modality>``, ``bayes_accuracy_alone.<modality>``, ``noise.<level>.accuracy``,
  ``noise.<level>.macro_f1``, ``noise.<level>.per_modality_accuracy.<modality>``, ``retrieval.<path>``
  (``metrics.retrieval`` flattened), ``option.<name>`` (dataset options) and ``notes.<name>`` (any other
  scalar note).

``load_history`` gives the per-epoch training dynamics in long form (one row per record and epoch). The
module never imports torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.record import Record, records_of
from bench.spec import canonical_json

__all__ = ["BASE_COLUMNS", "FRAME_VERSION", "HISTORY_COLUMNS", "load_history", "load_records", "record_row"]

#: Bumped when a column of :data:`BASE_COLUMNS` is renamed, removed or changes meaning (adding one does not).
FRAME_VERSION = 1

#: The columns every frame has, in order (docs/records.md describes each).
BASE_COLUMNS = (
    # identity
    "key",
    "schema_version",
    "status",
    "reason",
    "evaluated_from",
    # the spec
    "method",
    "dataset",
    "dataset_version",
    "seed",
    "missing_rate",
    "effective_missing_rate",
    "missing_on",
    "epochs",
    "batch_size",
    "patience",
    "precision",
    "hparams_source",
    "tuned",
    "noise",
    "noise_levels",
    "protocol",
    "hparams",
    "extra",
    # the test metrics and the selection
    "task",
    "accuracy",
    "macro_f1",
    "best_val_accuracy",
    "best_val_mean_recall_at_1",
    "selected_epoch",
    "epochs_run",
    "num_test_samples",
    # realised missing fractions and reference numbers of the data
    "missing_fraction_train",
    "missing_fraction_val",
    "missing_fraction_test",
    "bayes_accuracy",
    "oracle_test_accuracy",
    "modalities",
    "validation",
    "per_modality_trained_alone",
    "n_train",
    "n_val",
    "n_test",
    # how it ran
    "train_seconds",
    "test_seconds",
    "device",
    "threads",
    "env_bench",
    "env_torch",
    "env_python",
    "env_cpu",
    "env_cpu_kernels",
    "env_platform",
    "env_git_commit",
)

HISTORY_COLUMNS = ("key", "method", "dataset", "seed", "missing_rate", "epoch", "train_loss", "val_score")

#: Notes that have a base column (or a dotted family) of their own.
_NOTES_WITH_COLUMNS = {
    "missing_fraction_train",
    "missing_fraction_val",
    "missing_fraction_test",
    "bayes_accuracy",
    "bayes_accuracy_alone",
    "oracle_test_accuracy",
    "modalities",
    "validation",
    "per_modality_trained_alone",
    "split_sizes",
    "dataset_options",
    "device",
    "threads",
    "task",
}


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for name in sorted(value):
            _flatten(f"{prefix}.{name}", value[name], into)
    elif isinstance(value, list | tuple):
        into[prefix] = ",".join(str(v) for v in value)
    elif value is not None:  # e.g. the per-modality accuracy of a model that has no per-modality split
        into[prefix] = value


def record_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One record -> one flat row (the base columns, then its dotted columns)."""
    r = Record.of(record)
    metrics, notes, timings, env = r.metrics, r.notes, r.timings, r.environment
    sizes = notes.get("split_sizes") or {}
    row: dict[str, Any] = {
        "key": r.get("key"),
        "schema_version": r.schema_version,
        "status": r.status,
        "reason": r.reason,
        "evaluated_from": r.evaluated_from.get("key") if r.evaluated_from is not None else None,
        "method": r.method,
        "dataset": r.dataset,
        "dataset_version": r.dataset_version,
        "seed": r.seed,
        "missing_rate": float(r.missing_rate),
        "effective_missing_rate": r.effective_missing_rate,
        "missing_on": r.missing_on,
        "epochs": r.epochs,
        "batch_size": r.batch_size,
        "patience": r.patience,
        "precision": r.precision,
        "hparams_source": r.hparams_source,
        "tuned": r.tuned,
        "noise": r.noise,
        "noise_levels": ",".join(f"{float(v):g}" for v in r.noise_levels),
        "protocol": r.protocol,
        "hparams": canonical_json(r.hparams),
        "extra": canonical_json(r.extra),
        "task": r.task,
        "accuracy": metrics.get("accuracy"),
        "macro_f1": metrics.get("macro_f1"),
        "best_val_accuracy": metrics.get("best_val_accuracy"),
        "best_val_mean_recall_at_1": metrics.get("best_val_mean_recall_at_1"),
        "selected_epoch": metrics.get("selected_epoch"),
        "epochs_run": metrics.get("epochs_run"),
        "num_test_samples": metrics.get("num_test_samples"),
        "missing_fraction_train": notes.get("missing_fraction_train"),
        "missing_fraction_val": notes.get("missing_fraction_val"),
        "missing_fraction_test": notes.get("missing_fraction_test"),
        "bayes_accuracy": notes.get("bayes_accuracy"),
        "oracle_test_accuracy": notes.get("oracle_test_accuracy"),
        "modalities": ",".join(r.modalities) or None,
        "validation": notes.get("validation"),
        "per_modality_trained_alone": notes.get("per_modality_trained_alone"),
        "n_train": sizes.get("train"),
        "n_val": sizes.get("val"),
        "n_test": sizes.get("test"),
        "train_seconds": timings.get("train_seconds"),
        "test_seconds": timings.get("test_seconds"),
        "device": notes.get("device"),
        "threads": notes.get("threads"),
        **{
            f"env_{name}": env.get(name)
            for name in ("bench", "torch", "python", "cpu", "cpu_kernels", "platform", "git_commit")
        },
    }
    dotted: dict[str, Any] = {}
    for name, value in (metrics.get("per_modality_accuracy") or {}).items():
        dotted[f"per_modality_accuracy.{name}"] = value
    for name, value in (notes.get("bayes_accuracy_alone") or {}).items():
        dotted[f"bayes_accuracy_alone.{name}"] = value
    if metrics.get("noise"):
        _flatten("noise", metrics["noise"], dotted)
    if metrics.get("retrieval"):
        _flatten("retrieval", metrics["retrieval"], dotted)
    for name, value in (notes.get("dataset_options") or r.extra.get("dataset_options") or {}).items():
        dotted[f"option.{name}"] = value
    for name, value in notes.items():
        if name not in _NOTES_WITH_COLUMNS and not isinstance(value, Mapping | list | tuple):
            dotted[f"notes.{name}"] = value
    row.update(sorted(dotted.items()))
    return row


def _records(results: Path | str | Iterable[Mapping[str, Any]]) -> list[Record]:
    if not isinstance(results, str | Path):
        return records_of(results)
    from bench.errors import UsageError
    from bench.store import iter_records

    root = Path(results)
    if not (root / "records").is_dir():
        raise UsageError(f"{root} has no records/ folder; point at a results directory (e.g. results)")
    chosen = []
    for item in iter_records(root):
        if isinstance(item, Mapping):
            chosen.append(item)
        else:  # a damaged file: the tables skip it the same way
            warnings.warn(f"skipped {item}", stacklevel=3)
    return chosen


def load_records(results: Path | str | Iterable[Mapping[str, Any]] = "results"):
    """Every valid record under ``results`` (a results directory, or records already read) as a
    ``pandas.DataFrame``: one row per record, :data:`BASE_COLUMNS` first, then the dotted columns, sorted.

    Damaged records are skipped with a warning, as the tables skip them. Values keep the record's types
    (rates and accuracies as floats in [0, 1], seeds as integers); mappings that stay whole (``hparams``,
    ``extra``) are canonical JSON strings, so ``json.loads`` gives them back and equal settings compare equal.
    """
    import pandas as pd

    rows = [record_row(r) for r in _records(results)]
    dotted = sorted({name for row in rows for name in row} - set(BASE_COLUMNS))
    frame = pd.DataFrame(rows, columns=[*BASE_COLUMNS, *dotted])
    frame.attrs["frame_version"] = FRAME_VERSION
    return frame


def load_history(results: Path | str | Iterable[Mapping[str, Any]] = "results"):
    """The per-epoch history of every record in long form: :data:`HISTORY_COLUMNS`, then
    ``val_per_modality.<modality>`` where the method splits its model per modality."""
    import pandas as pd

    rows = []
    for r in _records(results):
        for entry in r.history:
            row = {
                "key": r.get("key"),
                "method": r.method,
                "dataset": r.dataset,
                "seed": r.seed,
                "missing_rate": float(r.missing_rate),
                "epoch": entry.get("epoch"),
                "train_loss": entry.get("train_loss"),
                "val_score": entry.get("val_score"),
            }
            for name, value in (entry.get("val_per_modality") or {}).items():
                row[f"val_per_modality.{name}"] = value
            rows.append(row)
    dotted = sorted({name for row in rows for name in row} - set(HISTORY_COLUMNS))
    return pd.DataFrame(rows, columns=[*HISTORY_COLUMNS, *dotted])


EXPORT_FORMATS = ("parquet", "csv")
PARQUET_MISSING = (
    "--format parquet needs pyarrow, a dependency of bench-mml: pip install 'pyarrow>=12' (or use --format csv)"
)


def export(results: Path | str, out: Path | str, fmt: str | None = None) -> tuple[int, int, str]:
    """Write :func:`load_records` of ``results`` to ``out`` as parquet or CSV (``fmt`` None: from the suffix).
    Returns (rows, columns, format). Bad input raises UsageError with one line."""
    from bench.errors import UsageError

    out = Path(out)
    if fmt is None:
        fmt = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(out.suffix.lower())
        if fmt is None:
            raise UsageError(f"cannot tell the format of {out.name!r} from its suffix; give --format parquet or csv")
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageError(PARQUET_MISSING) from None
    if not out.parent.is_dir():
        raise UsageError(f"folder {out.parent} does not exist; create it or choose another --out")
    frame = load_records(results)
    frame.attrs = {}  # pandas would store attrs as parquet metadata; the file describes itself by its columns
    tmp = out.with_name(f".{out.name}.tmp")
    if fmt == "parquet":
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_csv(tmp, index=False)
    tmp.replace(out)
    return len(frame), len(frame.columns), fmt
