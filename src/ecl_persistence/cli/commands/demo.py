"""``ecl-db demo``: run a small real workflow and print what was stored."""

from __future__ import annotations

from pathlib import Path

import click

from ecl_persistence.cli import queries
from ecl_persistence.cli.demo import StepFailedError, run_demo
from ecl_persistence.cli.render import details_document, echo_json, json_option, print_details
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

__all__ = ["demo"]


def _default_artifacts_root(config: DatabaseConfig) -> Path:
    """Next to a SQLite file; the working directory for PostgreSQL or memory."""
    database = config.async_url.database
    if config.dialect == "sqlite" and database:
        return Path(database).expanduser().parent
    return Path.cwd()


@click.command()
@click.option(
    "--artifacts-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where summary.md is written [default: the SQLite file's directory, else .]",
)
@json_option
@database_url_option
def demo(artifacts_dir: Path | None, as_json: bool) -> None:
    """Run a small workflow and print its history.

    Three toy steps, one of which fails on its first attempt and succeeds on
    its second; every attempt, an artifact, the output and the final state
    are stored. Migrates the database first if it is not at the head
    revision. Every run creates a new workflow.
    """

    async def run(db: Database) -> tuple[str | None, queries.WorkflowDetails]:
        status = await read_schema_status(db)
        problem = status.problem()
        migrated = None
        if problem is not None:
            if not status.known:
                raise CliError(problem, ExitCode.NOT_MIGRATED)
            await db.migrate()
            migrated = f"Migrated {shown_url(db.config)} to {status.head}."
        root = artifacts_dir or _default_artifacts_root(db.config)
        try:
            workflow_id = await run_demo(db, root)
        except StepFailedError as error:
            raise CliError(str(error), ExitCode.DATABASE_ERROR) from None
        return migrated, await queries.load_details(db, workflow_id)

    migrated, details = run_with_database(run, require_migrated=False)
    if as_json:
        echo_json(details_document(details))
        return
    if migrated:
        click.echo(migrated)
    print_details(details)
    workflow_id = details.workflow.id
    click.echo(
        f"\nSee it again with `ecl-db workflows show {workflow_id}`; totals: `ecl-db stats`."
    )
