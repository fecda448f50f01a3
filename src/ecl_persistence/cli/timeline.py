"""Where the time of a workflow went: one bar per attempt on a shared time axis.

:func:`layout` places the attempts: pure arithmetic, shared by the web
dashboard's Gantt chart and ``ecl-db workflows show --timeline`` (which
:mod:`ecl_persistence.cli.bars` draws with rich). Nothing here imports
click or rich.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import attrs

from ecl_persistence.cli.documents import ms_between
from ecl_persistence.cli.times import format_ms, instant_ms
from ecl_persistence.domain import StepExecution, StepExecutionState

__all__ = [
    "CLIP_FACTOR",
    "Placed",
    "Timeline",
    "annotation",
    "layout",
    "offset_label",
    "origin_line",
]

CLIP_FACTOR = 2
"""How far (times the finished attempts' span) a running attempt may stretch the axis."""
_MINUTE_MS = 60_000
_MARKS = {
    StepExecutionState.SUCCEEDED: "",
    StepExecutionState.FAILED: "✗ failed",
    StepExecutionState.RUNNING: "… running",
    StepExecutionState.PENDING: "pending",
}


@attrs.frozen
class Placed:
    """One attempt on the axis: milliseconds from the timeline's origin."""

    execution: StepExecution
    start_ms: int
    end_ms: int
    open: bool
    """Still running: the bar reaches the time the timeline was drawn (or the clip)."""
    elapsed_ms: int
    """How long the attempt ran (a running one: until now), whatever the bar's length."""


@attrs.frozen
class Timeline:
    """The attempts of a workflow placed on one axis, in the order they started."""

    origin: datetime | None
    """When the first attempt started (``None`` without attempts)."""
    span_ms: int
    """From the origin to the end of the last bar, at least 1."""
    bars: tuple[Placed, ...]


def _end_ms(execution: StepExecution, origin: datetime, now: datetime) -> tuple[int, bool]:
    start = ms_between(origin, execution.started_at)
    if execution.completed_at is not None:
        return max(start, ms_between(origin, execution.completed_at)), False
    if execution.duration_ms is not None:
        return start + execution.duration_ms, False
    if execution.state is StepExecutionState.RUNNING:
        return max(start, ms_between(origin, now)), True
    return start, False


def layout(executions: Sequence[StepExecution], now: datetime) -> Timeline:
    """Place every attempt between the first start and the last end (``now`` for running ones).

    A running attempt that would stretch the axis past :data:`CLIP_FACTOR`
    times the rest (a worker that died long ago) is clipped to the rest's
    end; its annotation still says how long it has been running.
    """
    if not executions:
        return Timeline(origin=None, span_ms=1, bars=())
    origin = min(execution.started_at for execution in executions)
    ends = [_end_ms(execution, origin, now) for execution in executions]
    closed = [end for end, still_open in ends if not still_open]
    starts = [ms_between(origin, execution.started_at) for execution in executions]
    limit = CLIP_FACTOR * max([1, *closed, *starts])
    bars = [
        Placed(
            execution,
            start,
            min(end, max(limit, start)) if still_open and closed else end,
            still_open,
            end - start,
        )
        for execution, start, (end, still_open) in zip(executions, starts, ends, strict=True)
    ]
    span = max(1, *(bar.end_ms for bar in bars))
    return Timeline(origin=origin, span_ms=span, bars=tuple(bars))


def offset_label(milliseconds: float) -> str:
    """An offset on the axis: ``+250 ms``, ``+1.250 s``."""
    if milliseconds < 1000:
        return f"+{milliseconds:.0f} ms"
    return f"+{milliseconds / 1000:.3f} s"


def annotation(bar: Placed) -> str:
    """What follows a bar: duration, tokens, and a mark for a failed or unfinished attempt."""
    execution = bar.execution
    elapsed = bar.elapsed_ms
    parts = [f"{elapsed:,} ms" if elapsed < _MINUTE_MS else format_ms(elapsed)]
    if execution.tokens_used is not None:
        parts.append(f"{execution.tokens_used:,} tokens")
    if _MARKS[execution.state]:
        parts.append(_MARKS[execution.state])
    return " · ".join(parts)


def origin_line(timeline: Timeline) -> str:
    """The absolute time of the axis' zero and its length, for the heading."""
    if timeline.origin is None:
        return "No attempts."
    start = instant_ms(timeline.origin)
    return f"0 = {start} UTC (the first attempt's start); span {timeline.span_ms:,} ms"
