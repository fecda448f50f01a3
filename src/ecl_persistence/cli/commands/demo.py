"""``ecl-db demo``: run a small real workflow as a worker would, crash it, resume it."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

import attrs
import click
from rich.progress import BarColumn, Progress, TextColumn

from ecl_persistence.cli import queries
from ecl_persistence.cli.commands.workflows import workflow_id_value
from ecl_persistence.cli.demo import (
    DEFAULT_LEASE_SECONDS,
    MAX_LEASE_SECONDS,
    STEPS,
    CannotResumeError,
    CrashPlan,
    CrashPoint,
    StepFailedError,
    WorkflowLostError,
    run_demo,
)
from ecl_persistence.cli.documents import details_document, echo_json
from ecl_persistence.cli.render import console, json_option, print_details
from ecl_persistence.cli.runtime import (
    CliError,
    ExitCode,
    database_url_option,
    read_schema_status,
    run_with_database,
    shown_url,
)
from ecl_persistence.config import DatabaseConfig
from ecl_persistence.database import Database
from ecl_persistence.domain import WorkflowAggregate, WorkflowId

__all__ = ["demo"]

_MIN_LEASE_SECONDS = 0.1


def _default_artifacts_root(config: DatabaseConfig) -> Path:
    """Next to a SQLite file; the working directory for PostgreSQL or memory."""
    path = config.strategy.local_file(config.async_url)
    return Path.cwd() if path is None else path.parent


@attrs.frozen
class _Printer:
    """Progress for people on standard output; nothing with ``--json``."""

    quiet: bool

    def note(self, message: str) -> None:
        if not self.quiet:
            console().print(message, soft_wrap=True, markup=False)

    async def wait(self, seconds: float, message: str) -> None:
        self.note(message)
        deadline = time.monotonic() + seconds
        # The countdown shows on a terminal only: it leaves no trace in a pipe.
        with Progress(
            TextColumn("the lease expires in {task.fields[left]:.1f} s"),
            BarColumn(),
            console=console(),
            transient=True,
            disable=self.quiet,
        ) as progress:
            countdown = progress.add_task("lease", total=seconds, left=seconds)
            while (left := deadline - time.monotonic()) > 0:
                progress.update(countdown, completed=seconds - left, left=left)
                await asyncio.sleep(min(left, 0.1))


def _crash(point: CrashPoint) -> NoReturn:
    """End the process at once, as a crash would: nothing is released, closed or flushed."""
    click.echo(
        f"Crashed on purpose after step {point.step}: workflow {point.workflow_id} is left "
        f"running, leased to {point.worker_id} until {point.lease_expires_at:%H:%M:%S} UTC.\n"
        f"Resume it with `ecl-db demo --resume {point.workflow_id}` "
        "(it waits for the lease to expire).",
        err=True,
    )
    # os._exit skips the buffers' flush along with everything else.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(ExitCode.CRASHED)


def _optional_workflow_id(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> WorkflowId | None:
    return None if value is None else workflow_id_value(ctx, param, value)


@click.command()
@click.option(
    "--artifacts-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where summary.md is written [default: the SQLite file's directory, else .]",
)
@click.option(
    "--crash-after",
    type=click.Choice(STEPS),
    metavar="STEP",
    help=f"Crash on purpose once STEP ({', '.join(STEPS)}) succeeded: exit {ExitCode.CRASHED} "
    "and leave the workflow running, leased.",
)
@click.option(
    "--resume",
    "resume_id",
    metavar="ID",
    callback=_optional_workflow_id,
    help="Resume this demo workflow once its lease expired, skipping the succeeded steps.",
)
@click.option(
    "--lease-seconds",
    type=click.FloatRange(_MIN_LEASE_SECONDS, MAX_LEASE_SECONDS),
    default=DEFAULT_LEASE_SECONDS,
    show_default=True,
    help="How long the demo's claim holds its workflow between heartbeats.",
)
@json_option
@database_url_option
def demo(
    artifacts_dir: Path | None,
    crash_after: str | None,
    resume_id: WorkflowId | None,
    lease_seconds: float,
    as_json: bool,
) -> None:
    """Run a small workflow as a worker would, and print its history.

    Three toy steps, one of which fails on its first attempt and succeeds on
    its second. The demo is a worker: it claims its workflow with a short
    lease, which a heartbeat keeps, and records every attempt, an artifact,
    the output and the final state, each write fenced by the lease. Migrates
    the database first if it is not at the head revision. Every run creates a
    new workflow, unless --resume names one that a crashed run left behind.
    """
    printer = _Printer(quiet=as_json)
    crash = None if crash_after is None else CrashPlan(crash_after, _crash)

    async def run(db: Database) -> WorkflowAggregate:
        status = await read_schema_status(db)
        problem = status.problem()
        if problem is not None:
            if not status.known:
                raise CliError(problem, ExitCode.NOT_MIGRATED)
            await db.migrate()
            printer.note(f"Migrated {shown_url(db.config)} to {status.head}.")
        root = artifacts_dir or _default_artifacts_root(db.config)
        try:
            workflow_id = await run_demo(
                db, root, printer, resume=resume_id, lease_seconds=lease_seconds, crash=crash
            )
        except StepFailedError as error:
            raise CliError(str(error), ExitCode.DATABASE_ERROR) from None
        except CannotResumeError as error:
            code = ExitCode.USAGE if error.bad_input else ExitCode.NO
            raise CliError(str(error), code) from None
        except WorkflowLostError as error:
            raise CliError(str(error), ExitCode.NO) from None
        return await queries.load_details(db, workflow_id)

    details = run_with_database(run, require_migrated=False)
    if as_json:
        echo_json(details_document(details))
        return
    click.echo()
    print_details(details)
    workflow_id = details.workflow.id
    click.echo(
        f"\nSee it again with `ecl-db workflows show {workflow_id}`; totals: `ecl-db stats`."
    )
