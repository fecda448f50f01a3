"""Workers that all call ``migrate()`` at start-up: every one succeeds, the schema is migrated once.

Four processes start migrating a fresh database at the same moment. On
PostgreSQL they take turns on an advisory lock; on SQLite the first one's
``BEGIN IMMEDIATE`` makes the others wait. Those that waited find the
schema at head and do nothing.
"""

from __future__ import annotations

import asyncio

from tests.factories import start_python_module
from tests.reliability._support import HANG_GUARD_SECS, sized

from ecl_persistence import Database
from ecl_persistence.migrations import current_revision, head_revision


async def test_processes_migrating_a_fresh_database_at_once_all_succeed(
    empty_database_url: str,
) -> None:
    processes = sized(4, 8)
    migrators = await start_python_module(
        "tests.reliability._migrator", empty_database_url, str(processes)
    )
    try:
        async with asyncio.timeout(HANG_GUARD_SECS):
            out, err = await migrators.communicate()
    finally:
        if migrators.returncode is None:
            migrators.kill()
            await migrators.wait()
    assert migrators.returncode == 0, err.decode()
    assert out.decode().splitlines() == ["MIGRATED"] * processes
    async with Database.from_url(empty_database_url) as db:
        assert await current_revision(db.engine) == head_revision()
        async with db.engine.connect() as connection:
            versions = await connection.exec_driver_sql("SELECT count(*) FROM alembic_version")
            assert versions.scalar_one() == 1
        # The schema is whole: the tables work.
        async with db.session() as uow:
            assert sum((await uow.workflows.count_by_state()).values()) == 0
