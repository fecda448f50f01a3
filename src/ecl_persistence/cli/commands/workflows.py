"""``ecl-db workflows list|show|delete``: the stored workflows and their history."""

from __future__ import annotations

import uuid
from typing import Any

import click

from ecl_persistence.cli import queries
from ecl_persistence.cli.render import (
    details_document,
    echo_json,
    json_option,
    page_document,
    print_details,
    print_page,
)
from ecl_persistence.cli.runtime import CliError, ExitCode, database_url_option, run_with_database
from ecl_persistence.database import Database
from ecl_persistence.domain import WorkflowId, WorkflowState
from ecl_persistence.repositories.workflows import MAX_PAGE_SIZE

__all__ = ["payloads_option", "workflow_id_argument", "workflows"]

DEFAULT_LIMIT = 20


def _workflow_id(ctx: click.Context, param: click.Parameter, value: str) -> WorkflowId:
    try:
        return WorkflowId(uuid.UUID(value))
    except ValueError:
        raise click.BadParameter(f"{value[:60]!r} is not a workflow id (a UUID)") from None


workflow_id_argument = click.argument("workflow_id", metavar="ID", callback=_workflow_id)
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
    "--limit",
    type=click.IntRange(1, MAX_PAGE_SIZE),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="Workflows per page.",
)
@click.option("--cursor", help="Continue after the page that printed this cursor.")
@json_option
@database_url_option
def list_command(
    state: str | None, definition_id: str | None, limit: int, cursor: str | None, as_json: bool
) -> None:
    """List workflows, newest first, one page at a time."""

    async def fetch(db: Database) -> Any:
        return await queries.list_workflows(
            db,
            state=None if state is None else WorkflowState(state),
            definition_id=definition_id,
            limit=limit,
            cursor=cursor,
        )

    page = run_with_database(fetch)
    if as_json:
        echo_json(page_document(page))
    else:
        print_page(page)


@workflows.command()
@workflow_id_argument
@payloads_option
@json_option
@database_url_option
def show(workflow_id: WorkflowId, payloads: bool, as_json: bool) -> None:
    """Show a workflow, every attempt of every step in order, its artifacts and stats."""
    details = run_with_database(lambda db: queries.load_details(db, workflow_id))
    if as_json:
        echo_json(details_document(details, payloads=payloads))
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
