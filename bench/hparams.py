"""Hyperparameters: the shared optimisation fields every method inherits, the ranges ``bench tune`` searches,
and typed ``--set`` parsing."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from bench.errors import UsageError

__all__ = [
    "SHARED_SEARCH_RANGES",
    "Choice",
    "IntRange",
    "LogUniform",
    "MethodConfig",
    "SearchRanges",
    "Uniform",
    "check_at_least",
    "check_epoch_window",
    "check_fraction",
    "check_positive",
    "coerce_value",
    "field_names",
    "resolve_hparams",
    "suggest",
]


def check_epoch_window(start: int, end: int) -> None:
    """An inclusive epoch window of a method's modulation (OGM-GE, AGM, PMR) must satisfy 0 <= start <= end."""
    if not 0 <= start <= end:
        raise ValueError(
            f"need 0 <= modulation_start <= modulation_end, got modulation_start={start}, modulation_end={end}"
        )


def check_positive(config: Any, *names: str) -> None:
    """Each named field of ``config`` must be > 0 (a NaN fails too); the error names the first that is not."""
    for name in names:
        if not getattr(config, name) > 0:
            raise ValueError(f"{name} must be > 0, got {name}={getattr(config, name)}")


def check_at_least(config: Any, minimum: int, *names: str) -> None:
    """Each named field of ``config`` must be >= ``minimum``; the error names the first that is not. (A NaN
    passes, as the comparison is false; :func:`check_positive` is the check that rejects it.)"""
    for name in names:
        if getattr(config, name) < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {name}={getattr(config, name)}")


def check_fraction(config: Any, *names: str) -> None:
    """Each named field of ``config`` must lie strictly between 0 and 1 (a share, a probability threshold)."""
    for name in names:
        if not 0 < getattr(config, name) < 1:
            raise ValueError(f"{name} must be in (0, 1), got {name}={getattr(config, name)}")


# --------------------------------------------------------------------------------------------------
# Search ranges: what `bench tune` suggests for a field, as Optuna's define-by-run ``trial.suggest_*`` calls


@dataclass(frozen=True)
class LogUniform:
    """A float drawn log-uniformly from [low, high]."""

    low: float
    high: float

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=True)


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from [low, high]."""

    low: float
    high: float

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high)


@dataclass(frozen=True)
class IntRange:
    """An integer drawn uniformly from [low, high], both included."""

    low: int
    high: int

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high)


class Choice:
    """One of a few values: ``Choice(10, 20, 1000)``."""

    def __init__(self, *options: Any) -> None:
        self.options = options

    def __repr__(self) -> str:
        return f"Choice{self.options!r}"

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.options))


#: Field name -> its range, in the order the trial suggests them.
SearchRanges = Mapping[str, LogUniform | Uniform | IntRange | Choice]

#: lr and weight decay, log-uniform around the official values (1e-3, 1e-4); every method searches them first.
SHARED_SEARCH_RANGES: SearchRanges = {"lr": LogUniform(1e-4, 1e-1), "weight_decay": LogUniform(1e-5, 1e-3)}


def suggest(trial: Any, ranges: SearchRanges) -> dict[str, Any]:
    """Field -> the trial's suggestion for each range, suggested in the mapping's order."""
    return {name: choice.suggest(trial, name) for name, choice in ranges.items()}


@dataclass(frozen=True)
class MethodConfig:
    """Optimisation hyperparameters shared by every method.

    Defaults are the common training setup of the MLA repository, which the MLA paper used for all four
    methods: SGD, momentum 0.9, weight decay 1e-4, lr 1e-3, StepLR(step 70 epochs, gamma 0.1)
    (Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation ``main.py``; the OGM-GE repo's
    ``main.py`` uses the same). Epochs and batch size belong to the cell, not to the method, so that every
    method of a table trains on the same budget.

    A subclass adds its own fields and the hooks of :class:`bench.protocol.Method` (``build``, ``loss``,
    ``predict``) and of :class:`bench.protocol.OptionalHooks` it needs; the class attributes below are the
    defaults of the contract's optional ones. ``search_ranges`` names the subclass's own searched fields.
    """

    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr_step: int = 70
    lr_gamma: float = 0.1

    #: The loop zero-fills the inputs of missing modalities before the method sees a batch.
    zero_fill_missing: ClassVar[bool] = True
    #: What the method learns, read by the loop (``bench.loop.TASKS``): ``"classification"`` (``predict`` gives
    #: logits; accuracy selects the epoch) or ``"retrieval"`` (``predict`` gives per-modality embeddings;
    #: mean Recall@1 selects the epoch; see :mod:`bench.retrieval`).
    task: ClassVar[str] = "classification"
    #: True only for methods whose per-modality columns are modalities trained alone (the unimodal baselines).
    per_modality_trained_alone: ClassVar[bool] = False
    #: Field -> value that a stored spec without the field re-runs with (bench.protocol.OptionalHooks).
    legacy_hparams: ClassVar[Mapping[str, Any]] = {}
    #: ``bench tune``'s ranges for the method's own fields, suggested after :data:`SHARED_SEARCH_RANGES`:
    #: ``{"alpha": LogUniform(0.05, 3.0), "modulation_end": Choice(30, 50, 1000)}``.
    search_ranges: ClassVar[SearchRanges] = {}

    def __post_init__(self) -> None:
        _check_types(self)
        check_positive(self, "lr")
        check_at_least(self, 0, "weight_decay")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got momentum={self.momentum}")
        if self.lr_step < 1:
            raise ValueError(f"lr_step must be >= 1 epoch, got lr_step={self.lr_step}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must be in (0, 1], got lr_gamma={self.lr_gamma}")

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Log-uniform lr and weight decay around the official values, then the class's ``search_ranges``."""
        return suggest(trial, {**SHARED_SEARCH_RANGES, **cls.search_ranges})


