"""One table built in a forked child process while this one builds the others: ``bench table`` over a lab's
100,000 records spends about half its time on the leaderboard, which depends on nothing the other pages
compute, so on a machine with a second core the two halves run side by side (benchmarks/table_scale.py).

The child is a ``fork`` of this process, so it starts with the records already loaded (nothing is pickled
but the result), and what it returns is what the same call would return here. Below :data:`FORK_AT`
records, where ``fork`` is unavailable (Windows), on a single core, or when the child fails in any way, the
function simply runs in this process: the result never depends on how it was computed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sized
from typing import Any, TypeVar

__all__ = ["FORK_AT", "in_child"]

#: Fewer records than this are tabulated in one process: forking and sending the result back cost more
#: than the overlap saves (the committed 5,578 records take under 2 s in all).
FORK_AT = 20_000

T = TypeVar("T")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def in_child(function: Callable[[Any], T], records: Sized, *, fork_at: int | None = None) -> Callable[[], T]:
    """Start ``function(records)`` and return a function that waits for and returns its result. It runs in a
    forked child when there are at least ``fork_at`` records (default :data:`FORK_AT`) and a second core;
    otherwise (or if the child dies, raises or sends nothing) it runs here, when the result is asked for."""
    if len(records) < (FORK_AT if fork_at is None else fork_at) or not hasattr(os, "fork") or _cores() < 2:
        return lambda: function(records)
    import multiprocessing

    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_run_and_send, args=(function, records, sender), daemon=True)
    child.start()
    sender.close()

    def result() -> T:
        try:
            ok, value = receiver.recv()  # before join: a large result must leave the pipe for the child to exit
        except (EOFError, OSError):
            ok, value = False, None
        finally:
            receiver.close()
            child.join()
        return value if ok else function(records)

    return result


def _run_and_send(function: Callable[[Any], Any], records: Any, sender: Any) -> None:
    try:
        outcome = (True, function(records))
    except BaseException:  # noqa: BLE001 - any failure: the parent computes it itself
        outcome = (False, None)
    sender.send(outcome)
    sender.close()
