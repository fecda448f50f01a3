"""Shared by the reliability tests: sizes, raw counts, statement watches, sessions, children.

The default run keeps every test quick; ``ECL_TEST_SOAK=1`` (``nox -s soak``)
runs the long variants with the sizes the issue names.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import TextClause, event, text
from sqlalchemy.engine import make_url
from tests.conftest import asyncpg_url
from tests.factories import raw_execute, start_python_module

from ecl_persistence import APPLICATION_NAME, Database

SOAK = os.environ.get("ECL_TEST_SOAK") == "1"
TABLES = ("workflows", "step_executions", "artifacts")
SLOW_MARKER = "/* ecl-slow-statement */"
# Generous bounds that only turn a hang into a failure; nothing here measures speed.
HANG_GUARD_SECS = 60.0

POSTGRES_ONLY = pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql)]
)
"""Run a test that takes ``database_url`` or ``db`` on PostgreSQL only."""
SQLITE_ONLY = pytest.mark.parametrize("backend", [pytest.param("sqlite", id="sqlite")])
"""Run a test that takes ``database_url`` or ``db`` on SQLite only."""


def sized(quick: int, soak: int) -> int:
    """``quick`` in the default run, ``soak`` under ``ECL_TEST_SOAK=1``."""
    return soak if SOAK else quick


async def row_counts(db: Database) -> dict[str, int]:
    """How many rows each table holds, counted with raw SQL."""
    async with db.session(read_only=True) as uow:
        counts = {}
        for table in TABLES:
            result = await uow.execute(text(f"SELECT count(*) FROM {table}"), action="count")
            counts[table] = int(result.scalar_one())
        return counts


async def orphan_counts(db: Database) -> dict[str, int]:
    """Step executions and artifacts whose workflow row does not exist."""
    async with db.session(read_only=True) as uow:
        counts = {}
        for table in TABLES[1:]:
            statement = text(
                f"SELECT count(*) FROM {table} c "
                "WHERE NOT EXISTS (SELECT 1 FROM workflows w WHERE w.id = c.workflow_id)"
            )
            counts[table] = int((await uow.execute(statement, action="orphans")).scalar_one())
        return counts


@contextmanager
def slow_statement_starts(db: Database) -> Iterator[asyncio.Event]:
    """An event set each time a :func:`slow_statement` is handed to the driver."""
    started = asyncio.Event()

    def record(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if SLOW_MARKER in statement:
            started.set()

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield started
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)


def slow_statement(dialect: str, *, rows: int = 300_000) -> TextClause:
    """A read that keeps the driver busy: seconds on PostgreSQL, ``rows`` steps on SQLite.

    SQLite runs it in the driver's thread, where cancellation cannot stop it,
    so it is kept short there (about 50 ms for the default ``rows``).
    """
    if dialect == "postgresql":
        return text(f"SELECT pg_sleep(10) {SLOW_MARKER}")
    return text(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
        f"WHERE x < {rows}) SELECT count(*) FROM c {SLOW_MARKER}"
    )


def sqlite_path(url: str) -> str:
    """The file behind a ``sqlite:///`` URL."""
    path = make_url(url).database
    assert path, url
    return path


def sqlite_write_lock_is_free(url: str) -> bool:
    """Whether another connection could take the write lock right now, without waiting."""
    connection = sqlite3.connect(sqlite_path(url), timeout=0, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()


@asynccontextmanager
async def postgres_admin(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection outside any pool, to watch or kill our sessions."""
    connection = await asyncpg.connect(
        asyncpg_url(url), timeout=10, server_settings={"application_name": "ecl-test-admin"}
    )
    try:
        yield connection
    finally:
        await connection.close()


async def our_sessions(url: str) -> list[tuple[int, str | None]]:
    """(pid, state) of every session of ours on the database of ``url``."""
    async with postgres_admin(url) as admin:
        rows = await admin.fetch(
            "SELECT pid, state FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
            APPLICATION_NAME,
            make_url(url).database,
        )
    return [(int(row["pid"]), row["state"]) for row in rows]


async def our_sessions_waiting(url: str) -> bool:
    """Whether a session of ours on the database of ``url`` waits for a lock right now."""
    async with postgres_admin(url) as admin:
        waiting = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
            "AND datname = $2 AND wait_event_type = 'Lock'",
            APPLICATION_NAME,
            make_url(url).database,
        )
    return bool(waiting)


async def terminate_our_sessions(url: str, pid: int | None = None) -> int:
    """``pg_terminate_backend`` our sessions on the database (or just ``pid``); how many."""
    async with postgres_admin(url) as admin:
        rows = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = $2 AND ($3::int IS NULL OR pid = $3)",
            APPLICATION_NAME,
            make_url(url).database,
            pid,
        )
    return len(rows)


async def settle_sessions(
    url: str, ok: Callable[[list[tuple[int, str | None]]], bool]
) -> list[tuple[int, str | None]]:
    """Our sessions once ``ok`` holds for them; the last seen if it never does.

    A backend whose client went away needs a moment to notice and exit.
    """
    sessions = await our_sessions(url)
    async with asyncio.timeout(HANG_GUARD_SECS / 4):
        while not ok(sessions):
            await asyncio.sleep(0.05)
            sessions = await our_sessions(url)
    return sessions


async def start_child(*args: str) -> asyncio.subprocess.Process:
    """Start ``python -m tests.reliability._child ARGS`` from the repository root."""
    return await start_python_module("tests.reliability._child", *args)


async def read_marker(child: asyncio.subprocess.Process, marker: str) -> list[str]:
    """The words after ``marker`` on the next line the child prints."""
    assert child.stdout is not None
    async with asyncio.timeout(HANG_GUARD_SECS):
        line = (await child.stdout.readline()).decode()
    if not line.startswith(marker):
        assert child.stderr is not None
        error = (await child.stderr.read()).decode()
        pytest.fail(f"child printed {line!r} instead of {marker}; stderr:\n{error}")
    return line.split()[1:]


async def poison_deletes(db: Database) -> None:
    """A trigger that makes deleting the workflows of definition ``poison`` fail, in ``db``.

    Give it a database of the test's own: the trigger stays.
    """
    if db.dialect == "sqlite":
        await raw_execute(
            db,
            "CREATE TRIGGER poison BEFORE DELETE ON workflows "
            "WHEN OLD.definition_id = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
        )
        return
    await raw_execute(
        db,
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF OLD.definition_id = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; "
        "RETURN OLD; END $$",
    )
    await raw_execute(
        db,
        "CREATE TRIGGER poison BEFORE DELETE ON workflows FOR EACH ROW EXECUTE FUNCTION poison()",
    )
