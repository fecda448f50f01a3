"""Processes that migrate one database at the same moment.

``python -m tests.reliability._migrator URL N`` loads the package, Alembic
and the revision scripts once, then forks N processes that wait for each
other and all call ``Database.migrate()`` at once, each on its own
connections. Each prints ``MIGRATED``, or ``FAILED`` with the error's type
and message, on a line of its own. Forking after the imports keeps the
start quick: the processes are real, the import is paid once.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
from multiprocessing.synchronize import Barrier

from ecl_persistence import Database, DbError
from ecl_persistence.migrations import head_revision

_START_TIMEOUT_SECS = 60.0


async def migrate(url: str, barrier: Barrier) -> str:
    """Migrate ``url`` to head once every process is ready; say how it went."""
    async with Database.from_url(url, timeout_secs=60) as db:
        barrier.wait(_START_TIMEOUT_SECS)
        try:
            await db.migrate()
        except DbError as error:
            return f"FAILED {type(error).__name__} {str(error).replace(chr(10), ' ')}"
        return "MIGRATED"


def _process(url: str, barrier: Barrier) -> None:
    # One write per line: the processes share the pipe.
    sys.stdout.write(asyncio.run(migrate(url, barrier)) + "\n")
    sys.stdout.flush()


def main(url: str, processes: int) -> None:
    """Fork ``processes`` migrating processes and wait for them."""
    head_revision()  # the scripts are read before the fork, once
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    children = [context.Process(target=_process, args=(url, barrier)) for _ in range(processes)]
    for child in children:
        child.start()
    for child in children:
        child.join()
    sys.exit(max(child.exitcode or 0 for child in children))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
