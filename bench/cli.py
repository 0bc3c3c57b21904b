"""``python -m bench {run,validate,ls,table,data}``: parse arguments into a request, print, own exit codes.

Exit codes: 0 success, 1 some cells failed (their records say why), 2 bad input (one line on stderr),
130 interrupted (finished cells are kept; the same command resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.errors import UsageError

__all__ = ["main"]

DEFAULT_RESULTS = Path("results")
LEADERBOARD_FILE = "leaderboard.md"
PAPERS_FILE = "papers.md"


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see python -m {self.prog} --help)")  # prog: "bench" or "bench run"


#: Seeds go to torch.manual_seed and numpy's generators, which take integers in [0, 2**64).
MAX_SEED = 2**64 - 1


def _items(text: str, flag: str, example: str) -> list[str]:
    items = [v.strip() for v in text.split(",")]
    if not text.strip():
        raise UsageError(f"{flag} is empty; give {example}")
    if "" in items:
        raise UsageError(f"{flag} {text!r} has an empty item; give {example}")
    return items


def _number_list(text: str, flag: str, number: type, example: str, what: str) -> tuple:
    """The comma-separated ``number`` values of ``text``; ``example`` says what to give, ``what`` what a list of
    them is (the messages of an empty list, an empty item and an item that is not a number)."""
    try:
        return tuple(number(v) for v in _items(text, flag, example))
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a comma-separated list of {what}") from None


def _int_list(text: str) -> tuple[int, ...]:
    values = _number_list(text, "--seeds", int, "integers like 0,1,2", "integers (e.g. --seeds 0,1,2)")
    for value in values:
        if not 0 <= value <= MAX_SEED:
            raise UsageError(
                f"--seeds: {value} is outside [0, 2**64 - 1], the seeds torch and numpy accept; "
                "use small integers like 0,1,2"
            )
    return values


def _rate_list(text: str) -> tuple[float, ...]:
    return _number_list(text, "--missing-rates", float, "numbers in [0, 1) like 0,0.5", "numbers (e.g. 0,0.5)")


def _results_dir(args: argparse.Namespace) -> None:
    """``--results`` must be a directory or not exist yet (it is created); a file there is bad input."""
    path = Path(args.results)
    if path.exists() and not path.is_dir():
        raise UsageError(
            f"--results {args.results!r} is a file, not a directory; give a directory for the records and tables"
        )


def _check_device(name: str | None) -> None:
    """``--device``: a torch device this machine has, checked before any cell runs."""
    if name is None:
        return
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {name}: this machine has no CUDA device; use --device cpu")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        return
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    try:
        torch.empty(1, device=device)
    except Exception:  # noqa: BLE001 - any backend error means the device is unusable here
        raise UsageError(f"--device {name}: this machine cannot allocate on it; use --device cpu") from None


def _data_root(value: str | None) -> Path | None:
    raw = value if value is not None else os.environ.get("BENCH_DATA")
    if not raw:
        return None
    root = Path(raw).expanduser()
    if not root.is_dir():
        source = "--data-root" if value is not None else "BENCH_DATA"
        raise UsageError(
            f"data root {raw!r} (from {source}) is not a directory; point it at the folder holding the datasets"
        )
    return root


def _add_grid_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--methods",
        default="classification",
        help="names, globs (ogm*), a task family (classification, retrieval) or 'all' (default: classification)",
    )
    p.add_argument("--datasets", default="imbalance*", help="names, globs or 'all' (default: imbalance*)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated integers (default: 0,1,2)")
    p.add_argument("--missing-rates", default="0,0.25,0.5", help="comma-separated rates in [0, 1)")
    p.add_argument(
        "--missing-on", choices=("all", "test"), default="all", help="mask train+val+test (all) or only val+test (test)"
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16 autocasts forward passes (CPU and CUDA); recorded in every cell's spec",
    )
    p.add_argument(
        "--noise",
        choices=("none", "gaussian", "salt_pepper"),
        default="none",
        help="also score the selected model on test data corrupted at each --noise-levels (QMF's "
        "low-quality setting; token modalities lose words); training is unchanged",
    )
    p.add_argument("--noise-levels", help="noise levels in [0, 10] for --noise (default: 0,5,10, as QMF)")
    p.add_argument("--epochs", type=int, help="epochs per cell (default: the dataset's)")
    p.add_argument("--batch-size", type=int, help="training batch size (default: the dataset's)")
    p.add_argument("--patience", type=int, help="stop after this many epochs without a better validation score")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="METHOD.PARAM=VALUE",
        help="override a hyperparameter; METHOD may be a glob, e.g. '*.lr=0.01' (repeatable); "
        "'encoder.MODALITY=KIND' chooses a modality's encoder, e.g. encoder.audio=spectrogram_resnet18; "
        "'data.OPTION=VALUE' sets a dataset option, e.g. data.coverage=0.9 (imbalance_2m/3m)",
    )
    p.add_argument("--data-root", help="folder with the real datasets (default: $BENCH_DATA)")


def _request(args: argparse.Namespace, *, tuned: bool | None = None):
    from bench.grid import GridRequest

    if tuned is None:
        tuned = getattr(args, "tuned", False) or getattr(args, "tune", None) is not None
    return GridRequest(
        tuned_from=Path(args.results) if tuned else None,
        methods=args.methods,
        datasets=args.datasets,
        seeds=_int_list(args.seeds),
        missing_rates=_rate_list(args.missing_rates),
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        missing_on=args.missing_on,
        overrides=tuple(args.overrides),
        precision=args.precision,
        noise=args.noise,
        noise_levels=_noise_levels(args),
        data_root=_data_root(args.data_root),
    )


def _noise_levels(args: argparse.Namespace) -> tuple[float, ...]:
    from bench.noise import parse_levels

    if args.noise == "none":
        if args.noise_levels is not None:
            raise UsageError("--noise-levels needs a noise kind: add --noise gaussian or --noise salt_pepper")
        return ()
    try:
        return parse_levels(args.noise_levels if args.noise_levels is not None else "0,5,10")
    except ValueError as exc:
        raise UsageError(f"--noise-levels {args.noise_levels!r}: {exc}") from None


def _plan(args: argparse.Namespace, *, tuned: bool | None = None):
    from bench.grid import expand

    plan = expand(_request(args, tuned=tuned))
    if not getattr(args, "quiet", False):  # -q: errors and the final summary only
        for name, why in plan.skipped_datasets.items():
            print(f"skipped dataset {name}: {why}", file=sys.stderr)
        for warning in plan.warnings:
            print(f"note: {warning}", file=sys.stderr)
    return plan


def cmd_validate(args: argparse.Namespace) -> int:
    plan = _plan(args)
    axes = {k: sorted({getattr(s, k) for s in plan.specs}) for k in ("method", "dataset", "seed", "missing_rate")}
    print(f"ok: {len(plan.specs)} cells = " + " x ".join(f"{len(v)} {k}s" for k, v in axes.items()))
    if plan.not_applicable:  # the methods' applicable hooks declined these pairs (the notes above say why)
        pairs = ", ".join(f"{m} on {d}" for m, d in plan.not_applicable)
        print(f"not applicable, no cells (see the notes): {pairs}")
    return 0


def _write_tables(results_dir: Path, *, check: bool = False) -> tuple[int, Sequence[dict], list[Path]]:
    """Regenerate (or, with ``check``, compare) leaderboard.md, README.md and the plots of a results dir.
    -> (exit status, the valid records with capped-rate twins dropped (bench.tables.common.RecordSet), the
    files written). ``check`` fails on stale files and on damaged records (unreadable, truncated, or edited so
    that their checksum no longer matches: bench.store)."""
    from bench.store import atomic_write_text, iter_records
    from bench.tables.common import drop_capped_duplicates, split_by_task
    from bench.tables.forked import in_child
    from bench.tables.leaderboard import leaderboard, results_readme
    from bench.tables.papers import REPORTED_FILE, papers_table, read_reported
    from bench.tables.plots import (
        cd_diagram_names,
        cd_diagrams,
        cd_rankings,
        dynamics_curves,
        dynamics_plot_names,
        dynamics_plots,
        missing_rate_plots,
        plot_names,
        sweep_plot_names,
        sweep_plots,
    )
    from bench.tables.regenerate import SCRIPT_FILE, regenerate_script

    records, problems = [], []
    for item in iter_records(results_dir):
        (records if isinstance(item, dict) else problems).append(item)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    # One frozen set of records for the tables (capped-rate twins dropped), so what several tables need is
    # computed once on it (bench.tables.common.RecordSet); the plots and the script read the records as they are.
    tabled = drop_capped_duplicates(records)
    # What the leaderboard shares with the other pages is computed first; then, at lab scale, the
    # leaderboard is built in a forked child while this process builds the rest (bench.tables.forked).
    rankings = cd_rankings(tabled)
    leaderboard_text = in_child(leaderboard, tabled)
    plotted = split_by_task(records)[0]  # the accuracy plots show classification records only
    # computed once: both the results page (figure names) and the figures need them
    curves = dynamics_curves(plotted)
    readme = results_readme(
        tabled,
        plots=[
            (f"plots/{name}", caption)
            for name, caption in plot_names(plotted)
            + sweep_plot_names(plotted)
            + cd_diagram_names(records, rankings=rankings)
        ],
        dynamics=[(f"plots/{n}", c) for n, c in dynamics_plot_names(plotted, curves=curves)],
    )
    script = regenerate_script(records)
    pages = {LEADERBOARD_FILE: leaderboard_text(), "README.md": readme, SCRIPT_FILE: script}
    if (results_dir / REPORTED_FILE).exists():
        pages[PAPERS_FILE] = papers_table(records, read_reported(results_dir / REPORTED_FILE))
    if check and problems:
        print(
            f"{len(problems)} damaged record(s) under {results_dir / 'records'} (first: {problems[0]}); the "
            "tables would silently leave them out: restore them, or rerun their cells (python -m bench run "
            "recomputes a damaged record)",
            file=sys.stderr,
        )
        return 1, tabled, []
    if check:
        stale = [
            name
            for name, content in pages.items()
            if not (results_dir / name).exists() or (results_dir / name).read_text(encoding="utf-8") != content
        ]
        if stale:
            print(
                f"{', '.join(str(results_dir / n) for n in stale)} differ from what {results_dir}/records "
                f"generates; run: python -m bench table --results {results_dir}",
                file=sys.stderr,
            )
            return 1, tabled, []
        print(f"{', '.join(str(results_dir / n) for n in pages)} match their {len(records)} records")
        return 0, tabled, []
    for name, content in pages.items():
        atomic_write_text(results_dir / name, content)
    plots_dir = results_dir / "plots"
    drawn = missing_rate_plots(plotted, plots_dir)
    if drawn is None:
        print("note: matplotlib is not installed, plots were not redrawn", file=sys.stderr)
        return 0, tabled, [results_dir / name for name in pages]
    drawn += (dynamics_plots(plotted, plots_dir, curves=curves) or []) + (sweep_plots(plotted, plots_dir) or [])
    drawn += cd_diagrams(records, plots_dir, rankings=rankings) or []  # one per track and kind of hyperparameters
    for stale in set(plots_dir.glob("*.png")) - set(drawn):
        stale.unlink()  # a plot of a setting that no longer has records
    return 0, tabled, [results_dir / name for name in pages] + sorted(drawn)


def cmd_table(args: argparse.Namespace) -> int:
    results = Path(args.results)
    if not results.is_dir():
        raise UsageError(
            f"--results {args.results!r}: no such directory; point it at a results directory (one holding records/)"
        )
    status, records, written = _write_tables(results, check=args.check)
    if not args.check:
        # The short summary that run prints, and where the tables are; the full tables are in the files.
        from bench.tables.leaderboard import run_summary

        print(run_summary(records), end="")
        pages = [p for p in written if p.suffix != ".png"]
        plots = len(written) - len(pages)
        print(
            f"wrote {', '.join(str(p) for p in pages)}"
            + (f" and {plots} plots in {results / 'plots'}" if plots else "")
        )
    return status


class EpochProgress:
    """The ``progress`` logger (``bench.loggers`` entry point) that ``run -v`` adds: one line per epoch of every
    cell that trains, on stderr."""

    def __init__(self, results_dir: Path, spec) -> None:
        self.label, self.epochs = spec.label, spec.epochs

    def log_epoch(self, entry: dict) -> None:
        print(
            f"  {self.label} epoch {entry['epoch'] + 1}/{self.epochs}: train loss {entry['train_loss']:.4f}, "
            f"validation {entry['val_score']:.4f}",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        pass


def _progress_bar(total: int, *, quiet: bool = False):
    from tqdm import tqdm

    # Always shown; where stderr is not a terminal (CI logs) it updates every 30 s instead of continuously.
    # ``delay``: nothing is drawn for the first second, so an early one-line error stays one line.
    bar = tqdm(
        total=total,
        unit="cell",
        file=sys.stderr,
        dynamic_ncols=True,
        delay=1.0,
        mininterval=0.5 if sys.stderr.isatty() else 30.0,
        disable=quiet,
    )

    def update(spec, status: str) -> None:
        bar.set_postfix_str(f"{spec.label} {status}", refresh=False)
        bar.update(1)

    return bar, update


def _set_data_workers(args: argparse.Namespace) -> None:
    """``--data-workers N`` as ``BENCH_DATA_WORKERS``, which ``--jobs`` workers (and Ray tasks) inherit; a bad
    value of either is reported now, not from inside the first streamed cell."""
    from bench.data import data_workers

    if args.data_workers is not None:
        if args.data_workers < 0:
            raise UsageError(f"--data-workers must be >= 0, got {args.data_workers}")
        os.environ["BENCH_DATA_WORKERS"] = str(args.data_workers)
    data_workers()


def _warn_bf16(args: argparse.Namespace) -> None:
    """One line when bf16 will run on a CPU without native bf16 or under the AVX2 pin (bench.kernels)."""
    from bench.kernels import bf16_warning

    line = bf16_warning(args.precision, getattr(args, "device", None))
    if line:
        print(line, file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from bench.workers import start_workers

    _set_data_workers(args)
    _warn_bf16(args)
    if args.verbose:  # per-epoch lines, through the logger hook every executor runs
        args.logger = ",".join(name for name in (args.logger, "progress") if name)
    if args.threads < 1 or args.jobs < 1:
        raise UsageError(f"--threads and --jobs must be >= 1, got --threads {args.threads} --jobs {args.jobs}")
    _check_device(args.device)
    if args.tune is not None:
        _plan(args, tuned=False)  # report bad input before spending time on tuning
        _tune(args, trials=args.tune)
    parallel = args.jobs > 1 and args.executor == "local"
    # Workers start importing torch now, while this process plans the grid (which imports it too).
    with start_workers(args.jobs, args.threads) if parallel else contextlib.nullcontext() as pool:
        plan = _plan(args)
        import torch

        from bench.grid import run_grid
        from bench.store import iter_records
        from bench.tables.leaderboard import run_summary

        torch.set_num_threads(args.threads)
        results = Path(args.results)
        if not args.overwrite:
            from bench.store import failed_cells

            retry = failed_cells(results, plan.specs)
            if retry and not args.quiet:
                print(
                    f"retrying {len(retry)} cells whose records say they failed (--overwrite recomputes every cell)",
                    file=sys.stderr,
                )
        bar, update = _progress_bar(len(plan.specs), quiet=args.quiet)
        try:
            outcome = run_grid(
                plan.specs,
                results,
                data_root=_data_root(args.data_root),
                overwrite=args.overwrite,
                device=args.device,
                jobs=args.jobs,
                threads=args.threads,
                progress=update,
                executor=args.executor,
                ray_address=args.ray_address,
                pool=pool,
                outputs=_outputs(args),
            )
        except KeyboardInterrupt:
            from bench.workers import stop_workers

            bar.close()
            if pool is not None:
                stop_workers(pool)  # running cells end now; they leave no record and are redone on resume
            print("\ninterrupted: finished cells are saved; run the same command again to resume", file=sys.stderr)
            return 130
        bar.close()
    for problem in outcome.recomputed:
        print(f"warning: {problem}", file=sys.stderr)
    _write_tables(results)
    keys = {s.key for s in plan.specs}
    mine = [r for r in iter_records(results) if isinstance(r, dict) and r["key"] in keys]
    print(run_summary(mine), end="")
    if outcome.computed == 0 and not outcome.busy:
        print(
            f"\nnothing to train: all {outcome.skipped} cells already have records in {results} "
            "(use --overwrite to recompute)"
        )
    else:
        print(
            f"\n{outcome.computed} cells trained, {outcome.skipped} reused from {results}, "
            f"{len(outcome.busy)} left to another runner"
        )
    print(
        f"full leaderboard (every table, all records in {results}): {results / LEADERBOARD_FILE}; "
        f"summary with plots: {results / 'README.md'}"
    )
    if outcome.failed:
        print(f"{len(outcome.failed)} cells failed:", file=sys.stderr)
        for line in outcome.failed:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def _tune(args: argparse.Namespace, *, trials: int) -> None:
    """Tune every (method, dataset) of the selection with the same trial budget, each trial a cell with this
    command's epochs, batch size, patience, precision and ``--set`` choices (all part of the study's name)."""
    import fnmatch

    from bench.grid import DATA_OVERRIDE, ENCODER_OVERRIDE, GridRequest, expand, parse_overrides
    from bench.loop import task_of
    from bench.registry import default_method
    from bench.tune import fixed_values, tune_one

    if trials < 1:
        raise UsageError(f"the number of trials must be >= 1, got {trials}")
    # One cell per (method, dataset) at the tuning protocol's rate 0; seeds, rates and noise are run's axes.
    request = GridRequest(
        methods=args.methods,
        datasets=args.datasets,
        seeds=(0,),
        missing_rates=(0.0,),
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        precision=args.precision,
        overrides=tuple(args.overrides),
        data_root=_data_root(args.data_root),
    )
    specs = expand(request).specs
    method_sets = [
        (pattern, param, raw)
        for pattern, param, raw in parse_overrides(args.overrides)
        if pattern not in (ENCODER_OVERRIDE, DATA_OVERRIDE)
    ]
    import torch

    torch.set_num_threads(args.threads)
    for i, spec in enumerate(specs, 1):
        fixed = fixed_values(
            spec.method,
            {param: raw for pattern, param, raw in method_sets if fnmatch.fnmatchcase(spec.method, pattern)},
        )
        print(f"[{i}/{len(specs)}] tuning {spec.method} on {spec.dataset}: {trials} trials", file=sys.stderr)
        summary = tune_one(
            spec.method,
            spec.dataset,
            trials=trials,
            results_dir=Path(args.results),
            storage=args.storage,
            epochs=spec.epochs,
            batch_size=spec.batch_size,
            data_root=request.data_root,
            jobs=args.jobs,
            precision=spec.precision,
            patience=spec.patience,
            encoders=spec.extra.get("encoders"),
            options=spec.extra.get("dataset_options"),
            fixed=fixed,
        )
        score = task_of(default_method(spec.method)).headline_name  # accuracy, or mean R@1 for retrieval methods
        print(
            f"{spec.method} on {spec.dataset}: best validation {score} {summary['best_value']:.4f} "
            f"(trial {summary['best_trial']} of {summary['finished_trials']}) {summary['params']}"
        )


#: ``run`` options that only choose evaluation cells: tuning trains on its own seed (bench.tune.TUNING_SEEDS)
#: at missing rate 0 and never scores the test split, so ``tune`` refuses them rather than ignore them.
_RUN_ONLY = (
    ("seeds", "--seeds", None),
    ("missing_rates", "--missing-rates", None),
    ("missing_on", "--missing-on", "all"),
    ("noise", "--noise", "none"),
    ("noise_levels", "--noise-levels", None),
)


def _refuse_run_only(args: argparse.Namespace) -> None:
    from bench.tune import TUNING_SEEDS

    given = [flag for name, flag, harmless in _RUN_ONLY if getattr(args, name) not in (None, harmless)]
    if given:
        raise UsageError(
            f"tune does not take {', '.join(given)}: trials train on seed {TUNING_SEEDS[0]} at missing "
            "rate 0 and never see the test split; give them to run (python -m bench run --tune N ... "
            "tunes, then runs those cells)"
        )


def cmd_tune(args: argparse.Namespace) -> int:
    _refuse_run_only(args)
    _set_data_workers(args)
    _warn_bf16(args)
    _tune(args, trials=args.trials)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-run a random sample of recorded cells (reproducibility; the rules are in :mod:`bench.verify`)."""
    import torch

    from bench.cells import environment, numerics
    from bench.loop import headline
    from bench.spec import CellSpec
    from bench.verify import FAILING, pick_sample, rerunnable_records, verify_record, within_seconds

    if args.max_seconds is not None and not args.max_seconds > 0:
        raise UsageError(f"--max-seconds must be a positive number of seconds, got {args.max_seconds:g}")
    torch.set_num_threads(args.threads)
    data_root = _data_root(args.data_root)
    candidates = rerunnable_records(Path(args.results), data_root)
    if not candidates:
        raise UsageError(f"no recorded cell under {args.results} can be re-run here (missing data?)")
    candidates, too_long = within_seconds(candidates, args.max_seconds)
    if not candidates:
        raise UsageError(f"every re-runnable cell took longer than --max-seconds {args.max_seconds:g}; raise it")
    here = numerics(environment(), args.threads)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    sample = pick_sample(candidates, here, args.sample, seed)
    longer = f" ({too_long} that took longer than {args.max_seconds:g} s left out)" if too_long else ""
    print(
        f"re-running {len(sample)} of {len(candidates)} re-runnable cells{longer} (sample seed {seed}) on "
        f"{here[0]}, kernels {here[1]}"
    )
    verdicts = []
    for record in sample:
        verdict, detail = verify_record(record, here, data_root)
        verdicts.append(verdict)
        score_name, score = headline(record["metrics"])  # accuracy, or mean R@1 for retrieval cells
        label = CellSpec.from_dict(record["spec"]).label
        print(f"  {verdict}  {label}  {score_name} {score} {detail}".rstrip())
    failed = sum(v in FAILING for v in verdicts)
    elsewhere = verdicts.count("other-cpu")
    if elsewhere:
        print(
            f"{elsewhere} of {len(sample)} cells were recorded on another or an unrecorded CPU and differ "
            "there; each re-ran identically twice here (records are bit-identical only on the same CPU "
            "model, kernels, torch, threads and OS build; --strict fails on these too)",
            file=sys.stderr,
        )
    if failed or (args.strict and elsewhere):
        print(
            f"{failed + args.strict * elsewhere} of {len(sample)} re-run cells differ from their records",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``bench export``: every record as one row (the columns of bench.tables.frame, docs/records.md) in a parquet or
    CSV file."""
    from bench.tables.frame import export

    rows, columns, fmt = export(Path(args.results), Path(args.out), args.format)
    print(f"wrote {rows} records x {columns} columns to {args.out} ({fmt})")
    return 0


def _outputs(args: argparse.Namespace):
    """``--save-models``, ``--log-samples``, ``--logger``: what each cell keeps beside its record (bench.artifacts),
    or None (the records are then exactly what they are without these options)."""
    from bench.artifacts import CellOutputs
    from bench.loggers import parse_loggers

    outputs = CellOutputs(save_model=args.save_models, log_samples=args.log_samples, loggers=parse_loggers(args.logger))
    return outputs or None


def cmd_eval(args: argparse.Namespace) -> int:
    """``bench eval``: score saved models (``run --save-models``) at other test-time missing rates or noise
    without training; each result is a new record naming its source (``evaluated_from``, docs/records.md)."""
    import fnmatch

    import torch

    from bench.artifacts import CellOutputs, evaluate_saved, evaluation_spec
    from bench.loop import headline
    from bench.store import iter_records, read_record, record_path, write_record

    results = Path(args.results)
    if not (results / "records").is_dir():
        raise UsageError(f"{results} has no records/ folder; point --results at the results of a run --save-models")
    rates = _rate_list(args.missing_rates)
    bad = [r for r in rates if not 0.0 <= r < 1.0]
    if bad:
        raise UsageError(f"missing rate {bad[0]} is outside [0, 1); use values like 0,0.3,0.5")
    levels = _noise_levels(args) if args.noise != "none" else ()
    torch.set_num_threads(args.threads)

    def chosen(name: str, selection: str) -> bool:
        return any(part.strip() == "all" or fnmatch.fnmatchcase(name, part.strip()) for part in selection.split(","))

    sources = [
        r
        for r in iter_records(results)
        if isinstance(r, dict)
        and r["status"] == "ok"
        and "model" in (r.get("artifacts") or {})
        and "evaluated_from" not in r
        and chosen(r["spec"]["method"], args.methods)
        and chosen(r["spec"]["dataset"], args.datasets)
    ]
    if not sources:
        raise UsageError(
            f"no record under {results} with --methods {args.methods} --datasets {args.datasets} has a "
            "saved model; run its cells with run --save-models first"
        )
    data_root = _data_root(args.data_root)
    written = existed = 0
    for source in sources:
        for rate in rates:
            spec = evaluation_spec(source, rate, args.noise, levels)
            path = record_path(results, spec)
            if not args.overwrite and path.exists() and isinstance(read_record(path), dict):
                existed += 1
                continue
            record = evaluate_saved(
                results,
                source,
                rate,
                args.noise,
                levels,
                data_root=data_root,
                device=args.device,
                outputs=CellOutputs(log_samples=args.log_samples),
            )
            write_record(results, record)
            written += 1
            name, value = headline(record["metrics"])
            print(f"{spec.label} (saved model of {source['key']}): {name} {value:.4f}")
    print(
        f"{written} evaluation records written, {existed} already there, from {len(sources)} saved models in {results}"
    )
    return 0


def _ls_methods() -> None:
    """One row per registered method: its task family, the first line of its docstring, where it comes from."""
    from tabulate import tabulate

    from bench.registry import METHODS, default_method

    rows = []
    for name in METHODS.names():
        error = METHODS.error(name)
        if error:
            rows.append((name, "", f"BROKEN: {error}", METHODS.origin(name)))
            continue
        doc = (METHODS.get(name).__doc__ or "").strip().splitlines()
        task = getattr(type(default_method(name)), "task", "classification")  # optional class attribute task
        rows.append((name, task, doc[0] if doc else "", METHODS.origin(name)))
    # the docstring's line wraps at 70 characters so the table fits a terminal
    print(tabulate(rows, headers=("method", "task", "what", "from"), maxcolwidths=[None, None, 70, None]))


def _dataset_adapters():
    """(name, adapter or None, one-line 'BROKEN (origin): error' or None) for every registered dataset."""
    from bench.registry import DATASETS

    for name in DATASETS.names():
        error = DATASETS.error(name)
        if error:
            yield name, None, f"BROKEN ({DATASETS.origin(name)}): {error}"
        else:
            yield name, DATASETS.get(name), None


def _ls_datasets(data_root: Path | None) -> None:
    """One row per registered dataset: modalities, classes, version, and whether it is available here."""
    from tabulate import tabulate

    rows = []
    for name, adapter, broken in _dataset_adapters():
        if broken:
            rows.append((name, "", "", "", broken))
            continue
        info = adapter.info
        ok, why = adapter.available(data_root)
        rows.append(
            (name, "+".join(info.modalities), info.num_classes, info.version, "available" if ok else f"missing: {why}")
        )
    headers = ("dataset", "modalities", "classes", "version", "status")  # long reasons wrap at 70 characters
    print(tabulate(rows, headers=headers, disable_numparse=True, maxcolwidths=[None, 24, None, None, 70]))


def cmd_ls(args: argparse.Namespace) -> int:
    if args.what == "methods":
        _ls_methods()
    else:
        _ls_datasets(_data_root(args.data_root))
    return 0


def _data_root_line(value: str | None, root: Path | None) -> str:
    if root is None:
        return "data root: none (set BENCH_DATA or --data-root to the folder holding the datasets)"
    return f"data root: {root} (from {'--data-root' if value is not None else 'BENCH_DATA'})"


def _data_list(args: argparse.Namespace, root: Path | None) -> int:
    from bench.media.cache import cache_root, dataset_status

    print(_data_root_line(args.data_root, root))
    print(f"cache: {cache_root()} (BENCH_CACHE moves it)")
    for name, adapter, broken in _dataset_adapters():
        if broken:
            print(f"\n{name}: {broken}")
            continue
        info = adapter.info
        state, detail = dataset_status(adapter, root)
        print(f"\n{name}: {state}: {detail}" if detail else f"\n{name}: {state}")
        if info.needs_data_root:
            print(f"  layout:   {info.layout or '(not documented by the adapter)'} under the data root")
            print(f"  download: {info.homepage}")
        print(f"  licence:  {info.license}")
    return 0


def _data_prepare(names: list[str], root: Path | None) -> int:
    import time

    from tqdm import tqdm

    from bench.media.cache import dataset_status
    from bench.registry import DATASETS

    for name in names:
        adapter = DATASETS.get(name)
        state, detail = dataset_status(adapter, root)
        if state == "missing":
            raise UsageError(f"dataset {name!r} is not available: {detail}")
        if not hasattr(adapter, "prepare"):
            print(f"{name}: nothing to prepare ({detail})")
            continue
        if state == "prepared":
            print(f"{name}: already prepared: {detail}")
            continue
        bar = tqdm(desc=f"preparing {name}", unit="step", file=sys.stderr, dynamic_ncols=True, disable=None)

        def progress(done: int, total: int, bar=bar) -> None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        started = time.perf_counter()
        try:
            where = adapter.prepare(root, progress=progress)
        finally:
            bar.close()
        print(f"{name}: prepared in {time.perf_counter() - started:.1f} s: {where}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """``bench data``: every registered dataset's state under the data root (missing / raw found / prepared,
    from the adapter's optional ``status(data_root)``, else from ``available``), its expected layout, where to
    download it and its licence. ``bench data prepare NAME[,NAME...|all]`` fills the prepared-data cache
    (adapters with a ``prepare(data_root, progress)`` method) with a progress bar on stderr."""
    root = _data_root(args.data_root)
    if args.action is None or args.action == "list":
        if args.names is not None:
            raise UsageError(
                f"'bench data' takes no dataset name (got {args.names!r}); "
                f"to prepare it: python -m bench data prepare {args.names}"
            )
        return _data_list(args, root)
    if args.names is None:
        raise UsageError("bench data prepare needs a dataset name, e.g. python -m bench data prepare avmnist")
    from bench.registry import DATASETS

    return _data_prepare(DATASETS.select(args.names), root)


def _add_data_workers_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-workers",
        type=int,
        metavar="N",
        help="data-loader processes that read streamed (larger than BENCH_RESIDENT_BYTES) splits "
        "ahead of training (default: $BENCH_DATA_WORKERS, else 2; 0 reads in the training "
        "process; records do not depend on it)",
    )


def _add_cpu_kernels_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cpu-kernels",
        choices=("native", "avx2"),
        help="CPU kernels of torch, MKL and oneDNN: native (the CPU's own, the default) or avx2 "
        "(pinned, as records made before native became the default; default: "
        "$BENCH_CPU_KERNELS, else native); recorded in every cell's environment",
    )


def build_parser() -> argparse.ArgumentParser:
    from bench import __version__

    parser = _Parser(prog="bench", description="Multimodal-learning benchmark harness.")
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="train and evaluate the cells of a grid that have no record yet")
    _add_grid_arguments(run)
    talk = run.add_mutually_exclusive_group()
    talk.add_argument(
        "-q", "--quiet", action="store_true", help="print only errors and the final summary (no progress bar, no notes)"
    )
    talk.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print one line per epoch of every cell that trains (train loss, validation score)",
    )
    run.add_argument("--results", default=str(DEFAULT_RESULTS), help="results directory (default: results)")
    run.add_argument("--overwrite", action="store_true", help="recompute cells that already have records")
    run.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    run.add_argument(
        "--tuned", action="store_true", help="use the tuned hyperparameters in RESULTS/tuned/ (written by bench tune)"
    )
    run.add_argument("--tune", type=int, metavar="N", help="tune every method with N trials first, then run --tuned")
    run.add_argument("--storage", help="Optuna RDB storage URL for --tune (default: a journal file in RESULTS/tuning)")
    run.add_argument(
        "--jobs", type=int, default=1, help="cells run in parallel worker processes (records are identical to --jobs 1)"
    )
    run.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads per cell (default 1: the small models gain nothing from more, "
        "and threads competing with other processes for the cores slow training many-fold)",
    )
    _add_data_workers_argument(run)
    _add_cpu_kernels_argument(run)
    run.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where cells run: local processes (default) or Ray tasks (pip install 'bench-mml[ray]')",
    )
    run.add_argument(
        "--ray-address",
        help="Ray cluster for --executor ray: 'auto' for a running one (default: start a local "
        "instance); the results directory must be on a file system all nodes share",
    )
    run.add_argument(
        "--save-models",
        action="store_true",
        help="keep each cell's selected weights next to its record (sha256-checked; for bench eval)",
    )
    run.add_argument(
        "--log-samples",
        action="store_true",
        help="keep each cell's per-sample test predictions next to its record (<key>.samples.npz)",
    )
    run.add_argument(
        "--logger",
        metavar="NAME[,NAME]",
        help="per-epoch loggers from the bench.loggers entry points: csv, tensorboard, ...",
    )
    run.set_defaults(func=cmd_run)
    tune = sub.add_parser("tune", help="tune hyperparameters on validation data, the same budget per method")
    _add_grid_arguments(tune)
    tune.add_argument("--trials", type=int, required=True, help="trials per (method, dataset)")
    tune.add_argument("--results", default=str(DEFAULT_RESULTS), help="where tuned/ files are written")
    tune.add_argument(
        "--storage",
        help="Optuna RDB storage URL shared by workers, e.g. postgresql://... "
        "(default: a journal file in RESULTS/tuning)",
    )
    tune.add_argument("--jobs", type=int, default=1, help="trials run in parallel in this process")
    tune.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    _add_data_workers_argument(tune)
    _add_cpu_kernels_argument(tune)
    tune.set_defaults(func=cmd_tune, **{name: None for name, _, _ in _RUN_ONLY})  # None: not given
    validate = sub.add_parser("validate", help="resolve a grid and report every problem at once")
    _add_grid_arguments(validate)
    validate.set_defaults(func=cmd_validate)
    verify = sub.add_parser("verify", help="re-run a random sample of recorded cells; fail unless identical")
    verify.add_argument("--results", default=str(DEFAULT_RESULTS))
    verify.add_argument("--sample", type=int, default=3, help="how many cells to re-run (default 3)")
    verify.add_argument("--seed", type=int, help="seed of the sample (default: random, printed)")
    verify.add_argument("--data-root", help="folder with the real datasets (default: $BENCH_DATA)")
    verify.add_argument("--threads", type=int, default=1, help="torch CPU threads (records use 1)")
    verify.add_argument(
        "--max-seconds",
        type=float,
        help="draw only cells whose record took at most this long to train and test (a re-run takes about as "
        "long, twice for a record made on another CPU; default: any)",
    )
    verify.add_argument(
        "--strict", action="store_true", help="also fail when a cell recorded on another CPU gives other numbers here"
    )
    verify.set_defaults(func=cmd_verify)
    ls = sub.add_parser("ls", help="list registered methods or datasets")
    ls.add_argument("what", choices=("methods", "datasets"))
    ls.add_argument("--data-root", help="folder with the real datasets (default: $BENCH_DATA)")
    ls.set_defaults(func=cmd_ls)
    data = sub.add_parser(
        "data",
        help="datasets' state under the data root (missing / raw found / prepared); "
        "'data prepare NAME' builds a prepared-data cache",
    )
    data.add_argument("action", nargs="?", choices=("list", "prepare"), help="list (default) or prepare")
    data.add_argument("names", nargs="?", help="datasets to prepare: names, globs or 'all'")
    data.add_argument("--data-root", help="folder with the real datasets (default: $BENCH_DATA)")
    data.set_defaults(func=cmd_data)
    table = sub.add_parser("table", help="regenerate the leaderboards from the records")
    table.add_argument("--results", default=str(DEFAULT_RESULTS))
    table.add_argument("--check", action="store_true", help="fail if the tables on disk differ")
    table.set_defaults(func=cmd_table)
    export = sub.add_parser("export", help="write every record as one row of a parquet or CSV file (docs/records.md)")
    export.add_argument("--results", default=str(DEFAULT_RESULTS))
    export.add_argument("--format", choices=("parquet", "csv"), help="default: from the suffix of --out")
    export.add_argument("--out", required=True, help="file to write, e.g. records.parquet")
    export.set_defaults(func=cmd_export)
    evaluate = sub.add_parser(
        "eval",
        help="score saved models (run --save-models) at other test-time missing rates or noise, without training",
    )
    evaluate.add_argument("--results", default=str(DEFAULT_RESULTS))
    evaluate.add_argument("--methods", default="all", help="names, globs or 'all' (default: all)")
    evaluate.add_argument("--datasets", default="all", help="names, globs or 'all' (default: all)")
    evaluate.add_argument("--missing-rates", default="0,0.25,0.5", help="test-time missing rates in [0, 1)")
    evaluate.add_argument(
        "--noise",
        choices=("none", "gaussian", "salt_pepper"),
        default="none",
        help="also score on test data corrupted at each --noise-levels",
    )
    evaluate.add_argument("--noise-levels", default="0,5,10", help="noise levels in [0, 10] (default: 0,5,10)")
    evaluate.add_argument("--log-samples", action="store_true", help="keep per-sample predictions of each evaluation")
    evaluate.add_argument("--overwrite", action="store_true", help="recompute evaluation records that exist")
    evaluate.add_argument("--data-root", help="folder with the real datasets (default: $BENCH_DATA)")
    evaluate.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    evaluate.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    evaluate.set_defaults(func=cmd_eval)
    return parser


class _Interrupts:
    """SIGINT: the first raises KeyboardInterrupt (each command stops cleanly and exits 130); a second one,
    while that clean-up runs, ends the process at once, without a traceback. Installed only where SIGINT has
    Python's default handler (a shell that started bench with SIGINT ignored keeps it ignored)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, signum: int, frame) -> None:
        self.count += 1
        if self.count == 1:
            raise KeyboardInterrupt
        os.write(2, b"\ninterrupted again: stopping now (finished cells are saved)\n")
        os._exit(130)


@contextlib.contextmanager
def _interrupts():
    import signal
    import threading

    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    handler = _Interrupts()
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        # After an interrupt, the exit itself ignores further Ctrl-C: the interpreter's shutdown puts the default
        # action back, which would end the process by the signal instead of with exit status 130.
        signal.signal(signal.SIGINT, signal.SIG_IGN if handler.count else previous)


def main(argv: Sequence[str] | None = None) -> int:
    with _interrupts():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    try:
        args, unknown = build_parser().parse_known_args(argv)
        if unknown:  # reported here, where the subcommand whose --help lists the options is known
            raise UsageError(f"unrecognized arguments: {' '.join(unknown)} (see python -m bench {args.command} --help)")
        if getattr(args, "results", None) is not None:
            _results_dir(args)
        if hasattr(args, "cpu_kernels"):
            from bench.kernels import use

            use(args.cpu_kernels)  # before anything imports torch (the variables are read when it loads)
        return args.func(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped (``bench ls datasets | head``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
