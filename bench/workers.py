"""Worker processes for ``run --jobs N``, startable before torch is imported in the calling process."""

from __future__ import annotations

from typing import Any

__all__ = ["start_workers"]


def _worker_init(threads: int) -> None:
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
