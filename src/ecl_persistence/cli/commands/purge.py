"""``ecl-db purge``: delete finished workflows older than an age, in batches."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ecl_persistence.cli.documents import echo_json
from ecl_persistence.cli.render import console, json_option
from ecl_persistence.cli.runtime import database_url_option, run_with_database
from ecl_persistence.database import Database
from ecl_persistence.domain import WorkflowState, utc_now
from ecl_persistence.retention import DEFAULT_PURGE_BATCH, FINISHED_STATES, MAX_PURGE_BATCH

__all__ = ["parse_age", "purge"]

_AGE = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """Parse an age such as ``30d``, ``12h``, ``90m``, ``2w`` or ``45s``."""
    match = _AGE.match(text)
    if match is None:
        raise ValueError("an age is a number and a unit: 30d, 12h, 90m, 2w or 45s")
    amount, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(amount)})


def _age(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    try:
        return parse_age(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command()
@click.option(
    "--older-than",
    required=True,
    metavar="AGE",
    callback=_age,
    help="Purge workflows that finished longer ago than this: 30d, 12h, 90m, 2w.",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([state.value for state in FINISHED_STATES]),
    help="Only this state (repeatable) [default: completed and failed].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_PURGE_BATCH),
    default=DEFAULT_PURGE_BATCH,
    show_default=True,
    help="Workflows deleted per transaction.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be purged; delete nothing.")
@json_option
@database_url_option
def purge(
    older_than: timedelta,
    states: tuple[str, ...],
    batch_size: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Delete finished workflows (with their steps and artifacts) older than an age."""
    cutoff = utc_now() - older_than
    chosen = [WorkflowState(state) for state in states] or list(FINISHED_STATES)

    async def run(db: Database) -> int:
        due = await db.purge(finished_before=cutoff, states=chosen, dry_run=True)
        if dry_run or not due:
            return due
        with _progress(enabled=not as_json) as progress:
            task = progress.add_task("purging", total=due)
            return await db.purge(
                finished_before=cutoff,
                states=chosen,
                batch_size=batch_size,
                on_batch=lambda deleted: progress.advance(task, deleted),
            )

    count = run_with_database(run)
    if as_json:
        echo_json({"purged": 0 if dry_run else count, "would_purge": count if dry_run else None,
                   "finished_before": cutoff.isoformat(), "dry_run": dry_run})  # fmt: skip
        return
    console().print(_summary(count, cutoff, dry_run=dry_run))


def _progress(*, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console(),
        transient=True,
        disable=not enabled,
    )


def _summary(count: int, cutoff: datetime, *, dry_run: bool) -> str:
    noun = "workflow" if count == 1 else "workflows"
    verb = "would purge" if dry_run else "purged"
    return f"{verb} {count} {noun} finished before {cutoff:%Y-%m-%d %H:%M:%S} UTC"
