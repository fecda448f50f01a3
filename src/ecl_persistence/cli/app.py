"""The ``ecl-db`` command group."""

from __future__ import annotations

import click

from ecl_persistence import __version__
from ecl_persistence.cli.commands.demo import demo
from ecl_persistence.cli.commands.operations import cancel, fork, limits, retry
from ecl_persistence.cli.commands.purge import purge
from ecl_persistence.cli.commands.schema import check, current, migrate
from ecl_persistence.cli.commands.serve import serve
from ecl_persistence.cli.commands.stats import stats
from ecl_persistence.cli.commands.usage import usage
from ecl_persistence.cli.commands.workflows import workflows
from ecl_persistence.cli.runtime import database_url_option

__all__ = ["cli"]

_EPILOG = """\b
Exit codes: 0 ok; 1 no (check: behind; unknown id; declined;
nothing to resume; not in a state to cancel or retry); 2 bad usage
or input (a malformed id, an unknown step); 3 database unreachable;
4 database not migrated; 5 other database error; 6 demo crashed on
purpose (--crash-after).
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=_EPILOG)
@click.version_option(__version__, "--version", "-V", prog_name="ecl-db")
@database_url_option
def cli() -> None:
    """Look after an ECL workflow database: migrate it, run a demo, inspect what it holds."""


for _command in (migrate, current, check, demo, workflows, stats, usage, purge, serve, limits):
    cli.add_command(_command)
for _command in (cancel, retry, fork):
    workflows.add_command(_command)
