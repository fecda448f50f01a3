"""``ecl-db workflows show --timeline``: the attempts' bars drawn for a terminal, with rich."""

from __future__ import annotations

import math

from rich import box
from rich.table import Table
from rich.text import Text

from ecl_persistence.cli.documents import visible
from ecl_persistence.cli.timeline import Placed, Timeline, annotation, offset_label
from ecl_persistence.domain import StepExecutionState

__all__ = ["timeline_table"]

_MIN_AXIS = 20
_MAX_LABEL = 32
_BAR = {
    StepExecutionState.SUCCEEDED: ("█", "green"),
    StepExecutionState.FAILED: ("█", "red"),
    StepExecutionState.RUNNING: ("▒", "yellow"),
    StepExecutionState.PENDING: ("·", "dim"),
}


def _axis(width: int, span_ms: int) -> Text:
    """Tick labels at the start, the middle and the end of the axis."""
    line = [" "] * width
    for fraction in (0.0, 0.5, 1.0):
        label = offset_label(round(span_ms * fraction))
        column = min(width - len(label), max(0, round((width - 1) * fraction) - len(label) // 2))
        if fraction == 1.0:
            column = width - len(label)
        line[column : column + len(label)] = label
    return Text("".join(line), style="dim")


def _track(bar: Placed, width: int, span_ms: int, note: str) -> Text:
    first = min(width - 1, math.floor(bar.start_ms / span_ms * width))
    last = max(first + 1, min(width, math.ceil(bar.end_ms / span_ms * width)))
    char, style = _BAR[bar.execution.state]
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
            offset_label(bar.start_ms),
            _track(bar, axis_width, timeline.span_ms, note),
        )
    return table