def field_names(config_cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(config_cls))


def _field_types(config_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def _check_types(config: Any) -> None:
    """Reject values of the wrong type early, with the field's name (frozen dataclasses do not check)."""
    for name, tp in _field_types(type(config)).items():
        value = getattr(config, name)
        if not _matches(value, tp):
            raise ValueError(f"{name} must be {_describe(tp)}, got {value!r}")


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", ())):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        return isinstance(value, tuple) and all(_matches(v, args[0]) for v in value)
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a comma-separated list of {_describe(typing.get_args(tp)[0])}"
    if origin is not None:
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def coerce_value(config_cls: type, name: str, raw: Any) -> Any:
    """Turn a ``--set`` string (or a JSON value from a tuned file) into the field's type."""
    types = _field_types(config_cls)
    if name not in types:
        raise UsageError(f"{config_cls.__name__} has no hyperparameter {name!r}; it has: {', '.join(sorted(types))}")
    tp = types[name]
    value = _coerce(raw, tp) if isinstance(raw, str) else raw
    if isinstance(value, list):
        value = tuple(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not _matches(value, tp):
        raise UsageError(f"{config_cls.__name__}.{name} must be {_describe(tp)}, got {raw!r}")
    return value


def _coerce(raw: str, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return raw
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        return tuple(_coerce(part.strip(), inner) for part in raw.split(",") if part.strip())
    if origin is not None:  # Optional / Union: first alternative that parses
        for arg in typing.get_args(tp):
            value = _coerce(raw, arg)
            if _matches(value, arg):
                return value
        return raw
    if tp is type(None):
        return None if raw.lower() in ("none", "null") else raw
    if tp is bool:
        lowered = raw.lower()
        return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(lowered, raw)
    for kind in (int, float):
        if tp is kind:
            try:
                return kind(raw)
            except ValueError:
                return raw
    return raw


def resolve_hparams(default: Any, overrides: Mapping[str, Any]) -> Any:
    """``dataclasses.replace`` with typed coercion and a one-line error for bad values."""
    cls = type(default)
    values = {name: coerce_value(cls, name, raw) for name, raw in overrides.items()}
    try:
        return dataclasses.replace(default, **values)
    except ValueError as exc:
        raise UsageError(f"bad hyperparameter for {cls.__name__}: {exc}") from None
