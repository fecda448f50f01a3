"""A child process for the reliability tests: it writes, then dies or races.

``python -m tests.reliability._child crash URL self|wait``
    Commits one workflow, then inside a second unit of work writes a
    workflow, a step and an artifact (each statement sent to the database)
    and either SIGKILLs itself or waits for the parent to do it.

``python -m tests.reliability._child race URL UNITS``
    Waits for a line on stdin, then runs UNITS concurrent read-then-write
    units of work (see :func:`race`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from sqlalchemy import text
from tests.factories import persist_artifact, persist_step, persist_workflow

from ecl_persistence import Database, Workflow

RACE_DEFINITION = "race"


async def crash(url: str, how: str) -> None:
    """Commit one workflow, then die in the middle of a second unit of work."""
    db = Database.from_url(url)
    async with db.session() as uow:
        kept = await persist_workflow(uow, definition_id="kept")
    print("COMMITTED", kept.id, flush=True)
    async with db.session() as uow:
        lost = await persist_workflow(uow, definition_id="lost")
        await persist_step(uow, lost)
        await persist_artifact(uow, lost)
        await persist_step(uow, kept)
        if db.dialect == "postgresql":
            pid = (await uow.execute(text("SELECT pg_backend_pid()"), action="pid")).scalar_one()
        else:
            pid = os.getpid()
        print("WRITTEN", lost.id, pid, flush=True)
        if how == "self":
            os.kill(os.getpid(), signal.SIGKILL)
        await asyncio.sleep(3600)


async def race(url: str, units: int) -> None:
    """Run ``units`` units of work at once, each counting the race rows and then adding one.

    Each stores the count it saw: if the units are serialized, the counts
    seen over all units (and all processes) are distinct.
    """
    db = Database.from_url(url, max_connections=units, timeout_secs=60)

    async def read_then_write() -> None:
        async with db.session() as uow:
            seen = len(await uow.workflows.list_by_definition(RACE_DEFINITION))
            await asyncio.sleep(0.005)  # the other units run between the read and the write
            await uow.workflows.create(Workflow.new(RACE_DEFINITION, {"seen": seen}))

    try:
        await asyncio.gather(*(read_then_write() for _ in range(units)))
    finally:
        await db.dispose()


def main(argv: list[str]) -> None:
    """Dispatch on the first argument."""
    command, url, argument = argv
    if command == "crash":
        asyncio.run(crash(url, argument))
    else:
        print("READY", flush=True)
        sys.stdin.readline()
        asyncio.run(race(url, int(argument)))
        print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
