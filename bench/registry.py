"""Plugin registries filled from the entry-point groups ``bench.methods`` and ``bench.datasets``.

Built-in methods and datasets register through the same groups as third-party packages (see
``pyproject.toml``), so the harness has no list of names of its own. Entry points are loaded lazily: a
plugin that fails to import is shown as broken by ``bench ls`` and fails only a run that selects it.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from bench.errors import UsageError

__all__ = ["DATASETS", "METHODS", "Registry", "dataset_adapter", "default_method", "method_config", "variant"]


@dataclass
class _Entry:
    name: str
    origin: str
    entry_point: EntryPoint | None = None
    obj: Any = None
    error: str | None = None
    loaded: bool = False


class Registry:
    """Name -> plugin object, with globs, close-match errors and lazy loading."""

    def __init__(self, kind: str, group: str, prefix_group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        #: Entry points ``prefix = "module:resolver"``: a name ``prefix:rest`` that is not registered is resolved
        #: by ``resolver(rest)`` (one object, registered under the whole name), e.g. ``hf:<folder>``.
        self.prefix_group = prefix_group
        self._entries: dict[str, _Entry] | None = None

    # -- filling ----------------------------------------------------------------------------------
    def _all(self) -> dict[str, _Entry]:
        if self._entries is None:
            self._entries = {}
            for ep in entry_points(group=self.group):
                dist = getattr(ep, "dist", None)
                origin = f"{dist.name} {dist.version}" if dist is not None else "unknown"
                self._add(_Entry(ep.name, origin, entry_point=ep))
        return self._entries

    def _add(self, entry: _Entry) -> None:
        entries = self._entries if self._entries is not None else self._all()
        if entry.name in entries:
            raise UsageError(
                f"two {self.kind}s are registered as {entry.name!r} "
                f"({entries[entry.name].origin} and {entry.origin}); uninstall or rename one"
            )
        entries[entry.name] = entry

    def register(self, name: str, obj: Any, *, origin: str = "runtime") -> None:
        """Register an object directly (tests, notebooks). Duplicate names raise."""
        self._add(_Entry(name, origin, obj=obj, loaded=True))

    def unregister(self, name: str) -> None:
        self._all().pop(name, None)

    # -- lookup -----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._all())

    def origin(self, name: str) -> str:
        return self._all()[name].origin

    def _load(self, entry: _Entry) -> None:
        if entry.loaded:
            return
        entry.loaded = True
        try:
            entry.obj = entry.entry_point.load()  # type: ignore[union-attr]
        except Exception as exc:  # a broken plugin must not break the others
            entry.error = f"{type(exc).__name__}: {exc}".splitlines()[0]

    def error(self, name: str) -> str | None:
        """None when the plugin loads, else its one-line import error."""
        entry = self._all()[name]
        self._load(entry)
        return entry.error

    def _resolve_prefixed(self, name: str) -> bool:
        """Register ``prefix:rest`` from the resolver the prefix names; False when no prefix applies."""
        prefix, sep, rest = name.partition(":")
        if not sep or self.prefix_group is None:
            return False
        for ep in entry_points(group=self.prefix_group):
            if ep.name == prefix:
                dist = getattr(ep, "dist", None)
                origin = f"{prefix}: resolver of {dist.name if dist is not None else 'unknown'}"
                self._add(_Entry(name, origin, obj=ep.load()(rest), loaded=True))  # a UsageError says why not
                return True
        return False

    def prefixes(self) -> list[str]:
        return sorted(ep.name for ep in entry_points(group=self.prefix_group)) if self.prefix_group else []

    def get(self, name: str) -> Any:
        entries = self._all()
        if name not in entries and not self._resolve_prefixed(name):
            raise UsageError(self._unknown_message(name))
        entry = entries[name]
        self._load(entry)
        if entry.error is not None:
            raise UsageError(
                f"{self.kind} {name!r} ({entry.origin}) failed to load: {entry.error}; "
                f"fix or reinstall that package, or leave {name!r} out of the selection"
            )
        return entry.obj

    def _unknown_message(self, name: str) -> str:
        names = self.names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        prefixes = f" (or {', '.join(f'{p}:<...>' for p in self.prefixes())})" if self.prefixes() else ""
        return f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(names) or '(none installed)'}{prefixes}"

    def select(self, selection: str | Iterable[str]) -> list[str]:
        """Expand ``all``, comma lists and globs (``ogm*``) into registered names, in the order given.

        ``all`` and globs skip broken plugins (``bench ls`` shows them); naming one explicitly fails. A part
        that names a task family (``classification``, ``retrieval``) and no registered entry selects every
        entry whose class attribute ``task`` is that family (methods: :class:`bench.hparams.MethodConfig`).
        """
        parts = selection.split(",") if isinstance(selection, str) else list(selection)
        parts = [p.strip() for p in parts if p.strip()]
        if not parts:
            raise UsageError(f"empty {self.kind} selection; give names, globs or 'all'")
        chosen: list[str] = []
        for part in parts:
            if part in TASK_FAMILIES and part not in self.names():
                matches = [n for n in self.names() if self.error(n) is None and _task_family(self.get(n)) == part]
                if not matches:
                    raise UsageError(
                        f"no {self.kind} of the {part} family is installed. Available: {', '.join(self.names())}"
                    )
            elif part == "all" or any(ch in part for ch in "*?["):
                pattern = "*" if part == "all" else part
                matches = [n for n in self.names() if fnmatch.fnmatchcase(n, pattern) and self.error(n) is None]
                if not matches:
                    raise UsageError(f"no {self.kind} matches {part!r}. Available: {', '.join(self.names())}")
            else:
                self.get(part)
                matches = [part]
            chosen.extend(m for m in matches if m not in chosen)
        return chosen


def _task_family(obj: Any) -> str:
    """The ``task`` class attribute of a registered class, or of the class a :func:`variant` presets."""
    cls = getattr(obj, "func", obj)  # functools.partial keeps the class in .func
    return getattr(cls, "task", "classification")  # optional class attribute (bench.protocol.OptionalHooks)


#: Selection words for a task family (``--methods classification``); see :meth:`Registry.select`.
TASK_FAMILIES = ("classification", "retrieval")

METHODS = Registry("method", "bench.methods")
DATASETS = Registry("dataset", "bench.datasets", prefix_group="bench.dataset_prefixes")


def dataset_adapter(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The registered dataset adapter, configured with a cell's ``extra["dataset_options"]`` (already
    checked and typed by the grid; see ``DatasetAdapter.options`` in bench.protocol)."""
    adapter = DATASETS.get(name)
    if not options:
        return adapter
    key = (name, id(adapter), tuple(sorted(options.items())))
    if key not in _CONFIGURED:  # one instance per setting and process: its caches (e.g. a Bayes oracle) persist
        _CONFIGURED[key] = dataclasses.replace(adapter, **options)
    return _CONFIGURED[key]


_CONFIGURED: dict[tuple, Any] = {}


def variant(config_cls: Callable[..., Any], **overrides: Any) -> Callable[[], Any]:
    """A registered name for a method with some hyperparameters preset (e.g. an ablation row).

    The result is what an entry point may point to instead of the class itself.
    """
    factory = functools.partial(config_cls, **overrides)
    factory.__doc__ = f"{getattr(config_cls, '__name__', config_cls)} with {overrides}"
    return factory


def default_method(name: str) -> Any:
    """The registered method's default configuration (a frozen dataclass instance)."""
    factory = METHODS.get(name)
    try:
        return factory()
    except (TypeError, ValueError) as exc:
        raise UsageError(f"method {name!r} cannot be built with its defaults: {exc}") from None


def method_config(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """The registered method's configuration with ``params`` applied over its defaults (checked and coerced by
    :func:`bench.hparams.resolve_hparams`): the one place a method name and hyperparameters become a config."""
    from bench.hparams import resolve_hparams

    return resolve_hparams(default_method(name), dict(params or {}))
