"""From a request (selections, seeds, rates, overrides) to cell specs, and from specs to records.

``expand`` checks everything before anything trains and reports every problem at once; ``run_grid``
runs the cells that have no valid record yet, one record per cell, and never stops the grid for one
failed cell.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cells import CellOutcome, process_cell
from bench.errors import UsageError
from bench.hparams import resolve_hparams
from bench.masks import max_missing_rate
from bench.protocol import DataDescription
from bench.registry import DATASETS, METHODS, dataset_adapter, default_method, method_config
from bench.spec import CellSpec
from bench.store import read_record, record_path, reusable
from bench.workers import run_cells

__all__ = [
    "GridOutcome",
    "GridPlan",
    "GridRequest",
    "dataset_description",
    "expand",
    "not_applicable_reason",
    "parse_overrides",
    "run_grid",
]


@dataclass(frozen=True)
class GridRequest:
    methods: str = "classification"
    datasets: str = "imbalance*"
    seeds: tuple[int, ...] = (0, 1, 2)
    missing_rates: tuple[float, ...] = (0.0, 0.25, 0.5)
    epochs: int | None = None
    batch_size: int | None = None
    patience: int | None = None
    missing_on: str = "all"
    precision: str = "fp32"
    noise: str = "none"  # test-time corruption kind (bench.noise), scored at each of noise_levels
    noise_levels: tuple[float, ...] = ()
    overrides: tuple[str, ...] = ()
    data_root: Path | None = None
    tuned_from: Path | None = None  # a results directory whose tuned/ files give the hyperparameters


@dataclass
class GridPlan:
    specs: list[CellSpec]
    skipped_datasets: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: (method, dataset) -> why the method's ``applicable`` hook declined the dataset; no cells were made.
    not_applicable: dict[tuple[str, str], str] = field(default_factory=dict)


#: ``--set encoder.<modality>=<kind>`` chooses a modality's encoder instead of a method hyperparameter.
ENCODER_OVERRIDE = "encoder"
#: ``--set data.<option>=<value>`` sets an option the selected datasets declare (``DatasetAdapter.options``).
DATA_OVERRIDE = "data"
_NOT_METHODS = (ENCODER_OVERRIDE, DATA_OVERRIDE)


def parse_overrides(items: Sequence[str]) -> list[tuple[str, str, str]]:
    """``method.param=value`` (method may be a glob, ``*`` for all) -> (pattern, param, raw value)."""
    parsed = []
    for item in items:
        target, eq, value = item.partition("=")
        pattern, dot, param = target.rpartition(".")
        if not eq or not dot or not pattern or not param:
            raise UsageError(f"--set {item!r} is not of the form method.param=value (e.g. --set ogm_ge.alpha=0.5)")
        parsed.append((pattern.strip(), param.strip(), value.strip()))
    return parsed


def _method_hparams(
    name: str,
    dataset: str,
    request: GridRequest,
    overrides: list[tuple[str, str, str]],
    errors: list[str],
    encoders: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
):
    """Resolved hyperparameters and their source: defaults < tuned file (``--tuned``) < ``--set``. A tuned
    file must come from the study these cells' settings name (``bench.tune.study_name``)."""
    try:
        config = default_method(name)
        source = "default"
        mine = {param: raw for pattern, param, raw in overrides if fnmatch.fnmatchcase(name, pattern)}
        _require_finite(type(config), mine, name)
        if request.tuned_from is not None:
            from bench.tune import fixed_values, load_tuned, study_name, tuned_path

            # `tune` skips a method that does not apply to a dataset, so it has no tuned file there; its
            # cells are skipped below with the usual note instead of failing the whole run.
            if (
                not tuned_path(request.tuned_from, name, dataset).is_file()
                and not_applicable_reason(config, dataset, request.data_root) is not None
            ):
                return dataclasses.asdict(config), source
            info = DATASETS.get(dataset).info
            study = study_name(
                name,
                dataset,
                request.epochs or info.default_epochs,
                precision=request.precision,
                batch_size=request.batch_size or info.default_batch_size,
                patience=request.patience,
                encoders={m: k for m, k in (encoders or {}).items() if m in info.modalities},
                options=options,
                fixed=fixed_values(name, mine),
            )
            params, source = load_tuned(request.tuned_from, name, dataset, study)
            config = resolve_hparams(config, params)
        config = resolve_hparams(config, mine)
    except UsageError as exc:
        errors.append(str(exc))
        return None, "default"
    return dataclasses.asdict(config), (f"{source}+set" if mine and source != "default" else "set" if mine else source)


