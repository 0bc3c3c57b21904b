"""Hyperparameter tuning with Optuna: the same trial budget for every method, validation data only.

One study per (method, dataset), named deterministically; a TPE sampler seeded from the study name; a
median pruner fed by the per-epoch validation selection score (accuracy; mean Recall@1 for retrieval
methods, see ``bench.loop.TASKS``). Every trial is an ordinary cell run by
:func:`bench.loop.run_cell` (no loop of its own) on a tuning seed disjoint from evaluation seeds, with the
test split never evaluated. The best hyperparameters are written to ``<results>/tuned/<dataset>/<method>.json``,
which ``run --tuned`` reads and records as each cell's ``hparams_source``.

A study's name is its identity: besides method, dataset, epochs and protocol it names every setting that
changes a trial's cell and differs from the default (precision, batch size, patience, ``--set encoder.*``,
``--set data.*`` and ``--set METHOD.PARAM`` values, which every trial keeps fixed over what the search space
samples). ``run --tuned`` refuses a tuned file whose study is not the one its cells need, so a run never
evaluates hyperparameters tuned under other settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from bench import PROTOCOL_VERSION
from bench.errors import CellFailure, UsageError
from bench.registry import DATASETS, dataset_adapter, default_method, method_config
from bench.spec import CellSpec
from bench.store import atomic_write_text

__all__ = ["TUNING_SEEDS", "fixed_values", "load_tuned", "study_name", "tune_one", "tuned_path"]

#: Seeds of tuning trials; evaluation seeds must not overlap them (checked by the grid).
TUNING_SEEDS = (1000,)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return ",".join(_text(v) for v in value)
    return json.dumps(value)


def study_name(
    method: str,
    dataset: str,
    epochs: int,
    *,
    precision: str = "fp32",
    batch_size: int | None = None,
    patience: int | None = None,
    encoders: dict[str, str] | None = None,
    options: dict[str, Any] | None = None,
    fixed: dict[str, Any] | None = None,
) -> str:
    """``method/dataset/e<epochs>/p<protocol>``, then one part per non-default setting of the trials' cells
    (``bf16``, ``b<batch size>``, ``patience<N>``, ``encoder.<modality>=<kind>``, ``data.<option>=<value>``,
    ``set.<param>=<value>``). Default settings add nothing, so studies named before the settings were part of
    the name keep their names."""
    parts = [method, dataset, f"e{epochs}", f"p{PROTOCOL_VERSION}"]
    if precision != "fp32":
        parts.append(precision)
    if batch_size is not None and batch_size != DATASETS.get(dataset).info.default_batch_size:
        parts.append(f"b{batch_size}")
    if patience is not None:
        parts.append(f"patience{patience}")
    parts += [f"encoder.{name}={kind}" for name, kind in sorted((encoders or {}).items())]
    parts += [f"data.{name}={_text(value)}" for name, value in sorted((options or {}).items())]
    parts += [f"set.{name}={_text(value)}" for name, value in sorted((fixed or {}).items())]
    return "/".join(parts)


def fixed_values(method: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``--set METHOD.PARAM=VALUE`` values of one method, typed as its config fields (a bad one is a
    UsageError): what every trial keeps fixed, and part of the study's name."""
    config = method_config(method, overrides)
    return {name: getattr(config, name) for name in sorted(overrides)}


