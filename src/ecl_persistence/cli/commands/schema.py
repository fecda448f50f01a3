"""``ecl-db migrate``, ``current`` and ``check``: the schema revision of the database."""

from __future__ import annotations

import click

from ecl_persistence.cli.documents import echo_json
from ecl_persistence.cli.render import json_option
from ecl_persistence.cli.runtime import (
    CliError,
    ExitCode,
    SchemaStatus,
    database_url_option,
    read_schema_status,
    run_with_database,
    shown_url,
)
from ecl_persistence.database import Database
from ecl_persistence.migrations import head_revision

__all__ = ["check", "current", "migrate"]


async def _status(db: Database) -> tuple[str, SchemaStatus]:
    return shown_url(db.config), await read_schema_status(db)


def _document(url: str, status: SchemaStatus) -> dict[str, object]:
    return {
        "database": url,
        "revision": status.revision,
        "head": status.head,
        "at_head": status.at_head,
        "known": status.known,
    }


@click.command()
@database_url_option
def migrate() -> None:
    """Upgrade the database to the head revision.

    Creates the SQLite file if it does not exist yet; does nothing at head.
    """

    async def upgrade(db: Database) -> tuple[str, SchemaStatus]:
        url, before = await _status(db)
        if not before.known:
            raise CliError(str(before.problem()), ExitCode.NOT_MIGRATED)
        if not before.at_head:
            await db.migrate()
        return url, before

    url, before = run_with_database(upgrade, require_migrated=False)
    if before.at_head:
        click.echo(f"{url} is already at the head revision {before.head}.")
    else:
        click.echo(f"Migrated {url} from {before.revision or 'an empty schema'} to {before.head}.")


@click.command()
@json_option
@database_url_option
def current(as_json: bool) -> None:
    """Show the database's schema revision and whether it is the head."""
    url, status = run_with_database(_status, require_migrated=False)
    if as_json:
        echo_json(_document(url, status))
        return
    click.echo(f"database  {url}")
    if status.at_head:
        click.echo(f"revision  {status.revision} (head)")
    else:
        click.echo(f"revision  {status.revision or 'none'} (not the head, which is {status.head})")


@click.command()
@json_option
@database_url_option
def check(as_json: bool) -> None:
    """Exit 0 at the head revision, 1 when behind."""
    url, status = run_with_database(_status, require_migrated=False)
    if as_json:
        echo_json(_document(url, status))
    elif status.at_head:
        click.echo(f"{url} is at the head revision {head_revision()}.")
    if not status.at_head:
        raise CliError(str(status.problem()), ExitCode.NO)