def _require_finite(config_cls: type, raw: Mapping[str, str], prefix: str) -> None:
    """``--set`` values must be finite: ``lr=inf`` passes ``lr > 0`` and ``nan`` fails every comparison, and
    either would only surface as a failed cell."""
    from bench.hparams import coerce_value

    for param, text in raw.items():
        value = coerce_value(config_cls, param, text)
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise UsageError(f"--set {prefix}.{param}={text}: not a finite number; give a finite value")


def _select(registry, selection: str, errors: list[str]) -> list[str]:
    try:
        return registry.select(selection)
    except UsageError as exc:
        errors.append(str(exc))
        return []


def _datasets_available(names: list[str], request: GridRequest, explicit: bool, plan: GridPlan, errors):
    usable = []
    for name in names:
        ok, why = DATASETS.get(name).available(request.data_root)
        if ok:
            usable.append(name)
        elif explicit:
            errors.append(f"dataset {name!r} is not available: {why}")
        else:
            plan.skipped_datasets[name] = why
    return usable


def dataset_description(
    name: str,
    data_root: Path | None,
    encoders: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> DataDescription:
    """What ``Method.build`` will be told about a dataset's cells (the training split after a validation
    split is carved, the encoder kinds chosen with ``--set encoder.<modality>=<kind>``): from the adapter's
    ``describe(data_root)`` when it has one and it can tell (nothing is loaded or prepared, so ``bench
    validate`` stays cheap), else from the data loaded once per process."""
    from bench.data import load_dataset, validation_rows, with_encoders

    adapter = dataset_adapter(name, options)
    summary = None
    if getattr(adapter, "describe", None) is not None:
        ok, why = adapter.available(data_root)
        if not ok:
            raise UsageError(f"dataset {name!r} is not available: {why}")
        summary = adapter.describe(data_root)
    if summary is not None:
        modalities, num_train = summary.modalities, summary.num_train
    else:
        loaded = load_dataset(name, data_root, options)
        modalities, num_train = loaded.modalities, len(loaded.train)
        if loaded.val is None:  # count the carved training rows from the labels alone, copying no inputs
            num_train = len(validation_rows(loaded.train.labels)[0])
    return DataDescription(with_encoders(modalities, encoders or {}), adapter.info.num_classes, num_train)


def _encoder_choices(overrides: list[tuple[str, str, str]], datasets: list[str], errors: list[str]) -> dict[str, str]:
    """``--set encoder.<modality>=<kind>``: checked against the registered encoder kinds and the modalities of
    the selected datasets. The choice goes into each cell's spec (``extra["encoders"]``), hence its identity."""
    choices = {param: raw for pattern, param, raw in overrides if pattern == ENCODER_OVERRIDE}
    if not choices:
        return {}
    from bench.nn.encoders import ENCODER_FACTORIES

    modalities = {m for d in datasets for m in DATASETS.get(d).info.modalities}
    for modality, kind in choices.items():
        if kind.split(":", 1)[0] not in ENCODER_FACTORIES:
            errors.append(
                f"--set encoder.{modality}={kind}: unknown encoder kind; known: {', '.join(sorted(ENCODER_FACTORIES))}"
            )
        if datasets and modality not in modalities:
            errors.append(
                f"--set encoder.{modality}: no selected dataset has a modality {modality!r} "
                f"(they have {', '.join(sorted(modalities))})"
            )
    return choices


def _dataset_options(overrides: list[tuple[str, str, str]], datasets: list[str], errors: list[str]) -> dict[str, dict]:
    """``--set data.<option>=<value>``: per selected dataset, the typed options (an option must be declared by
    every selected dataset, so one run never mixes datasets that took it with datasets that ignored it)."""
    from bench.hparams import coerce_value

    raw = {param: value for pattern, param, value in overrides if pattern == DATA_OVERRIDE}
    chosen: dict[str, dict] = {}
    if not raw:
        return chosen
    for name in datasets:
        adapter = DATASETS.get(name)
        declared = tuple(getattr(adapter, "options", ()))
        unknown = sorted(set(raw) - set(declared))
        if unknown:
            option = unknown[0]
            takers = [d for d in DATASETS.names() if option in getattr(DATASETS.get(d), "options", ())]
            where = f"select only datasets that have it ({', '.join(takers)})" if takers else "no dataset has it"
            errors.append(
                f"--set data.{option}: dataset {name!r} has no option {option!r} (its options: "
                f"{', '.join(declared) or 'none'}); {where}"
            )
            continue
        setting = ", ".join(f"data.{param}={value}" for param, value in sorted(raw.items()))
        try:
            _require_finite(type(adapter), raw, DATA_OVERRIDE)
            options = {param: coerce_value(type(adapter), param, value) for param, value in sorted(raw.items())}
            dataset_adapter(name, options)  # the adapter's own checks, e.g. a knob outside its range
        except (UsageError, ValueError) as exc:
            errors.append(f"--set {setting} on {name}: {exc}")
            continue
        chosen[name] = options
    return chosen


def not_applicable_reason(
    method: Any,
    dataset: str,
    data_root: Path | None,
    encoders: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> str | None:
    """The method config's ``applicable(description)`` verdict on a dataset: None when it runs there (or has
    no such hook), else its one-line reason. The data are loaded only for methods with the hook."""
    applicable = getattr(method, "applicable", None)  # optional hook applicable(description) -> None or a reason
    if applicable is None:
        return None
    try:
        description = dataset_description(dataset, data_root, encoders, options)
    except UsageError:
        raise
    except Exception:  # noqa: BLE001 - a dataset that fails to load fails its cells, with the reason recorded
        return None
    return applicable(description)


def _realised_rates(dataset: str, num_modalities: int, rates: Sequence[float], warnings: list[str]) -> list[float]:
    """The distinct rates whose masks differ: above (M-1)/M every sample keeps exactly one modality
    (bench.masks), so such a rate realises the masks of (M-1)/M and becomes that one cell, never a second
    copy of it that the tables would count twice."""
    cap = max_missing_rate(num_modalities)
    realised: list[float] = []
    for rate in rates:
        if rate > cap:
            warnings.append(
                f"{dataset}: missing rate {rate:g} exceeds {cap:.3g}, the most that keeps one of "
                f"{num_modalities} modalities per sample; it gives the masks of {cap:.3g} and runs as "
                f"that one cell"
            )
        if min(float(rate), cap) not in realised:
            realised.append(min(float(rate), cap))
    return realised


@dataclass
class Selection:
    """What a request resolves to before any cell is built: the methods and available datasets, the encoder
    and dataset options chosen with ``--set``, and every (method, dataset) pair's hyperparameters and source."""

    methods: list[str]
    datasets: list[str]
    encoders: dict[str, str]
    dataset_options: dict[str, dict]
    hparams: dict[tuple[str, str], tuple[dict | None, str]]


def expand(request: GridRequest) -> GridPlan:
    """All cell specs of the request; raises one UsageError listing every problem found."""
    plan = GridPlan([])
    selection = resolve_selection(request, plan)
    build_cells(selection, request, plan)
    return plan


def _raise_all(errors: list[str]) -> None:
    if errors:
        raise UsageError(errors[0] if len(errors) == 1 else f"{len(errors)} problems: " + " | ".join(errors))


def resolve_selection(request: GridRequest, plan: GridPlan) -> Selection:
    """Check the request and resolve its selections; every problem found goes into one UsageError. Datasets
    left out because they are unavailable are noted in ``plan.skipped_datasets``."""
    errors: list[str] = []
    overrides = []
    try:
        overrides = parse_overrides(request.overrides)
    except UsageError as exc:
        errors.append(str(exc))
    methods = _select(METHODS, request.methods, errors)
    for pattern, _, _ in overrides:
        if pattern not in _NOT_METHODS and methods and not any(fnmatch.fnmatchcase(m, pattern) for m in methods):
            errors.append(f"--set targets {pattern!r}, which matches no selected method ({', '.join(methods)})")
    explicit = not any(part.strip() == "all" or any(c in part for c in "*?[") for part in request.datasets.split(","))
    datasets = _datasets_available(_select(DATASETS, request.datasets, errors), request, explicit, plan, errors)
    if not datasets and not errors:
        errors.append(
            "no selected dataset is available: " + "; ".join(f"{k}: {v}" for k, v in plan.skipped_datasets.items())
        )
    errors += _request_value_problems(request)
    encoders = _encoder_choices(overrides, datasets, errors)
    dataset_options = _dataset_options(overrides, datasets, errors)
    overrides = [o for o in overrides if o[0] not in _NOT_METHODS]
    hparams = {
        (m, d): _method_hparams(m, d, request, overrides, errors, encoders, dataset_options.get(d))
        for m in methods
        for d in datasets
    }
    _raise_all(errors)
    return Selection(methods, datasets, encoders, dataset_options, hparams)


def _request_value_problems(request: GridRequest) -> list[str]:
    """The request's plain values out of range: rates, noise flags, epochs, batch size, patience, seeds."""
    problems = [
        f"missing rate {rate} is outside [0, 1); use values like 0,0.3,0.5"
        for rate in request.missing_rates
        if not 0.0 <= rate < 1.0
    ]
    if (request.noise == "none") != (not request.noise_levels):
        problems.append("--noise and --noise-levels go together: give a noise kind to score noise levels")
    for name, value in (("epochs", request.epochs), ("batch size", request.batch_size), ("patience", request.patience)):
        if value is not None and value < 1:
            problems.append(f"{name} must be >= 1, got {value}")
    from bench.tune import TUNING_SEEDS

    reserved = sorted(set(request.seeds) & set(TUNING_SEEDS))
    if reserved:
        problems.append(f"seeds {reserved} are reserved for tuning; evaluate on others")
    return problems


def build_cells(selection: Selection, request: GridRequest, plan: GridPlan) -> None:
    """Append one spec per (method, dataset, seed, realised missing rate) to ``plan``; a method whose
    ``applicable`` hook declines a dataset gets no cells there, and a note."""
    for d in selection.datasets:
        options = selection.dataset_options.get(d, {})
        info = dataset_adapter(d, options).info  # its version names the options
        rates = _realised_rates(d, len(info.modalities), request.missing_rates, plan.warnings)
        chosen = {name: kind for name, kind in selection.encoders.items() if name in info.modalities}
        extra = {key: value for key, value in (("encoders", chosen), ("dataset_options", options)) if value}
        for m in selection.methods:
            hparams, source = selection.hparams[(m, d)]
            reason = not_applicable_reason(method_config(m, hparams), d, request.data_root, chosen, options)
            if reason is not None:
                plan.not_applicable[(m, d)] = reason
                plan.warnings.append(f"{m} does not apply to {d}, its cells are skipped: {reason}")
                continue
            plan.specs += [
                CellSpec(
                    method=m,
                    hparams=hparams,
                    dataset=d,
                    dataset_version=info.version,
                    seed=seed,
                    missing_rate=float(rate),
                    epochs=request.epochs or info.default_epochs,
                    batch_size=request.batch_size or info.default_batch_size,
                    missing_on=request.missing_on,
                    patience=request.patience,
                    hparams_source=source,
                    precision=request.precision,
                    noise=request.noise,
                    noise_levels=request.noise_levels,
                    extra=extra,
                )
                for seed in request.seeds
                for rate in rates
            ]


@dataclass
class GridOutcome:
    computed: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    recomputed: list[str] = field(default_factory=list)

    def add(self, cell: CellOutcome) -> None:
        if cell.status == "cached":
            self.skipped += 1
        elif cell.status == "busy":
            self.busy.append(cell.label)
        else:
            self.computed += 1
            if cell.status != "ok":
                self.failed.append(f"{cell.label}: {cell.reason}")
        if cell.problem:
            self.recomputed.append(cell.problem)


def run_grid(
    specs: Sequence[CellSpec],
    results_dir: Path,
    *,
    data_root: Path | None,
    overwrite: bool = False,
    device: str | None = None,
    jobs: int = 1,
    threads: int = 1,
    progress: Callable[[CellSpec, str], None] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    pool: Any = None,
    outputs: Any = None,
) -> GridOutcome:
    """Run every spec without a valid record (all of them with ``overwrite``).

    ``jobs > 1`` runs that many cells at once, this process and ``jobs - 1`` worker processes (``threads`` torch
    threads each; ``pool``: workers already started by :func:`bench.workers.start_workers`, which the caller
    shuts down; see :func:`bench.workers.run_cells`). Every cell is
    seeded on its own, so the records are the same as a sequential run's. ``executor="ray"`` runs each
    cell as a Ray task instead (see ``bench.executors``; ``ray_address`` None starts a local instance).
    """
    outcome = GridOutcome()
    options = {"data_root": data_root, "overwrite": overwrite, "device": device}
    if outputs:  # run --save-models / --log-samples / --logger (bench.artifacts.CellOutputs)
        if executor == "ray":
            raise UsageError(
                "--save-models, --log-samples and --logger run with the local executor; drop --executor ray"
            )
        options["outputs"] = outputs

    def done(spec: CellSpec, cell: CellOutcome) -> None:
        outcome.add(cell)
        if progress:
            progress(spec, cell.status)

    if executor == "ray":
        from bench.executors import run_cells_on_ray

        run_cells_on_ray(specs, results_dir, address=ray_address, threads=threads, on_outcome=done, **options)
        return outcome
    if executor != "local":
        raise UsageError(f"unknown executor {executor!r}; use 'local' or 'ray'")
    if jobs <= 1:
        for spec in specs:
            done(spec, process_cell(spec, results_dir, **options))
        return outcome
    # Cells with a valid record are skipped here at once; the others run jobs at a time, this process being one
    # of the runners (bench.workers.run_cells; Ctrl-C ends the workers' running cells too).
    todo = []
    for spec in specs:
        path = record_path(results_dir, spec)
        if not overwrite and path.exists() and reusable(read_record(path)):  # a failed record is retried
            done(spec, CellOutcome(spec.label, "cached"))
        else:
            todo.append(spec)
    run_cells(todo, process_cell, results_dir, jobs=jobs, threads=threads, pool=pool, done=done, **options)
    return outcome
