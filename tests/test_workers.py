"""``--jobs N`` start-up (bench.workers.run_cells): this process runs cells from the start, cold workers are
handed none until they are warm, then at once, a grid of one cell uses no worker, and every cell is reported
once, here."""

from __future__ import annotations

import os
import threading
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
        future.set_result(("worker", fn(*args, **kwargs)[1]))
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


def test_a_worker_warm_during_this_process_cell_is_handed_cells_then():
    """The worker finishes starting while this process trains its first cell: it gets two cells (one to train,
    one waiting) before that cell ends, not after (with cells of minutes it would idle for a whole cell)."""
    pool = FakePool(workers=1, warm=0)
    handed_during_first_cell = []

    def cell(spec, scale):
        if spec == 0:
            pool.bench_ready[0].set_result(None)  # the worker has started
            deadline = time.monotonic() + 10
            while len(pool.submitted) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            handed_during_first_cell.append(list(pool.submitted))
        return ("parent", spec * scale)

    seen = []
    reported_by = set()

    def done(spec, out):
        seen.append((spec, out))
        reported_by.add(threading.current_thread())

    run_cells(list(range(6)), cell, 10, jobs=2, threads=1, pool=pool, done=done)
    assert handed_during_first_cell == [[1, 2]]
    assert sorted(spec for spec, _ in seen) == list(range(6))
    assert all(out[1] == 10 * spec for spec, out in seen)
    assert reported_by == {threading.main_thread()}
    assert not pool.stopped


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
