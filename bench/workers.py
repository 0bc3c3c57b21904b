"""Worker processes for ``run --jobs N``, startable before torch is imported in the calling process."""

from __future__ import annotations

from typing import Any

__all__ = ["start_workers", "stop_workers"]


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
    """A no-op task: submitting one per worker makes the pool spawn all its workers now."""


def start_workers(jobs: int, threads: int) -> Any:
    """A pool of ``jobs`` spawned worker processes, started at once.

    Spawning a worker costs an interpreter start and the torch import (about 2 s here). Starting the pool
    before the grid is planned lets that overlap with the planning, which imports torch too; ``run_grid``
    then uses the warm workers. The caller shuts the pool down (``with start_workers(...) as pool``).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked child of a process that has used OpenMP threads can hang.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init, initargs=(threads,))
    for _ in range(jobs):
        pool.submit(_ready)
    return pool


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
