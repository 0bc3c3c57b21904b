"""Wrappers a test puts around a library function (through monkeypatch) to count its calls or to stop a run
part-way, as the media adapters' cache tests do (one copy instead of one per test file)."""

from __future__ import annotations


def count_calls(monkeypatch, owner, name: str) -> list[int]:
    """Replace ``owner.name`` by a wrapper that counts its calls in the returned ``[count]`` and runs the real one."""
    calls = [0]
    real = getattr(owner, name)

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls


def interrupt_at_call(monkeypatch, owner, name: str, n: int) -> list[int]:
    """Replace ``owner.name`` so that its n-th call raises KeyboardInterrupt, as if the user pressed Ctrl-C
    half-way; the calls before it run the real function. Returns the ``[count]`` of calls."""
    calls = [0]
    real = getattr(owner, name)

    def interrupting(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupting)
    return calls
