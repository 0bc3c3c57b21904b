"""Several tuning processes share one Optuna study through one storage (the default journal file in
RESULTS/tuning): together they run the study's trial budget once, not once each."""

from __future__ import annotations

import json
import subprocess
import sys

from cli_helpers import grid_args

TRIALS = 8


def test_two_processes_fill_one_study_to_its_budget(tmp_path):
    tune = ("tune", *grid_args(seeds=None, missing_rates=None), "--trials", str(TRIALS))
    command = [sys.executable, "-m", "bench", *tune, "--results", str(tmp_path)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    # Each process prints one line per trial it finished; both took part.
    mine = [sum(f"/{TRIALS} " in line for line in err.splitlines()) for _, err in outputs]
    assert all(n >= 1 for n in mine), outputs

    import optuna

    from bench.tune import open_storage

    (summary,) = optuna.study.get_all_study_summaries(open_storage(tmp_path, None))
    study = optuna.load_study(study_name=summary.study_name, storage=open_storage(tmp_path, None))
    finished = [t for t in study.trials if t.state.is_finished() and t.state.name in ("COMPLETE", "PRUNED")]
    # The budget is shared: at most one trial per process runs past it (started before the other finished).
    assert TRIALS <= len(finished) <= TRIALS + 1 and sum(mine) == len(finished)
    assert len({t.number for t in study.trials}) == len(study.trials)
    (tuned,) = (tmp_path / "tuned").rglob("*.json")
    assert json.loads(tuned.read_text())["finished_trials"] >= TRIALS
