"""``ecl-db purge``: delete finished workflows older than an age, in batches.

On a terminal it says how many workflows it is about to delete and asks
first, like ``workflows delete``; ``--yes`` skips the question. Off a
terminal (a cron job) it does not ask, except for an age of zero, which
would delete every finished workflow: that needs ``--yes`` there.
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ecl_persistence.cli.documents import echo_json
from ecl_persistence.cli.render import console, json_option
from ecl_persistence.cli.runtime import CliError, ExitCode, database_url_option, run_with_database
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


# The earliest cutoff a datetime can hold.
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _age(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    try:
        age = parse_age(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    longest = utc_now() - _EARLIEST
    if age > longest:
        raise click.BadParameter(
            f"an age reaches back at most to the year 1, {longest.days} days from now"
        )
    return age


def _on_a_terminal() -> bool:
    """Whether a person can answer a question: stdin is a terminal."""
    return sys.stdin is not None and sys.stdin.isatty()


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
    help="Only this state (repeatable) [default: completed, failed and cancelled].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_PURGE_BATCH),
    default=DEFAULT_PURGE_BATCH,
    show_default=True,
    help="Workflows deleted per transaction.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be purged; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@database_url_option
def purge(
    older_than: timedelta,
    states: tuple[str, ...],
    batch_size: int,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete finished workflows (with their steps and artifacts) older than an age.

    On a terminal it asks first (``--yes`` does not); an age of zero, which
    deletes every finished workflow, needs ``--yes`` when no one can be asked.
    """
    cutoff = utc_now() - older_than
    chosen = [WorkflowState(state) for state in states] or list(FINISHED_STATES)
    everything = older_than <= timedelta(0)
    interactive = _on_a_terminal()
    if everything and not (yes or dry_run or interactive):
        raise CliError(
            "--older-than 0 purges every finished workflow: add --yes to confirm",
            ExitCode.USAGE,
        )

    async def count_due(db: Database) -> int:
        return await db.purge(finished_before=cutoff, states=chosen, dry_run=True)

    async def delete(db: Database) -> int:
        with _progress(enabled=not as_json) as progress:
            task = progress.add_task("purging", total=due)
            return await db.purge(
                finished_before=cutoff,
                states=chosen,
                batch_size=batch_size,
                on_batch=lambda deleted: progress.advance(task, deleted),
            )

    due = run_with_database(count_due)
    if dry_run or not due:
        count = due
    else:
        if (
            not yes
            and interactive
            and not click.confirm(
                _question(due, chosen, cutoff, everything=everything), default=False, err=True
            )
        ):
            raise CliError("nothing purged", ExitCode.NO)
        count = run_with_database(delete)
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


def _question(due: int, states: list[WorkflowState], cutoff: datetime, *, everything: bool) -> str:
    noun = "workflow" if due == 1 else "workflows"
    names = [state.value for state in states]
    which = " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"
    if everything:
        return f"Purge all {due} {which} {noun}, however recent, with their steps and artifacts?"
    return (
        f"Purge {due} {which} {noun} finished before {cutoff:%Y-%m-%d %H:%M:%S} UTC, "
        "with their steps and artifacts?"
    )


def _summary(count: int, cutoff: datetime, *, dry_run: bool) -> str:
    noun = "workflow" if count == 1 else "workflows"
    verb = "would purge" if dry_run else "purged"
    return f"{verb} {count} {noun} finished before {cutoff:%Y-%m-%d %H:%M:%S} UTC"
