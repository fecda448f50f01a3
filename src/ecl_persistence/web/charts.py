"""The geometry of the dashboard's SVG charts; the templates draw it, escaping every text.

The Gantt chart places attempts with :func:`ecl_persistence.cli.timeline.layout`,
the same arithmetic as ``ecl-db workflows show --timeline``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import attrs

from ecl_persistence.cli.timeline import annotation, layout, offset_label
from ecl_persistence.domain import StepExecution, StepExecutionState

__all__ = [
    "MAX_BARS",
    "STATE_COLOURS",
    "Column",
    "ColumnChart",
    "Gantt",
    "GanttBar",
    "Tick",
    "column_chart",
    "gantt",
]

STATE_COLOURS = {
    StepExecutionState.SUCCEEDED: "#2e7d32",
    StepExecutionState.FAILED: "#c62828",
    StepExecutionState.RUNNING: "#f9a825",
    StepExecutionState.PENDING: "#9e9e9e",
}
"""The fill of a Gantt bar by the attempt's state (the legend shows the same)."""

MAX_BARS = 500
"""The most attempts a Gantt chart draws; the attempts table still lists them all."""

_LABEL_WIDTH = 190
_PLOT_WIDTH = 620
_NOTE_WIDTH = 190
_ROW = 22
_BAR_HEIGHT = 14
_AXIS = 26
_TICKS = 4


@attrs.frozen
class Tick:
    """A mark on the time axis."""

    x: float
    label: str


@attrs.frozen
class GanttBar:
    """One attempt's bar."""

    execution: StepExecution
    x: float
    y: float
    width: float
    colour: str
    note: str
    """Duration and tokens, written after the bar."""
    title: str
    """The tooltip: step, attempt, state, start offset, duration, tokens."""


@attrs.frozen
class Gantt:
    """The chart of a workflow's attempts: one bar per attempt, in the order they started."""

    width: int
    height: int
    label_width: int
    plot_width: int
    row_height: int
    bar_height: int
    axis_height: int
    bars: tuple[GanttBar, ...]
    ticks: tuple[Tick, ...]
    origin: datetime | None
    span_ms: int
    hidden: int
    """Attempts left out of the chart beyond :data:`MAX_BARS`."""


def gantt(executions: Sequence[StepExecution], now: datetime) -> Gantt:
    """Place the attempts (the first :data:`MAX_BARS`) on a time axis from the first start."""
    timeline = layout(executions[:MAX_BARS], now)
    scale = _PLOT_WIDTH / timeline.span_ms
    bars = []
    for row, placed in enumerate(timeline.bars):
        execution = placed.execution
        note = annotation(placed)
        bars.append(
            GanttBar(
                execution=execution,
                x=_LABEL_WIDTH + placed.start_ms * scale,
                y=_AXIS + row * _ROW + (_ROW - _BAR_HEIGHT) / 2,
                width=max(2.0, (placed.end_ms - placed.start_ms) * scale),
                colour=STATE_COLOURS[execution.state],
                note=note,
                title=(
                    f"{execution.step_id} attempt {execution.attempt}: {execution.state.value}, "
                    f"started {offset_label(placed.start_ms)}, {note}"
                ),
            )
        )
    ticks = tuple(
        Tick(_LABEL_WIDTH + _PLOT_WIDTH * i / _TICKS, offset_label(timeline.span_ms * i / _TICKS))
        for i in range(_TICKS + 1)
    )
    return Gantt(
        width=_LABEL_WIDTH + _PLOT_WIDTH + _NOTE_WIDTH,
        height=_AXIS + max(1, len(bars)) * _ROW + 4,
        label_width=_LABEL_WIDTH,
        plot_width=_PLOT_WIDTH,
        row_height=_ROW,
        bar_height=_BAR_HEIGHT,
        axis_height=_AXIS,
        bars=tuple(bars),
        ticks=ticks,
        origin=timeline.origin,
        span_ms=timeline.span_ms,
        hidden=max(0, len(executions) - MAX_BARS),
    )


@attrs.frozen
class Column:
    """One column of a column chart."""

    label: str
    value: int
    x: float
    y: float
    width: float
    height: float
    labelled: bool
    """Whether the label is written under the column (every one when there is room)."""


@attrs.frozen
class ColumnChart:
    """Columns scaled to the largest value; ``total`` is the sum the chart shows."""

    width: int
    height: int
    plot_height: int
    columns: tuple[Column, ...]
    total: int
    largest: int


def column_chart(values: Sequence[tuple[str, int]], *, width: int = 820) -> ColumnChart:
    """Columns of ``(label, value)``, left to right, under a common scale."""
    plot_height = 160
    largest = max([1, *(value for _label, value in values)])
    step = width / max(1, len(values))
    every = max(1, round(64 / step))
    columns = tuple(
        Column(
            label=label,
            value=value,
            x=index * step + step * 0.1,
            y=20 + plot_height - value / largest * plot_height,
            width=step * 0.8,
            height=value / largest * plot_height,
            labelled=index % every == 0,
        )
        for index, (label, value) in enumerate(values)
    )
    return ColumnChart(
        width=width,
        height=plot_height + 50,
        plot_height=plot_height,
        columns=columns,
        total=sum(value for _label, value in values),
        largest=largest,
    )
