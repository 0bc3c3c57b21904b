"""Run the cells of a grid on a Ray cluster (``python -m bench run --executor ray [--ray-address auto]``).

Each cell is one Ray task (``num_cpus=1``, plus ``num_gpus=1`` when ``--device`` names a CUDA device)
that calls ``bench.cells.process_cell``: the same skip/claim/run/write as the local executor, so the
records are identical to a sequential run's (every cell is seeded on its own) and a rerun of the same
command resumes.

Ray is optional: ``pip install 'bench-mml[ray]'``. ``--ray-address`` is passed to ``ray.init``: left out,
bench starts a local Ray instance and shuts it down when the grid ends; ``auto`` (or ``ray://host:port``,
``host:port``) connects to an existing cluster, which is left running.

Requirements on a real cluster:

- every node runs the same Python environment with bench (and any plugin packages) installed, because
  the workers import ``bench.grid``;
- the results directory must be on a file system shared by all nodes (NFS or similar) at the same
  path: the tasks write their records there directly and use its ``.lock`` claims, and the driver reads it
  to build the tables. The path is made absolute before it is sent, since workers have another cwd.
  ``--data-root`` likewise must exist at the same path on every node.
- claims are per host: a lock left by a worker on a node that died is not taken over automatically
  (see ``bench.store.claim_cell``); delete it by hand.

CPU kernels: a task runs the kernel setting of the submitting process (native, or the AVX2 pin of
``--cpu-kernels avx2`` / ``BENCH_CPU_KERNELS=avx2``; bench.kernels): with the pin, its variables are given to
the tasks as Ray ``runtime_env`` environment variables, which Ray sets before the worker process starts, i.e.
before torch loads. Every record names the kernels it ran with.

Tasks request no GPU unless ``--device cuda...`` is given, and Ray hides the GPUs from such tasks, so
the default device resolves to the CPU inside Ray workers. ``--jobs`` is not used: Ray runs as many
cells at once as the cluster has CPUs (a local instance: this machine's cores).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.cells import CellOutcome, process_cell
from bench.errors import UsageError
from bench.kernels import kernel_env
from bench.spec import CellSpec
from bench.store import read_record, record_path

__all__ = ["RAY_MISSING", "run_cells_on_ray"]

RAY_MISSING = "--executor ray needs Ray: pip install 'bench-mml[ray]'"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    return ray


#: Execution settings read from the environment that a Ray task takes from the submitting process (a task
#: on another node does not inherit its environment). None of them changes a record.
FORWARDED_ENVIRONMENT = ("BENCH_DATA_WORKERS",)


def _ray_cell(spec: CellSpec, results_dir: str, threads: int, options: dict, env: dict) -> CellOutcome:
    """The body of one Ray task (a plain function, wrapped with ``ray.remote`` at submission)."""
    import torch

    os.environ.update(env)
    torch.set_num_threads(threads)
    return process_cell(spec, Path(results_dir), **options)


def _has_valid_record(spec: CellSpec, results_dir: Path) -> bool:
    path = record_path(results_dir, spec)
    return path.exists() and isinstance(read_record(path), dict)


def run_cells_on_ray(
    specs: Sequence[CellSpec],
    results_dir: Path,
    *,
    address: str | None,
    data_root: Path | None,
    overwrite: bool = False,
    device: str | None = None,
    threads: int = 1,
    progress: Callable[[CellSpec, str], None] | None = None,
    on_outcome: Callable[[CellSpec, CellOutcome], None] | None = None,
) -> list[tuple[CellSpec, CellOutcome]]:
    """Run ``specs`` as Ray tasks; (spec, outcome) pairs in the order the cells finished.

    ``progress(spec, status)`` and ``on_outcome(spec, outcome)`` are called as each cell finishes. Cells
    that already have a valid record are reported as cached without a task (and without starting Ray when
    all of them do). Ctrl-C cancels the tasks still queued or running; finished records are kept.
    """
    ray = _import_ray()
    results_dir = Path(results_dir).resolve()
    options = {
        "data_root": Path(data_root).resolve() if data_root is not None else None,
        "overwrite": overwrite,
        "device": device,
    }
    finished: list[tuple[CellSpec, CellOutcome]] = []

    def report(spec: CellSpec, cell: CellOutcome) -> None:
        finished.append((spec, cell))
        if on_outcome:
            on_outcome(spec, cell)
        if progress:
            progress(spec, cell.status)

    todo = []
    for spec in specs:
        if not overwrite and _has_valid_record(spec, results_dir):
            report(spec, CellOutcome(spec.label, "cached"))
        else:
            todo.append(spec)
    if not todo:
        return finished

    started = not ray.is_initialized()
    if started:
        # include_dashboard is only accepted when this call starts the instance.
        ray.init(address=address, **({"include_dashboard": False} if address is None else {}))
    try:
        gpus = 1 if device is not None and device.startswith("cuda") else 0
        pinned = kernel_env()  # native kernels: nothing to set; a pin must reach the workers before torch loads
        runtime = {"runtime_env": {"env_vars": {**pinned, "BENCH_CPU_KERNELS": "native"}}} if pinned else {}
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0, **runtime)(_ray_cell)
        env = {name: os.environ[name] for name in FORWARDED_ENVIRONMENT if name in os.environ}
        pending = {task.remote(spec, str(results_dir), threads, options, env): spec for spec in todo}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    spec = pending.pop(ref)
                    try:
                        cell = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        # An exception process_cell lets through (a UsageError): raise it as it is.
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, BaseException):
                            raise cause from None
                        raise
                    report(spec, cell)
        except BaseException:
            for ref in pending:
                # KeyboardInterrupt inside a running task: its claim is released and no record written.
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            raise
    finally:
        if started:
            ray.shutdown()
    return finished
