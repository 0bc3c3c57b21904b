"""Exceptions with one-line messages that say what is wrong and what to do.

``UsageError`` is the user's to fix (bad name, bad value, missing data): the CLI prints its message on one
line and exits with status 2. ``CellFailure`` ends one cell (non-finite loss, an exception inside a
plugin); the grid records it as failed and goes on.
"""

from __future__ import annotations

__all__ = ["CellFailure", "UsageError"]


class UsageError(Exception):
    """Bad input: the message is one line naming the problem and the fix."""


class CellFailure(Exception):
    """A cell that cannot produce a number; recorded with ``status = "failed"`` and this reason."""
