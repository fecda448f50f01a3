"""SQLite: a writer waits for the lock, up to its timeout; read-then-write units never race."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import pytest
from tests.factories import persist_workflow
from tests.reliability._child import RACE_DEFINITION, race
from tests.reliability._support import (
    HANG_GUARD_SECS,
    SQLITE_ONLY,
    read_marker,
    row_counts,
    sized,
    sqlite_path,
    start_child,
)

from ecl_persistence import Database, TransactionFailedError

pytestmark = SQLITE_ONLY


@contextmanager
def write_lock_held_elsewhere(url: str) -> Iterator[None]:
    """Another connection, not ours, holds the write lock for the duration of the block."""
    other = sqlite3.connect(sqlite_path(url), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


async def _seen_counts(db: Database) -> list[int]:
    async with db.session(read_only=True) as uow:
        rows = await uow.workflows.list_by_definition(RACE_DEFINITION)
    return sorted(cast("dict[str, int]", workflow.input)["seen"] for workflow in rows)


async def test_writer_blocked_past_busy_timeout_gets_a_retryable_error_and_writes_nothing(
    database_url: str,
) -> None:
    async with Database.from_url(database_url, timeout_secs=0.2) as db:
        with write_lock_held_elsewhere(database_url):
            with pytest.raises(TransactionFailedError) as caught:
                async with asyncio.timeout(HANG_GUARD_SECS), db.session() as uow:
                    await persist_workflow(uow)
            assert caught.value.retryable
            assert "locked" in str(caught.value)
            # Readers are not blocked by the writer in WAL mode.
            assert await row_counts(db) == {"workflows": 0, "step_executions": 0, "artifacts": 0}
        # Retrying once the lock is free succeeds, and only that attempt is stored.
        async with db.session() as uow:
            await persist_workflow(uow)
        assert (await row_counts(db))["workflows"] == 1


async def test_concurrent_read_then_write_units_in_one_process_are_serialized(
    database_url: str,
) -> None:
    units = 16
    await race(database_url, units)
    async with Database.from_url(database_url) as db:
        # Each unit saw every unit before it: no lost update, no "database is locked".
        assert await _seen_counts(db) == list(range(units))


async def test_read_then_write_units_across_processes_never_hit_database_is_locked(
    database_url: str,
) -> None:
    processes, units = sized(4, 8), sized(16, 32)
    children = [await start_child("race", database_url, str(units)) for _ in range(processes)]
    for child in children:
        await read_marker(child, "READY")
    # All processes start their units together, so they contend for the lock.
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"GO\n")
        await child.stdin.drain()
    async with asyncio.timeout(HANG_GUARD_SECS * 2):
        outputs = [await child.communicate() for child in children]
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err.decode()
        assert b"DONE" in out
        assert b"locked" not in err
    async with Database.from_url(database_url) as db:
        assert await _seen_counts(db) == list(range(processes * units))
