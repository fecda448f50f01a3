"""How a run ends when its block does not end it: what to suppress, why it was released."""

from __future__ import annotations

import asyncio

from ecl_persistence.errors import DbError

__all__ = ["RetryLater", "retryable", "why_released"]


class RetryLater(BaseException):
    """The run released its workflow until a step's next attempt is due: leave the block.

    A BaseException, like a cancellation, so that no ``except Exception`` of
    the block's own code keeps it from leaving.
    """


def retryable(error: Exception) -> bool:
    """Whether the block's exception may pass: a database error worth a later claim."""
    return isinstance(error, DbError) and error.retryable


def why_released(exc: BaseException, shutdown: bool) -> str:
    """The reason the audit trail gives for a release after ``exc`` left the block."""
    if shutdown:
        return "the worker shut down"
    if isinstance(exc, asyncio.CancelledError):
        return "the run was cancelled"
    return f"interrupted by {type(exc).__name__}"
