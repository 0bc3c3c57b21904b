"""One cell's record, typed: :class:`Record` is the record's dict (what ``<key>.json`` holds) with its fields
as read-only properties, so that the code reading records names what it reads (``record.method``,
``record.setting_key``) instead of walking ``record["spec"][...]``.

A record is built in one place, :func:`bench.store.new_record`, and read in one place,
:func:`bench.store.read_record` (:func:`bench.store.iter_records` for a whole results directory); the
fields are described in docs/records.md. Because the class is a ``dict``, the JSON file, its checksum and
every reader of plain records see exactly what they saw before; it is read-only at the top level, and its
nested values are to be treated as read-only too: what costs a hash (:attr:`Record.config_id`,
:attr:`Record.setting_key`) is computed once per record. Never imports torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NoReturn

from bench.spec import canonical_json

__all__ = ["SETTING_FIELDS", "Record", "config_id", "records_of", "setting_key", "tuning_label"]

#: The spec fields two records must share to appear in one table (with the kind of hyperparameters).
SETTING_FIELDS = ("dataset", "dataset_version", "protocol", "epochs", "batch_size", "missing_on", "precision")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def tuning_label(source: str) -> str:
    """Where the hyperparameters came from (``spec.hparams_source``), in words."""
    kind = source.split(":", 1)[0].split("+", 1)[0]
    if kind == "tuned":
        budget = source.rsplit(":", 1)[-1].replace("+set", "").replace("-", " ")
        return f"hyperparameters tuned on validation ({budget} per method and dataset)"
    return {"default": "paper-default hyperparameters (untuned)", "set": "hyperparameters set by hand (--set)"}.get(
        kind, f"hyperparameters from {source}"
    )


def config_id(spec: Mapping[str, Any]) -> str:
    """The method's configuration; dataset options are left out (the dataset version already separates
    them), so one method keeps one row along a sweep of a dataset option, and so is the source of a record
    scored from a saved model (its setting already separates it: :func:`setting_key`)."""
    extra = {k: v for k, v in spec.get("extra", {}).items() if k not in ("dataset_options", "evaluated_from")}
    body = {"hparams": spec["hparams"], "patience": spec.get("patience"), "extra": extra}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()[:6]


def setting_key(spec: Mapping[str, Any]) -> tuple:
    """What must be equal for two records to share a table. Records that ``bench eval`` scored from saved
    models (``extra.evaluated_from``) get tables of their own: their test conditions differ from the
    training ones, a protocol no trained cell follows."""
    tuning = tuning_label(spec.get("hparams_source", "default"))
    if spec.get("extra", {}).get("evaluated_from"):
        tuning += ", scored from saved models (bench eval)"
    return tuple(spec[f] for f in SETTING_FIELDS) + (tuning,)


class _once:
    """A read-only property computed on its first read and then kept in the instance's ``__dict__`` (a
    non-data descriptor, so attribute lookup finds the kept value first and never calls this again). A
    Record never changes, so a kept value cannot go stale; the tables read these fields millions of times
    at lab scale (benchmarks/table_scale.py). Unlike ``functools.cached_property`` in Python 3.11 it takes no
    lock."""

    def __init__(self, compute: Any) -> None:
        self.compute, self.name, self.__doc__ = compute, compute.__name__, compute.__doc__

    def __get__(self, record: Any, owner: type | None = None) -> Any:
        if record is None:
            return self
        value = record.__dict__[self.name] = self.compute(record)
        return value


class Record(dict):
    """A cell's record: the dict of its JSON file, with properties for its fields.

    Build one with :func:`bench.store.new_record` (a new cell) or ``Record.of(mapping)`` (a record read by
    other means, e.g. a hand-made one in a test); ``Record.of`` returns a Record unchanged."""

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Record:
        return record if type(record) is cls else cls(record)

    # -- read-only at the top level (a copy with changes: with_spec, or Record({**record, ...}))

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a Record is read-only; make a changed copy, e.g. Record({**record, 'field': value})")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple:  # pickle and copy rebuild it whole, never item by item
        return Record, (dict(self),)

    def kept(self, compute: Callable[[Record], Any]) -> Any:
        """``compute(self)``, computed on the first call for this record and this function and then kept: how
        a table module keeps a value of its own per record (bench.tables.regenerate) when several of its
        passes read it. A Record never changes, so a kept value cannot go stale."""
        name = f"kept:{compute.__module__}.{compute.__qualname__}"
        if name not in self.__dict__:
            self.__dict__[name] = compute(self)
        return self.__dict__[name]

    def with_spec(self, **changes: Any) -> Record:
        """A copy whose spec has ``changes`` (its key is kept: the tables read a capped rate this way)."""
        return Record({**self, "spec": {**self["spec"], **changes}})

    # -- the record's own fields (docs/records.md); absent optional ones read as empty

    @property
    def key(self) -> str:
        return self["key"]

    @property
    def schema_version(self) -> int | None:
        return self.get("schema_version")

    @property
    def status(self) -> str | None:
        return self.get("status")

    @_once
    def ok(self) -> bool:
        return self.get("status") == "ok"

    @property
    def reason(self) -> str | None:
        return self.get("reason")

    @property
    def spec(self) -> Mapping[str, Any]:
        return self["spec"]

    @_once
    def metrics(self) -> Mapping[str, Any]:
        """The test metrics; empty for a failed cell (whose ``metrics`` is null)."""
        return self.get("metrics") or _EMPTY

    def metric(self, name: str) -> Any:
        return self.metrics.get(name)

    @_once
    def notes(self) -> Mapping[str, Any]:
        return self.get("notes") or _EMPTY

    @_once
    def timings(self) -> Mapping[str, Any]:
        return self.get("timings") or _EMPTY

    @property
    def cell_seconds(self) -> float:
        """Seconds the cell took to train and test (0 for a record without timings): about what re-running it
        costs (bench.verify, results/regenerate.sh's estimate)."""
        return float(self.timings.get("train_seconds", 0.0)) + float(self.timings.get("test_seconds", 0.0))

    @property
    def environment(self) -> Mapping[str, Any]:
        return self.get("environment") or _EMPTY

    @property
    def history(self) -> Sequence[Any]:
        return self.get("history") or ()

    @property
    def artifacts(self) -> Mapping[str, Any]:
        return self.get("artifacts") or _EMPTY

    @property
    def evaluated_from(self) -> Mapping[str, Any] | None:
        """The source of a record that ``bench eval`` scored from a saved model; None for trained cells."""
        source = self.get("evaluated_from")
        return source if isinstance(source, Mapping) else None

    # -- the spec (bench/spec.py): the cell's identity fields are required, the others read as their defaults

    @_once
    def method(self) -> str:
        return self["spec"]["method"]

    @_once
    def dataset(self) -> str:
        return self["spec"]["dataset"]

    @_once
    def seed(self) -> int:
        return self["spec"]["seed"]

    @_once
    def missing_rate(self) -> float:
        """The nominal rate, as recorded (see :attr:`effective_missing_rate`)."""
        return self["spec"]["missing_rate"]

    @property
    def hparams(self) -> Mapping[str, Any]:
        return self["spec"].get("hparams", {})

    @property
    def dataset_version(self) -> str | None:
        return self["spec"].get("dataset_version")

    @property
    def epochs(self) -> int | None:
        return self["spec"].get("epochs")

    @property
    def batch_size(self) -> int | None:
        return self["spec"].get("batch_size")

    @property
    def patience(self) -> int | None:
        return self["spec"].get("patience")

    @property
    def protocol(self) -> int | None:
        return self["spec"].get("protocol")

    @property
    def missing_on(self) -> str:
        return self["spec"].get("missing_on", "all")

    @_once
    def precision(self) -> str:
        return self["spec"].get("precision", "fp32")

    @_once
    def hparams_source(self) -> str:
        return self["spec"].get("hparams_source", "default")

    @property
    def tuned(self) -> bool:
        return self.hparams_source.split(":", 1)[0].split("+", 1)[0] == "tuned"

    @_once
    def noise(self) -> str:
        """The test-time noise kind; "none" for cells without the noise axis (and older records)."""
        return self["spec"].get("noise", "none")

    @property
    def noise_levels(self) -> Sequence[float]:
        return self["spec"].get("noise_levels", ())

    @_once
    def extra(self) -> Mapping[str, Any]:
        return self["spec"].get("extra", {})

    @property
    def from_saved_model(self) -> bool:
        """Whether ``bench eval`` scored this cell from a saved model (``spec.extra.evaluated_from``)."""
        return bool(self.extra.get("evaluated_from"))

    # -- derived

    @_once
    def task(self) -> str:
        """``classification`` or ``retrieval`` (a method's ``task``, bench.registry.TASK_FAMILIES): what the
        loop wrote in ``notes.task``, classification when it wrote none (every classification cell, and a failed
        cell of any task; the tables place failed cells by their method: bench.tables.common.split_by_task)."""
        return self.notes.get("task", "classification")

    @_once
    def is_retrieval(self) -> bool:
        return self.task == "retrieval"

    @_once
    def modalities(self) -> Sequence[str]:
        """The dataset's modalities (``notes.modalities``); empty for a failed cell."""
        return self.notes.get("modalities") or ()

    @_once
    def effective_missing_rate(self) -> float:
        """The missing rate whose masks the record realised: above (M-1)/M every sample keeps exactly one of M
        modalities (bench.masks), so e.g. 0.7 on two modalities gives the masks of 0.5, cell for cell."""
        rate = float(self.missing_rate)
        m = len(self.modalities)
        return min(rate, (m - 1) / m) if m else rate

    @_once
    def at_rate_cap(self) -> bool:
        """Whether the nominal rate is at or above the cap (M-1)/M, so another rate may share its masks."""
        m = len(self.modalities)
        return bool(m) and float(self.missing_rate) >= (m - 1) / m

    @_once
    def tuning(self) -> str:
        return tuning_label(self.hparams_source)

    @_once
    def config_id(self) -> str:
        """Short hash of the method's configuration (:func:`config_id`)."""
        return config_id(self["spec"])

    @_once
    def setting_key(self) -> tuple:
        """The table the record belongs to (:func:`setting_key`)."""
        return setting_key(self["spec"])


def records_of(records: Iterable[Mapping[str, Any]]) -> list[Record]:
    """``records`` as a list of :class:`Record` (those that already are, unchanged)."""
    return [Record.of(r) for r in records]
