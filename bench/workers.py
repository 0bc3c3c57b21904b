"""Worker processes for ``run --jobs N``, startable before torch is imported in the calling process.

``--jobs N`` runs N cells at once: N - 1 spawned workers and the calling process itself (:func:`run_cells`).
The caller starts on the first cell at once, while the workers are still importing torch (about 2-3 s each),
and a worker is handed cells only once it is warm, so a grid of a few short cells never waits for workers
that are slower to start than the cells are to train, and a grid of one cell starts none. A worker that
becomes warm while the caller is training is handed cells at that moment (by a small thread), not when the
caller's cell ends: with cells of minutes, waiting for it left the worker idle for a whole cell.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["run_cells", "start_workers", "stop_workers"]


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM from :func:`stop_workers`: give back the cells this worker holds (their records were not
    written; a later run computes them) and exit at once."""
    import os

    from bench.store import release_held_claims

    release_held_claims()
    os._exit(128 + signum)


def _worker_init(threads: int) -> None:
    import signal

    # Ctrl-C is the parent's to handle: it stops handing out cells and ends the workers (stop_workers). A
    # worker that took the terminal's SIGINT itself would abandon its cell and start the next queued one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _terminated)
    import torch

    import bench.cells  # noqa: F401  (torch, the loop and the store, imported once per worker, up front)

    torch.set_num_threads(threads)
    # The first optimizer of a process imports torch._dynamo (about 2.5 s, measured with cProfile on the
    # default grid); pay it here, while the caller is still planning, rather than in the first cell.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def _ready() -> None:
    """A no-op task: submitting one per worker makes the pool spawn all its workers now; its completion says
    that a worker has finished starting (:func:`run_cells` hands cells only to warm workers)."""


def start_workers(jobs: int, threads: int) -> Any:
    """A pool of ``jobs - 1`` spawned worker processes (at least one), started at once: with the calling
    process, which runs cells too (:func:`run_cells`), ``jobs`` cells run at once.

    Spawning a worker costs an interpreter start and the torch import (about 2 s here). Starting the pool
    before the grid is planned lets that overlap with the planning, which imports torch too; ``run_grid``
    then uses the warm workers. The caller shuts the pool down (``with start_workers(...) as pool``).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked child of a process that has used OpenMP threads can hang.
    context = multiprocessing.get_context("spawn")
    workers = max(jobs - 1, 1)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=(threads,))
    pool.bench_ready = [pool.submit(_ready) for _ in range(workers)]
    return pool


def run_cells(
    specs: Sequence[Any],
    run: Callable[..., Any],
    *args: Any,
    jobs: int,
    threads: int,
    pool: Any = None,
    done: Callable[[Any, Any], None],
    **kwargs: Any,
) -> None:
    """``done(spec, run(spec, *args, **kwargs))`` for every spec, ``jobs`` at a time: this process and the
    ``jobs - 1`` workers of ``pool`` (started here when None; ``run`` must then be picklable).

    This process takes the next cell whenever it is free; each warm worker holds at most two cells (one
    training, one waiting), so neither side idles while the other has cells queued, and a cold worker holds
    none until it is warm, when it is handed its cells at once, even while this process is training; workers
    still starting when the last cell is done are stopped, not waited for. One cell or fewer: no worker is
    used (a pool that was started is stopped at once). ``done`` is called once per cell, as soon as the cell
    ends (a worker's cell from another thread while this process trains), never two calls at once, and every
    call has returned when this function does. Any exception (Ctrl-C included) ends the workers' running
    cells too (:func:`stop_workers`) and propagates."""
    from concurrent.futures import FIRST_COMPLETED, wait

    pending = deque(specs)
    if jobs <= 1 or len(pending) <= 1:
        if pool is not None:
            stop_workers(pool)  # still importing torch, most likely: not worth waiting for
        for spec in pending:
            done(spec, run(spec, *args, **kwargs))
        return
    own = pool is None
    workers = start_workers(jobs, threads) if own else pool
    ready = getattr(workers, "bench_ready", None)
    running: dict[Any, Any] = {}
    # pending, running and every done() call: the hand-out thread and the pool's result thread use them too.
    # Reentrant: a pool may complete a future inside submit, which then calls report() at once.
    lock = threading.RLock()

    def report(future) -> None:
        """``done`` for a worker's cell as soon as it ends, by whichever thread sees it first (the pool's
        result thread, or this one); a failed call is left for this thread to raise (:func:`collect`)."""
        if future.cancelled() or future.exception() is not None:
            return
        with lock:
            spec = running.pop(future, _NONE)
            if spec is not _NONE:
                done(spec, future.result())

    def collect(finished) -> None:
        for future in finished:
            future.result()  # a worker's failure (or a stopped pool) is raised here
            report(future)

    def hand_out() -> None:
        with lock:
            warm = sum(f.done() for f in ready) if ready is not None else jobs - 1
            handed = []
            while pending and len(running) < 2 * warm:
                spec = pending.popleft()
                handed.append(workers.submit(run, spec, *args, **kwargs))
                running[handed[-1]] = spec
            for future in handed:  # after the loop: a cell that ended already still counted against the two
                future.add_done_callback(report)

    if ready is not None and not all(f.done() for f in ready):
        threading.Thread(target=_hand_out_when_warm, args=(ready, hand_out), daemon=True).start()
    try:
        while True:
            hand_out()
            with lock:
                mine = pending.popleft() if pending else _NONE
                others = list(running)
            if mine is not _NONE:
                outcome = run(mine, *args, **kwargs)
                with lock:
                    done(mine, outcome)
                collect([f for f in others if f.done()])
            elif others:
                collect(wait(others, return_when=FIRST_COMPLETED)[0])
            else:
                break
        if ready is not None and not all(f.done() for f in ready):
            stop_workers(workers)  # every cell is done and a worker is still starting: do not wait for it
    except BaseException:
        stop_workers(workers)
        raise
    finally:
        if own:
            workers.shutdown(wait=True)


#: What this process takes when no cell is left (a spec may be any value, None included).
_NONE = object()


def _hand_out_when_warm(ready: Sequence[Any], hand_out: Callable[[], None]) -> None:
    """Hand cells out each time a cold worker becomes warm (run_cells' thread). When the grid has ended, or
    the pool was stopped under it, a hand-out finds nothing to hand or a pool that refuses work: either way
    there is nothing left for this thread to do."""
    from concurrent.futures import as_completed

    try:
        for _ in as_completed([f for f in ready if not f.done()]):
            hand_out()
    except Exception:  # noqa: BLE001 - the pool was shut down: the grid has ended or is ending
        return


def stop_workers(pool: Any, timeout: float = 5.0) -> None:
    """Stop a pool now (Ctrl-C): cancel the cells not started, end the running ones and wait for the workers
    to exit. Finished cells keep their records; a running cell leaves none (records are written atomically)
    and gives back its claim. ``shutdown(cancel_futures=True)`` alone would let the workers finish their
    running cells and the ones already queued to them."""
    # The pool's own process table: ProcessPoolExecutor has no public way to end a running call.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join(timeout)
