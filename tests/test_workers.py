"""``--jobs N`` start-up (bench.workers.run_cells): this process runs cells from the start, cold workers are
handed none until they are warm, then at once, a grid of one cell uses no worker, and every cell is reported
once, here."""

from __future__ import annotations

import os
import time
from concurrent.futures import Future

from bench.workers import run_cells


class FakePool:
    """Runs a submitted call at once, in this process, and notes who ran it; ``warm`` workers have started."""

    def __init__(self, workers: int, warm: int):
        self.submitted, self.stopped = [], False
        self.bench_ready = [Future() for _ in range(workers)]
        for future in self.bench_ready[:warm]:
            future.set_result(None)
        self._processes = {}

    def submit(self, fn, *args, **kwargs):
        future = Future()
        self.submitted.append(args[0])
        try:
            future.set_result(("worker", fn(*args, **kwargs)[1]))
        except Exception as error:  # noqa: BLE001 - a worker's failure travels in its future
            future.set_exception(error)
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        self.stopped = True


def _cell(spec, scale):
    return ("parent", spec * scale)


def _run(specs, pool, jobs=2):
    seen = []
    run_cells(specs, _cell, 10, jobs=jobs, threads=1, pool=pool, done=lambda spec, out: seen.append((spec, out)))
    return seen


def test_one_cell_runs_here_and_the_started_pool_is_stopped_unused():
    pool = FakePool(workers=1, warm=1)
    assert _run([3], pool) == [(3, ("parent", 30))]
    assert pool.submitted == [] and pool.stopped


def test_cold_workers_get_no_cells_and_are_stopped_when_the_grid_is_done():
    pool = FakePool(workers=1, warm=0)
    seen = _run(list(range(5)), pool)
    assert sorted(seen) == [(i, ("parent", 10 * i)) for i in range(5)]
    assert pool.submitted == [] and pool.stopped


def test_warm_workers_share_the_cells_and_each_cell_is_reported_once():
    pool = FakePool(workers=1, warm=1)
    seen = _run(list(range(7)), pool)
    assert sorted(spec for spec, _ in seen) == list(range(7))
    assert all(out[1] == 10 * spec for spec, out in seen)
    by_worker = [spec for spec, out in seen if out[0] == "worker"]
    assert sorted(by_worker) == sorted(pool.submitted) and 0 < len(by_worker) < 7  # both sides ran cells
    assert not pool.stopped  # warm workers belong to the caller, who shuts them down


def test_a_worker_warm_during_this_process_cell_is_handed_cells_then_and_they_are_reported_when_done():
    """The worker finishes starting while this process trains its first cell: it gets two cells (one to train,
    one waiting) before that cell ends, not after (with cells of minutes it would idle for a whole cell), and
    its finished cells are reported at once, not when this process's cell ends (the progress bar's count)."""
    pool = FakePool(workers=1, warm=0)
    seen = []
    during_first_cell = {}

    def wait_for(condition):
        deadline = time.monotonic() + 10
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)

    def cell(spec, scale):
        if spec == 0:
            pool.bench_ready[0].set_result(None)  # the worker has started
            wait_for(lambda: len(seen) >= 2)
            during_first_cell.update(handed=list(pool.submitted), reported=sorted(s for s, _ in seen))
        return ("parent", spec * scale)

    run_cells(list(range(6)), cell, 10, jobs=2, threads=1, pool=pool, done=lambda spec, out: seen.append((spec, out)))
    assert during_first_cell == {"handed": [1, 2], "reported": [1, 2]}
    assert sorted(spec for spec, _ in seen) == list(range(6))  # each once
    assert all(out[1] == 10 * spec for spec, out in seen)
    assert not pool.stopped


def test_a_worker_failure_is_raised_here_and_stops_the_pool():
    pool = FakePool(workers=1, warm=1)

    def cell(spec, scale):
        if spec == 1:
            raise RuntimeError("worker cell failed")
        return ("parent", spec * scale)

    try:
        run_cells(list(range(4)), cell, 10, jobs=2, threads=1, pool=pool, done=lambda spec, out: None)
    except RuntimeError as error:
        assert str(error) == "worker cell failed"
    else:
        raise AssertionError("the worker's failure was not raised")
    assert pool.stopped


def test_jobs_two_spawns_one_worker_beside_this_process():
    from bench.workers import start_workers, stop_workers

    pool = start_workers(2, 1)
    try:
        assert len(pool.bench_ready) == 1
        pool.bench_ready[0].result(timeout=120)
        (pid,) = [p.pid for p in pool._processes.values()]
        assert pid != os.getpid()
    finally:
        stop_workers(pool)
