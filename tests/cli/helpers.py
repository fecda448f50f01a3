"""Helpers of the ``ecl-db`` tests: run the command in-process, read its JSON, seed a database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from click.testing import CliRunner, Result

from ecl_persistence import Database
from ecl_persistence.cli.app import cli

T = TypeVar("T")
Invoke = Callable[..., Result]


def invoke(args: Sequence[str], *, url: str | None = None, input: str | None = None) -> Result:
    """Run ``ecl-db [--database-url url] args`` in-process; unexpected exceptions propagate."""
    prefix = [] if url is None else ["--database-url", url]
    return CliRunner().invoke(cli, [*prefix, *args], input=input, catch_exceptions=False)


def json_of(result: Result) -> Any:
    """The JSON a successful ``--json`` command printed."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def on_database(url: str, action: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``action`` on a Database for ``url``, then dispose of it."""

    async def run() -> T:
        async with Database.from_url(url) as db:
            return await action(db)

    return asyncio.run(run())


def workflow_ids(url: str) -> set[object]:
    """The ids of the workflows stored in the database of ``url`` (up to 1,000)."""

    async def ids(db: Database) -> set[object]:
        async with db.session(read_only=True) as uow:
            return {w.id for w in (await uow.workflows.list(limit=1000)).items}

    return on_database(url, ids)
