"""``ecl-db workflows list|show|delete``: the stored workflows and their history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import click

from ecl_persistence.cli import queries
from ecl_persistence.cli.documents import details_document, echo_json, page_document
from ecl_persistence.cli.render import (
    json_option,
    print_details,
    print_page,
    print_stale,
    print_timeline,
)
from ecl_persistence.cli.runtime import CliError, ExitCode, database_url_option, run_with_database
from ecl_persistence.cli.times import parse_instant
from ecl_persistence.database import Database
from ecl_persistence.domain import Page, WorkflowId, WorkflowState, utc_now
from ecl_persistence.repositories.workflows import MAX_PAGE_SIZE

__all__ = [
    "instant_value",
    "payloads_option",
    "workflow_id_argument",
    "workflow_id_value",
    "workflows",
]

DEFAULT_LIMIT = 20


def workflow_id_value(ctx: click.Context, param: click.Parameter, value: str) -> WorkflowId:
    """Click callback: the workflow id ``value`` names, or a usage error if it is not a UUID."""
    try:
        return WorkflowId(uuid.UUID(value))
    except ValueError:
        raise click.BadParameter(f"{value[:60]!r} is not a workflow id (a UUID)") from None


def instant_value(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """Click callback: the UTC instant ``value`` names (ISO 8601 or an age such as ``7d``)."""
    if value is None:
        return None
    try:
        return parse_instant(value, utc_now())
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


workflow_id_argument = click.argument("workflow_id", metavar="ID", callback=workflow_id_value)
"""The ``ID`` argument of a command on one workflow."""

payloads_option = click.option(
    "--payloads",
    is_flag=True,
    help="Show inputs, outputs and metadata (by default only their sizes).",
)
"""The ``--payloads`` flag: payloads are the user's data, shown only on request."""


@click.group()
@database_url_option
def workflows() -> None:
    """List, show and delete workflows."""


@workflows.command("list")
@click.option(
    "--state", type=click.Choice([state.value for state in WorkflowState]), help="Only this state."
)
@click.option("--definition", "definition_id", metavar="ID", help="Only this definition.")
@click.option(
    "--stale",
    is_flag=True,
    help="Only running workflows whose lease expired (their worker stopped), "
    "the longest expired first; not with --state or --cursor.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_PAGE_SIZE),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="Workflows per page.",
)
@click.option(
    "--since",
    metavar="TIME",
    callback=instant_value,
    help="Only workflows created at or after TIME: ISO 8601 in UTC (2024-05-01T12:00) "
    "or an age (90m, 12h, 7d).",
)
@click.option(
    "--until",
    metavar="TIME",
    callback=instant_value,
    help="Only workflows created before TIME (same forms as --since).",
)
@click.option("--cursor", help="Continue after the page that printed this cursor.")
@json_option
@database_url_option
def list_command(
    state: str | None,
    definition_id: str | None,
    stale: bool,
    limit: int,
    since: datetime | None,
    until: datetime | None,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List workflows, newest first, one page at a time."""
    if stale:
        if since is not None or until is not None:
            raise click.UsageError("--stale cannot be combined with --since or --until")
        _list_stale(definition_id, limit, state=state, cursor=cursor, as_json=as_json)
        return

    async def fetch(db: Database) -> Any:
        return await queries.list_workflows(
            db,
            state=None if state is None else WorkflowState(state),
            definition_id=definition_id,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )

    page = run_with_database(fetch)
    if as_json:
        echo_json(page_document(page))
    else:
        print_page(page)


def _list_stale(
    definition_id: str | None, limit: int, *, state: str | None, cursor: str | None, as_json: bool
) -> None:
    # Stale workflows are running by definition, and they come as one list:
    # a worker that stopped leaves few, and --limit goes up to the page maximum.
    if state is not None or cursor is not None:
        given = "--state" if state is not None else "--cursor"
        raise click.UsageError(f"--stale cannot be combined with {given}")
    found = run_with_database(
        lambda db: queries.list_stale_workflows(db, definition_id=definition_id, limit=limit)
    )
    if as_json:
        echo_json(page_document(Page(items=tuple(found), next_cursor=None)))
    else:
        print_stale(found, utc_now())


@workflows.command()
@workflow_id_argument
@payloads_option
@click.option(
    "--timeline",
    is_flag=True,
    help="Draw one bar per attempt on a time axis (to the millisecond), "
    "with its duration and tokens; failed attempts marked.",
)
@json_option
@database_url_option
def show(workflow_id: WorkflowId, payloads: bool, timeline: bool, as_json: bool) -> None:
    """Show a workflow, every attempt of every step in order, its artifacts and stats."""
    details = run_with_database(lambda db: queries.load_details(db, workflow_id))
    if as_json:
        echo_json(details_document(details, payloads=payloads))
    elif timeline:
        print_timeline(details, utc_now())
    else:
        print_details(details, payloads=payloads)


@workflows.command()
@workflow_id_argument
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@database_url_option
def delete(workflow_id: WorkflowId, yes: bool) -> None:
    """Delete a workflow with its step executions and artifact records.

    The files the artifacts point to are left alone.
    """
    workflow = run_with_database(lambda db: queries.get_workflow(db, workflow_id))
    question = f"Delete {workflow.state.value} workflow {workflow.id} ({workflow.definition_id})?"
    if not yes and not click.confirm(question, default=False):
        raise CliError("nothing deleted", ExitCode.NO)
    run_with_database(lambda db: queries.delete_workflow(db, workflow_id))
    click.echo(f"Deleted workflow {workflow_id}.")
