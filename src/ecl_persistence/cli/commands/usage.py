"""``ecl-db usage``: the token and cost ledger, grouped by model, definition or day."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from rich import box
from rich.table import Table
from rich.text import Text

from ecl_persistence.cli.commands.workflows import instant_value
from ecl_persistence.cli.documents import echo_json, ledger_row_document, visible
from ecl_persistence.cli.render import console, json_option
from ecl_persistence.cli.runtime import database_url_option, run_with_database
from ecl_persistence.database import Database
from ecl_persistence.domain import UsageRow

__all__ = ["ledger_document", "print_ledger", "usage"]

_GROUP_TITLES = {"model": "model", "definition": "definition", "day": "day (UTC)"}


@click.command()
@click.option(
    "--by",
    "group_by",
    type=click.Choice(["model", "definition", "day"]),
    help="Group the attempts (default: one total).",
)
@click.option(
    "--since",
    metavar="WHEN",
    callback=instant_value,
    help="Only attempts started since WHEN: ISO 8601, or an age such as 7d, 12h, 30m.",
)
@click.option(
    "--until",
    metavar="WHEN",
    callback=instant_value,
    help="Only attempts started before WHEN (same forms as --since).",
)
@click.option("--definition", "definition_id", metavar="ID", help="Only this definition.")
@json_option
@database_url_option
def usage(
    group_by: str | None,
    since: datetime | None,
    until: datetime | None,
    definition_id: str | None,
    as_json: bool,
) -> None:
    """Attempts, tokens of each kind and cost, summed in the database."""

    async def read(db: Database) -> list[UsageRow]:
        async with db.session(read_only=True) as uow:
            return await uow.step_executions.usage(
                definition_id=definition_id,
                since=since,
                until=until,
                group_by=group_by,  # type: ignore[arg-type]
            )

    rows = run_with_database(read)
    if as_json:
        echo_json(ledger_document(rows, group_by))
    else:
        print_ledger(rows, group_by)


def ledger_document(rows: list[UsageRow], group_by: str | None) -> dict[str, Any]:
    """The ledger as JSON: its grouping and one object per row (costs as exact text)."""
    return {"group_by": group_by, "rows": [ledger_row_document(row) for row in rows]}


def print_ledger(rows: list[UsageRow], group_by: str | None) -> None:
    """Print the ledger as a table, one row per group (or one total)."""
    out = console()
    if not rows:
        out.print("No step executions match.")
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    if group_by is not None:
        table.add_column(_GROUP_TITLES[group_by], overflow="fold")
    for column in ("attempts", "with usage", "input", "output", "cached", "reasoning", "total"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("cost", justify="right", no_wrap=True)
    for row in rows:
        cells: list[str | Text] = []
        if group_by is not None:
            cells.append(Text("-" if row.key is None else visible(row.key)))
        cells.extend(
            f"{value:,}"
            for value in (
                row.attempts,
                row.recorded,
                row.input_tokens,
                row.output_tokens,
                row.cached_tokens,
                row.reasoning_tokens,
                row.total_tokens,
            )
        )
        cells.append("-" if row.cost is None else str(row.cost))
        table.add_row(*cells)
    out.print(table)
