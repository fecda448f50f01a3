"""``ecl-db workflows cancel|retry|fork`` and ``ecl-db limits set|remove|list``.

What each writes is in ``docs/operations.md``. A workflow in a state the
operation does not apply to (cancelling a completed one) exits 1, like an
unknown id; a malformed id, an unknown step or bad JSON exits 2.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import click

from ecl_persistence.cli.commands.workflows import workflow_id_argument
from ecl_persistence.cli.documents import echo_json, workflow_document
from ecl_persistence.cli.render import json_option
from ecl_persistence.cli.runtime import CliError, ExitCode, database_url_option, run_with_database
from ecl_persistence.database import Database
from ecl_persistence.domain import (
    MAX_RUNNING,
    MISSING,
    ConcurrencyLimit,
    JsonValue,
    Missing,
    Workflow,
    WorkflowId,
    load_json,
)
from ecl_persistence.errors import InvalidStateTransitionError, SerializationError, ValidationError

__all__ = ["cancel", "fork", "limits", "retry"]

_ACTOR = "ecl-db"
"""Who the audit trail says made a change from the command line, unless ``--actor`` says."""

actor_option = click.option(
    "--actor",
    default=_ACTOR,
    show_default=True,
    help="Who the audit trail names for this change.",
)


def _on_a_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _change(write: Callable[[Database], Awaitable[Workflow]]) -> Workflow:
    """Run a change; a move the workflow's state does not allow is a "no" (exit 1)."""

    async def guarded(db: Database) -> Workflow:
        try:
            return await write(db)
        except InvalidStateTransitionError as error:
            raise CliError(str(error), ExitCode.NO) from None

    return run_with_database(guarded)


def _report(workflow: Workflow, as_json: bool, message: str) -> None:
    if as_json:
        echo_json(workflow_document(workflow))
    else:
        click.echo(message)


@click.command()
@workflow_id_argument
@click.option("--reason", help="Why: the audit trail keeps it.")
@actor_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (on a terminal).")
@json_option
@database_url_option
def cancel(
    workflow_id: WorkflowId, reason: str | None, actor: str, yes: bool, as_json: bool
) -> None:
    """Cancel a workflow: at once if pending or failed, at its next heartbeat if running.

    On a terminal it asks first, unless --yes.
    """
    if not yes and _on_a_terminal():
        question = f"Cancel workflow {workflow_id}?"
        if not click.confirm(question, default=False):
            raise CliError("nothing cancelled", ExitCode.NO)

    async def write(db: Database) -> Workflow:
        async with db.session() as uow:
            return await uow.workflows.cancel(workflow_id, reason=reason, actor=actor)

    workflow = _change(write)
    if workflow.state.is_finished:
        message = f"Cancelled workflow {workflow_id}."
    else:
        message = f"Asked the worker of workflow {workflow_id} to cancel it at its next heartbeat."
    _report(workflow, as_json, message)


@click.command()
@workflow_id_argument
@click.option("--reason", help="Why: the audit trail keeps it.")
@actor_option
@json_option
@database_url_option
def retry(workflow_id: WorkflowId, reason: str | None, actor: str, as_json: bool) -> None:
    """Make a failed or cancelled workflow pending again; its succeeded steps are not rerun."""

    async def write(db: Database) -> Workflow:
        async with db.session() as uow:
            return await uow.workflows.retry(workflow_id, actor=actor, reason=reason)

    workflow = _change(write)
    _report(workflow, as_json, f"Workflow {workflow_id} is pending again.")


def _json_input(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return MISSING
    try:
        return load_json(value)
    except (SerializationError, ValidationError) as error:
        raise click.BadParameter(str(error)) from None


@click.command()
@workflow_id_argument
@click.option("--from-step", "from_step", metavar="STEP", required=True, help="Rerun from here.")
@click.option(
    "--input",
    "input_",
    metavar="JSON",
    callback=_json_input,
    help="The fork's input, as JSON [default: the original's].",
)
@actor_option
@json_option
@database_url_option
def fork(
    workflow_id: WorkflowId,
    from_step: str,
    input_: JsonValue | Missing,
    actor: str,
    as_json: bool,
) -> None:
    """Start a new workflow that reuses the outputs of the steps before STEP and reruns the rest."""

    async def write(db: Database) -> Workflow:
        async with db.session() as uow:
            return await uow.workflows.fork(
                workflow_id, from_step=from_step, input=input_, actor=actor
            )

    workflow = _change(write)
    _report(workflow, as_json, f"Forked workflow {workflow_id} as {workflow.id}.")


# --- limits ------------------------------------------------------------------------------


def _limit_document(limit: ConcurrencyLimit) -> dict[str, Any]:
    return {
        "key": limit.key,
        "max_running": limit.max_running,
        "running": limit.running,
        "updated_at": limit.updated_at.isoformat(),
    }


def _max_running(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    if value.lower() == "none":
        return None
    if not value.isdecimal() or int(value) > MAX_RUNNING:
        raise click.BadParameter(f"give a number from 0 to {MAX_RUNNING}, or none")
    return int(value)


@click.group()
@database_url_option
def limits() -> None:
    """Set, remove and list the concurrency limits of keys."""


@limits.command("set")
@click.argument("key")
@click.argument("max_running", metavar="N", callback=_max_running)
@json_option
@database_url_option
def set_limit(key: str, max_running: int | None, as_json: bool) -> None:
    """Let at most N workflows of KEY run at once (0 pauses it; none removes the limit)."""
    limit = run_with_database(lambda db: _set(db, key, max_running))
    if as_json:
        echo_json(None if limit is None else _limit_document(limit))
    elif limit is None:
        click.echo(f"Removed the limit of {key!r}.")
    else:
        click.echo(f"At most {limit.max_running} of {key!r} run at once ({limit.running} now).")


@limits.command("remove")
@click.argument("key")
@database_url_option
def remove_limit(key: str) -> None:
    """Remove the limit of KEY: its workflows run as many at once as workers take."""
    run_with_database(lambda db: _set(db, key, None))
    click.echo(f"Removed the limit of {key!r}.")


@limits.command("list")
@json_option
@database_url_option
def list_limits(as_json: bool) -> None:
    """List every limit, with how many workflows of its key run now."""
    found = run_with_database(_list)
    if as_json:
        echo_json([_limit_document(limit) for limit in found])
        return
    if not found:
        click.echo("No concurrency limits.")
    for limit in found:
        click.echo(f"{limit.key}\t{limit.running}/{limit.max_running} running")


async def _set(db: Database, key: str, max_running: int | None) -> ConcurrencyLimit | None:
    async with db.session() as uow:
        return await uow.workflows.set_concurrency_limit(key, max_running)


async def _list(db: Database) -> list[ConcurrencyLimit]:
    async with db.session(read_only=True) as uow:
        return await uow.workflows.concurrency_limits()