def _sampler_seed(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def tuned_path(results_dir: Path, method: str, dataset: str) -> Path:
    return Path(results_dir) / "tuned" / dataset / f"{method}.json"


def open_storage(results_dir: Path, url: str | None):
    """The study storage: ``url`` (any Optuna RDB URL, e.g. PostgreSQL) or, by default, an Optuna journal
    file in ``<results>/tuning/``. The journal file is safe for many processes at once (file locks); two
    processes creating a fresh SQLite database at the same moment are not."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if url:
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as exc:  # bad URL, missing driver, unreachable server
            raise UsageError(
                f"cannot open Optuna storage {url!r} ({type(exc).__name__}: {exc}); check the URL"
            ) from None
    path = Path(results_dir) / "tuning" / "journal.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


@dataclasses.dataclass(frozen=True)
class _Setting:
    """What a study's trials share besides the sampled hyperparameters (the study's name spells it out)."""

    epochs: int
    batch_size: int
    precision: str = "fp32"
    patience: int | None = None
    encoders: dict[str, str] = dataclasses.field(default_factory=dict)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)

    def name(self, method: str, dataset: str) -> str:
        return study_name(
            method,
            dataset,
            self.epochs,
            precision=self.precision,
            batch_size=self.batch_size,
            patience=self.patience,
            encoders=self.encoders,
            options=self.options,
            fixed=self.fixed,
        )


def _trial_spec(method: str, dataset: str, params: dict[str, Any], setting: _Setting, *, seed: int) -> CellSpec:
    config = method_config(method, {**params, **setting.fixed})
    extra = {
        key: value for key, value in (("encoders", setting.encoders), ("dataset_options", setting.options)) if value
    }
    return CellSpec(
        method=method,
        hparams=dataclasses.asdict(config),
        dataset=dataset,
        dataset_version=dataset_adapter(dataset, setting.options).info.version,
        seed=seed,
        missing_rate=0.0,
        epochs=setting.epochs,
        batch_size=setting.batch_size,
        patience=setting.patience,
        hparams_source="tuning-trial",
        precision=setting.precision,
        extra=extra,
    )


def _objective(method: str, dataset: str, setting: _Setting, *, data_root: Path | None):
    import optuna

    from bench.loop import run_cell, selection_score

    method_cls = type(default_method(method))

    def objective(trial: optuna.Trial) -> float:
        params = method_cls.search_space(trial)  # required, called on the class (bench.protocol.Method)
        scores = []
        for seed in TUNING_SEEDS:
            spec = _trial_spec(method, dataset, params, setting, seed=seed)

            def report(epoch: int, val: float) -> None:
                trial.report(val, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

            try:
                result = run_cell(spec, data_root=data_root, on_epoch=report, evaluate_test=False)
            except CellFailure as exc:
                # Diverging (e.g. a non-finite loss at a large learning rate) is what these hyperparameters do:
                # the trial scores 0, so it counts toward the same budget as every other trial and steers the
                # sampler away, instead of failing and being replaced by an extra trial.
                trial.set_user_attr("failure", str(exc))
                return 0.0
            scores.append(selection_score(result["metrics"]))  # validation accuracy, or mean R@1 for retrieval
        return sum(scores) / len(scores)

    return objective


def _progress(trials: int):
    """An Optuna callback that prints one line per finished trial to stderr: a study of slow cells (an
    AV-MNIST trial takes minutes) would otherwise be silent until its end."""
    import optuna
    from optuna.trial import TrialState

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        finished = len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))
        if trial.state == TrialState.PRUNED:
            outcome = f"pruned after epoch {trial.last_step}"
        elif "failure" in trial.user_attrs:
            outcome = "diverged, scores 0"
        else:
            outcome = f"validation {trial.value:.4f}" if trial.value is not None else trial.state.name.lower()
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete else 0
        try:
            best = f", best so far {study.best_value:.4f}"
        except ValueError:  # no completed trial yet
            best = ""
        print(f"  {study.study_name}: trial {finished}/{trials} {outcome} ({seconds:.0f} s){best}", file=sys.stderr)

    return report


def tune_one(
    method: str,
    dataset: str,
    *,
    trials: int,
    results_dir: Path,
    storage: str | None,
    epochs: int,
    batch_size: int,
    data_root: Path | None,
    jobs: int = 1,
    precision: str = "fp32",
    patience: int | None = None,
    encoders: dict[str, str] | None = None,
    options: dict[str, Any] | None = None,
    fixed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the study until it holds ``trials`` finished (complete or pruned) trials; write the best.

    Every trial is a cell with these settings: ``patience`` (early stopping), ``encoders`` (``--set
    encoder.*``), ``options`` (``--set data.*``) and ``fixed`` (typed ``--set METHOD.PARAM`` values, applied
    over what the search space samples); all of them are part of the study's name (:func:`study_name`).

    A tuned file already written by the same study with the same budget is the answer (returned as it is):
    the committed tuned files resume a regeneration even where the study's storage (a local journal that is
    not committed) is absent. Delete the file to tune again.
    """
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    setting = _Setting(
        epochs=epochs,
        batch_size=batch_size,
        precision=precision,
        patience=patience,
        encoders=dict(encoders or {}),
        options=dict(options or {}),
        fixed=dict(fixed or {}),
    )
    name = setting.name(method, dataset)
    done = _finished_summary(tuned_path(results_dir, method, dataset), name, trials)
    if done is not None:
        return done
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=open_storage(results_dir, storage),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=_sampler_seed(name), n_startup_trials=min(10, max(trials // 2, 1))),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(epochs // 4, 1)),
        load_if_exists=True,
    )
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    if len(study.get_trials(states=finished)) < trials:
        study.optimize(
            _objective(method, dataset, setting, data_root=data_root),
            n_trials=trials,
            n_jobs=jobs,
            callbacks=[MaxTrialsCallback(trials, states=finished), _progress(trials)],
            catch=(RuntimeError, ValueError),
        )
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    if not complete:
        raise UsageError(f"study {name!r} has no completed trial; look at the failed trials in its storage")
    best = max(complete, key=lambda t: (t.value, -t.number))
    params = {**best.params, **setting.fixed}  # what the best trial's cell ran with
    config = method_config(method, params)
    summary = {
        "method": method,
        "dataset": dataset,
        "study": name,
        "trials": trials,
        "finished_trials": len(study.get_trials(states=finished)),
        "best_value": best.value,
        "best_trial": best.number,
        "params": params,
        "hparams": dataclasses.asdict(config),
        "epochs": epochs,
        "batch_size": batch_size,
        "tuning_seeds": list(TUNING_SEEDS),
        "protocol": PROTOCOL_VERSION,
    }
    # Non-default settings are spelled out beside the study's name (which already holds them).
    summary.update(
        {
            key: value
            for key, value in (
                ("precision", precision if precision != "fp32" else None),
                ("patience", patience),
                ("encoders", setting.encoders),
                ("dataset_options", setting.options),
                ("fixed", setting.fixed),
            )
            if value
        }
    )
    atomic_write_text(tuned_path(results_dir, method, dataset), json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary


def _finished_summary(path: Path, study: str, trials: int) -> dict[str, Any] | None:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # absent or unreadable: tune (and rewrite it)
    same = isinstance(summary, dict) and summary.get("study") == study and summary.get("trials") == trials
    return summary if same and summary.get("finished_trials", 0) >= trials else None


def load_tuned(results_dir: Path, method: str, dataset: str, study: str | None = None) -> tuple[dict[str, Any], str]:
    """(hyperparameters, source label) from a tuned file; one-line errors for missing or foreign files, and,
    given the ``study`` the cells need, for a file tuned under other settings (epochs, batch size, ...)."""
    path = tuned_path(results_dir, method, dataset)
    if not path.is_file():
        raise UsageError(
            f"no tuned hyperparameters for {method} on {dataset} ({path}); run: python -m bench tune "
            f"--methods {method} --datasets {dataset} --trials N"
        )
    try:
        tuned = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(
            f"cannot read {path} ({type(exc).__name__}); rerun the tuning for {method} on {dataset}"
        ) from None
    if tuned.get("method") != method or tuned.get("dataset") != dataset:
        raise UsageError(
            f"{path} holds hyperparameters of {tuned.get('method')!r} on {tuned.get('dataset')!r}, "
            f"not {method!r} on {dataset!r}; restore the file or rerun the tuning"
        )
    if study is not None and tuned.get("study") != study:
        raise UsageError(_mismatch(path, tuned, study))
    return tuned["params"], f"tuned:{tuned['study']}:{tuned['trials']}-trials"


def _mismatch(path: Path, tuned: dict[str, Any], study: str) -> str:
    """One line: the tuned file's study is not the one the cells need; the epochs are named first."""
    have = str(tuned.get("study"))
    epochs = f"e{tuned.get('epochs')}"
    need_epochs = study.split("/")[2] if study.count("/") >= 3 else ""
    lead = ""
    if tuned.get("epochs") is not None and need_epochs and need_epochs != epochs:
        lead = f"tuned with --epochs {tuned['epochs']}, but this run uses --epochs {need_epochs[1:]}; "
    return (
        f"{lead}{path} holds study {have!r}, not {study!r} that these cells need (epochs, batch size, "
        "patience, precision and --set values must match the tuning); tune again with this run's options "
        "(python -m bench run --tune N ... does both) or run with the tuning's"
    )
