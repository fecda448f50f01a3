"""Output of ``ecl-db`` for people: rich tables (``documents`` has the JSON for scripts).

Payloads (inputs, outputs, metadata) are the user's data and may be
sensitive: they are shown only on request (``--payloads``); otherwise their
size in bytes stands in for them. Error messages of failed attempts are shown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ecl_persistence.cli.bars import timeline_table
from ecl_persistence.cli.documents import ms_between, payload_size, visible
from ecl_persistence.cli.queries import Summary
from ecl_persistence.cli.timeline import layout, origin_line
from ecl_persistence.cli.times import clock_ms, format_ms, instant_ms
from ecl_persistence.domain import (
    MISSING,
    ExecutionStats,
    JsonValue,
    Missing,
    Page,
    StepExecutionState,
    TokenUsage,
    Workflow,
    WorkflowAggregate,
    WorkflowState,
    WorkflowTransition,
)

__all__ = [
    "console",
    "format_ms",
    "json_option",
    "print_details",
    "print_page",
    "print_stale",
    "print_summary",
    "print_timeline",
    "usage_cell",
]

_STATE_STYLES = {
    WorkflowState.PENDING: "dim",
    WorkflowState.RUNNING: "yellow",
    WorkflowState.COMPLETED: "green",
    WorkflowState.FAILED: "red",
    WorkflowState.CANCELLED: "magenta",
    StepExecutionState.PENDING: "dim",
    StepExecutionState.RUNNING: "yellow",
    StepExecutionState.SUCCEEDED: "green",
    StepExecutionState.FAILED: "red",
}


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
"""The ``--json`` flag of every read command."""


_PIPED_WIDTH = 160


def console() -> Console:
    """A console on the current standard output (the one click's test runner swaps in).

    Output to a pipe or a file gets a wide page rather than rich's 80 columns,
    so ids and paths come out whole; ``COLUMNS`` still decides when it is set.
    """
    out = Console(highlight=False, soft_wrap=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = _PIPED_WIDTH
    return out


# --- values ------------------------------------------------------------------------


def _time(value: datetime | None) -> str:
    # Milliseconds: the steps and changes of one workflow are often within a second.
    return "-" if value is None else f"{instant_ms(value)} UTC"


def _plain(value: str | None, *, lines: bool = False) -> Text:
    """Stored text as a rich ``Text``: never read as markup, controls shown as escapes."""
    return Text("-" if value is None else visible(value, lines=lines))


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _state(state: WorkflowState | StepExecutionState) -> Text:
    return Text(state.value, style=_STATE_STYLES[state])


def _lease(workflow: Workflow) -> str:
    if workflow.lease_owner is None or workflow.lease_expires_at is None:
        return "-"
    return f"{visible(workflow.lease_owner)} until {_time(workflow.lease_expires_at)}"


def _workflow_ms(workflow: Workflow) -> int | None:
    if workflow.completed_at is None:
        return None
    return ms_between(workflow.created_at, workflow.completed_at)


# --- tables ------------------------------------------------------------------------


def _heading(out: Console, title: str) -> None:
    out.print(Text(title, style="bold"), soft_wrap=True)


def _print_fields(out: Console, title: str, rows: Mapping[str, str | Text]) -> None:
    """A heading, then one ``name  value`` line per row."""
    _heading(out, title)
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in rows.items():
        table.add_row(name, value)
    out.print(table)


def _payload_cell(value: JsonValue | Missing | Mapping[str, JsonValue], payloads: bool) -> str:
    if value is MISSING:
        return "-"
    if payloads:
        return json.dumps(value, indent=2, ensure_ascii=False)
    return f"{payload_size(value):,} bytes (--payloads shows it)"


def _stats_line(stats: ExecutionStats) -> str:
    return (
        f"{stats.total_executions} executions: {stats.succeeded_count} succeeded, "
        f"{stats.failed_count} failed; {format_ms(stats.total_duration_ms)}, "
        f"{stats.total_tokens:,} tokens"
        + ("" if stats.total_cost is None else f", cost {stats.total_cost}")
    )


def usage_cell(usage: TokenUsage | None) -> str:
    """An attempt's usage, in/out/cached/reasoning, or ``-`` without one."""
    if usage is None:
        return "-"
    return (
        f"{usage.input_tokens:,}/{usage.output_tokens:,}/"
        f"{usage.cached_tokens:,}/{usage.reasoning_tokens:,}"
    )


def print_details(details: WorkflowAggregate, *, payloads: bool = False) -> None:
    """Print a workflow, its history, its step executions, its artifacts and its stats."""
    out = console()
    workflow = details.workflow
    _print_fields(
        out,
        f"Workflow {workflow.id}",
        {
            "definition": _plain(workflow.definition_id),
            "state": _state(workflow.state),
            "created": _time(workflow.created_at),
            "completed": _time(workflow.completed_at),
            "duration": format_ms(_workflow_ms(workflow)),
            "version": str(workflow.version),
            "lease": Text(_lease(workflow)),
            "claims": str(workflow.claim_count),
            "priority": str(workflow.priority),
            "run after": _time(workflow.run_after),
            "forked from": _plain(str(workflow.forked_from or "-")),
            "cancel asked": _time(workflow.cancel_requested_at),
            "error": _plain(workflow.error or "-", lines=True),
            "input": Text(_payload_cell(workflow.input, payloads)),
            "output": Text(_payload_cell(workflow.output, payloads)),
        },
    )
    _print_transitions(out, details.transitions)
    _heading(out, "\nStep executions")
    history = Table(box=box.SIMPLE_HEAD, show_edge=False)
    history.add_column("step", overflow="fold")
    for column in ("attempt", "state", "started", "duration", "tokens"):
        history.add_column(column, justify="left" if column == "state" else "right", no_wrap=True)
    # The ledger's columns only when an attempt recorded something for them.
    ledger = any(
        e.usage is not None or e.model is not None or e.cost is not None
        for e in details.step_executions
    )
    if ledger:
        history.add_column("in/out/cached/reasoning", justify="right", no_wrap=True)
        history.add_column("model", overflow="fold")
        history.add_column("cost", justify="right", no_wrap=True)
    history.add_column("error", overflow="fold")
    for execution in details.step_executions:
        history.add_row(
            _plain(execution.step_id),
            str(execution.attempt),
            _state(execution.state),
            clock_ms(execution.started_at),
            format_ms(execution.duration_ms),
            _count(execution.tokens_used),
            *(
                (
                    usage_cell(execution.usage),
                    _plain(execution.model),
                    "-" if execution.cost is None else str(execution.cost),
                )
                if ledger
                else ()
            ),
            _plain(execution.error or "", lines=True),
        )
    out.print(history)
    if details.artifacts:
        _heading(out, "\nArtifacts")
        artifacts = Table(box=box.SIMPLE_HEAD, show_edge=False)
        for column in ("step", "name", "content type", "size", "path"):
            artifacts.add_column(
                column,
                justify="right" if column == "size" else "left",
                overflow="fold",
                no_wrap=column == "size",
            )
        for artifact in details.artifacts:
            artifacts.add_row(
                _plain(artifact.step_id),
                _plain(artifact.name),
                _plain(artifact.content_type),
                f"{artifact.size_bytes:,} B",
                _plain(artifact.path),
            )
        out.print(artifacts)
    else:
        out.print("\nNo artifacts.")
    out.print("\n" + _stats_line(details.stats), soft_wrap=True)


def _print_transitions(out: Console, transitions: tuple[WorkflowTransition, ...]) -> None:
    """The audit trail: when, from which state to which, by whom and why."""
    _heading(out, "\nHistory")
    if not transitions:
        out.print("No recorded state changes.")
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("change", no_wrap=True)
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("actor", overflow="fold")
    table.add_column("reason", overflow="fold")
    for transition in transitions:
        change = Text("created " if transition.from_state is None else "")
        if transition.from_state is not None:
            change.append_text(_state(transition.from_state)).append(" → ")
        change.append_text(_state(transition.to_state))
        table.add_row(
            instant_ms(transition.at),
            change,
            str(transition.version),
            _plain(transition.actor),
            _plain(transition.reason or "", lines=True),
        )
    out.print(table)


def print_page(page: Page[Workflow]) -> None:
    """Print a page of workflows and how to get the next one."""
    out = console()
    if not page.items:
        out.print("No workflows.")
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("id", no_wrap=True, min_width=36)
    table.add_column("definition", overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    for workflow in page.items:
        table.add_row(
            str(workflow.id),
            _plain(workflow.definition_id),
            _state(workflow.state),
            instant_ms(workflow.created_at),
            format_ms(_workflow_ms(workflow)),
        )
    out.print(table)
    if page.next_cursor is not None:
        out.print(f"More: repeat with --cursor {page.next_cursor}", soft_wrap=True)


def print_stale(workflows: Sequence[Workflow], now: datetime) -> None:
    """Print running workflows whose lease expired: who held each, and since when it is free."""
    out = console()
    if not workflows:
        out.print("No stale workflows.")
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("id", no_wrap=True, min_width=36)
    table.add_column("definition", overflow="fold")
    table.add_column("lease owner", overflow="fold")
    table.add_column("lease expired (UTC)", no_wrap=True)
    table.add_column("ago", justify="right", no_wrap=True)
    table.add_column("claims", justify="right", no_wrap=True)
    for workflow in workflows:
        expired = workflow.lease_expires_at
        table.add_row(
            str(workflow.id),
            _plain(workflow.definition_id),
            _plain(workflow.lease_owner),
            instant_ms(expired),
            "-" if expired is None else format_ms(ms_between(expired, now)),
            str(workflow.claim_count),
        )
    out.print(table)
    out.print("A worker's next claim takes them over (a demo workflow: `ecl-db demo --resume ID`).")


def print_summary(summary: Summary) -> None:
    """Print the counts by state and the execution totals."""
    out = console()
    scope = (
        "all definitions"
        if summary.definition_id is None
        else f"definition {summary.definition_id!r}"
    )
    rows: dict[str, str | Text] = {
        state.value: f"{count:,}" for state, count in summary.workflows.items()
    }
    rows["total"] = f"{sum(summary.workflows.values()):,}"
    _print_fields(out, f"Workflows of {scope}", rows)
    totals = summary.executions
    _print_fields(
        out,
        "\nStep executions",
        {
            "total": f"{totals.total_executions:,}",
            "succeeded": f"{totals.succeeded_count:,}",
            "failed": f"{totals.failed_count:,}",
            "duration": format_ms(totals.total_duration_ms),
            "tokens": f"{totals.total_tokens:,}",
        },
    )


def print_timeline(details: WorkflowAggregate, now: datetime) -> None:
    """Print one bar per attempt on a time axis: where the workflow's time and tokens went.

    Bars start and end to the millisecond; a failed attempt is red and
    marked ``✗``, a running one reaches ``now``. Each bar ends with its
    duration and tokens.
    """
    out = console()
    workflow = details.workflow
    _heading(out, f"Timeline of workflow {workflow.id} ({visible(workflow.definition_id)})")
    timeline = layout(details.step_executions, now)
    out.print(origin_line(timeline), soft_wrap=True)
    if timeline.bars:
        out.print(timeline_table(timeline, out.width))
    out.print(_stats_line(details.stats), soft_wrap=True)
