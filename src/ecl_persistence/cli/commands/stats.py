"""``ecl-db stats``: workflows by state and the totals of their step executions."""

from __future__ import annotations

import click

from ecl_persistence.cli import queries
from ecl_persistence.cli.documents import echo_json, summary_document
from ecl_persistence.cli.render import json_option, print_summary
from ecl_persistence.cli.runtime import database_url_option, run_with_database

__all__ = ["stats"]


@click.command()
@click.option("--definition", "definition_id", metavar="ID", help="Only this definition.")
@json_option
@database_url_option
def stats(definition_id: str | None, as_json: bool) -> None:
    """Workflows by state; step executions, durations, tokens."""
    summary = run_with_database(lambda db: queries.load_summary(db, definition_id))
    if as_json:
        echo_json(summary_document(summary))
    else:
        print_summary(summary)
