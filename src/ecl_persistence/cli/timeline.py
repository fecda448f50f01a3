"""Where the time of a workflow went: one bar per attempt on a shared time axis.

:func:`layout` places the attempts (pure arithmetic, shared with the web
dashboard's Gantt chart); :func:`timeline_table` draws them for a terminal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import attrs
from rich import box
from rich.table import Table
from rich.text import Text

from ecl_persistence.cli.documents import ms_between, visible
from ecl_persistence.cli.times import instant_ms
from ecl_persistence.domain import StepExecution, StepExecutionState

__all__ = ["Placed", "Timeline", "annotation", "layout", "origin_line", "timeline_table"]

_MIN_AXIS = 20
_MAX_LABEL = 32
_BAR = {
    StepExecutionState.SUCCEEDED: ("█", "green", ""),
    StepExecutionState.FAILED: ("█", "red", "✗ failed"),
    StepExecutionState.RUNNING: ("▒", "yellow", "… running"),
    StepExecutionState.PENDING: ("·", "dim", "pending"),
}


@attrs.frozen
class Placed:
    """One attempt on the axis: milliseconds from the timeline's origin."""

    execution: StepExecution
    start_ms: int
    end_ms: int
    open: bool
    """Still running: the bar ends at the time the timeline was drawn."""


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
    """Place every attempt between the first start and the last end (``now`` for running ones)."""
    if not executions:
        return Timeline(origin=None, span_ms=1, bars=())
    origin = min(execution.started_at for execution in executions)
    bars = []
    for execution in executions:
        end, still_open = _end_ms(execution, origin, now)
        bars.append(Placed(execution, ms_between(origin, execution.started_at), end, still_open))
    span = max(1, *(bar.end_ms for bar in bars))
    return Timeline(origin=origin, span_ms=span, bars=tuple(bars))


def _seconds(milliseconds: int) -> str:
    return f"+{milliseconds} ms" if milliseconds < 1000 else f"+{milliseconds / 1000:.3f} s"


def annotation(bar: Placed) -> str:
    """What follows a bar: duration, tokens, and a mark for a failed or unfinished attempt."""
    execution = bar.execution
    parts = [f"{bar.end_ms - bar.start_ms:,} ms"]
    if execution.tokens_used is not None:
        parts.append(f"{execution.tokens_used:,} tokens")
    mark = _BAR[execution.state][2]
    if mark:
        parts.append(mark)
    return " · ".join(parts)


def _axis(width: int, span_ms: int) -> Text:
    """Tick labels at the start, the middle and the end of the axis."""
    line = [" "] * width
    for fraction in (0.0, 0.5, 1.0):
        label = _seconds(round(span_ms * fraction))
        column = min(width - len(label), max(0, round((width - 1) * fraction) - len(label) // 2))
        if fraction == 1.0:
            column = width - len(label)
        line[column : column + len(label)] = label
    return Text("".join(line), style="dim")


def _track(bar: Placed, width: int, span_ms: int, note: str) -> Text:
    first = min(width - 1, math.floor(bar.start_ms / span_ms * width))
    last = max(first + 1, min(width, math.ceil(bar.end_ms / span_ms * width)))
    char, style, _mark = _BAR[bar.execution.state]
    track = Text(" " * first)
    track.append(char * (last - first), style=style)
    failed = bar.execution.state is StepExecutionState.FAILED
    track.append(" " + note, style="red" if failed else "")
    return track


def timeline_table(timeline: Timeline, width: int) -> Table:
    """A table of one row per attempt: step, attempt, start offset, then its bar and annotation."""
    notes = [annotation(bar) for bar in timeline.bars]
    labels = [min(_MAX_LABEL, len(visible(bar.execution.step_id))) for bar in timeline.bars]
    fixed = max([4, *labels]) + 8 + 12 + max([0, *map(len, notes)]) + 8
    axis_width = max(_MIN_AXIS, width - fixed)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("step", max_width=_MAX_LABEL, overflow="ellipsis", no_wrap=True)
    table.add_column("attempt", justify="right", no_wrap=True)
    table.add_column("start", justify="right", no_wrap=True)
    table.add_column(_axis(axis_width, timeline.span_ms), no_wrap=True)
    for bar, note in zip(timeline.bars, notes, strict=True):
        table.add_row(
            Text(visible(bar.execution.step_id)),
            str(bar.execution.attempt),
            _seconds(bar.start_ms),
            _track(bar, axis_width, timeline.span_ms, note),
        )
    return table


def origin_line(timeline: Timeline) -> str:
    """The absolute time of the axis' zero and its length, for the heading."""
    if timeline.origin is None:
        return "No attempts."
    start = instant_ms(timeline.origin)
    return f"0 = {start} UTC (the first attempt's start); span {timeline.span_ms:,} ms"
