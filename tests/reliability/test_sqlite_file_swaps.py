"""A SQLite file deleted or replaced while open: no commit is acknowledged that the path lacks.

SQLite's connections keep the file they opened. Once that file is unlinked
or another file is moved to its path, a pooled connection would go on
committing into a file that no path leads to. The package checks the
file's device and inode when it hands out a connection and after every
commit, and fails with ConnectionFailedError (not retryable) instead.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from pathlib import Path

import pytest
from tests.factories import WorkflowFactory, persist_workflow
from tests.reliability._support import SQLITE_ONLY, sqlite_path

from ecl_persistence import ConnectionFailedError, Database, Workflow

UNITS = 10
POOL_SIZE = 3

pytestmark = SQLITE_ONLY


def _exists(path: Path) -> bool:
    return path.exists()


def _ids_in_file(path: Path) -> set[uuid.UUID]:
    """The workflow ids the file at ``path`` holds now, read by a connection of its own."""
    if not _exists(path):
        return set()
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("SELECT id FROM workflows").fetchall()
    except sqlite3.OperationalError:
        return set()
    finally:
        connection.close()
    return {uuid.UUID(hex=row[0]) for row in rows}


async def _warm_pool(db: Database) -> None:
    """Open every pooled connection, each reading once."""
    units = [db.session(read_only=True) for _ in range(POOL_SIZE)]
    for uow in units:
        await uow.__aenter__()
        await uow.workflows.list(limit=1)
    for uow in units:
        await uow.__aexit__(None, None, None)


async def _units_acknowledged(
    db: Database,
) -> tuple[list[Workflow], list[ConnectionFailedError]]:
    """Run :data:`UNITS` writing units; return those acknowledged and the errors of the others."""
    acknowledged: list[Workflow] = []
    refused: list[ConnectionFailedError] = []
    for _ in range(UNITS):
        workflow = WorkflowFactory.build()
        try:
            async with db.session() as uow:
                await uow.workflows.create(workflow)
        except ConnectionFailedError as error:
            refused.append(error)
        else:
            acknowledged.append(workflow)
    return acknowledged, refused


def _swap(path: Path, how: str, tmp_path: Path) -> None:
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        # A database file of its own (say, a backup put back), moved over the path.
        other = tmp_path / "other.db"
        shutil.copy(path, other)
        os.replace(other, path)


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_no_unit_is_acknowledged_after_the_file_was_swapped(
    database_url: str, tmp_path: Path, how: str
) -> None:
    path = Path(sqlite_path(database_url))
    async with Database.from_url(database_url, max_connections=POOL_SIZE) as db:
        await _warm_pool(db)
        before = await persist_in_own_unit(db)
        _swap(path, how, tmp_path)
        acknowledged, refused = await _units_acknowledged(db)
        # Reads fail the same way: the pooled connections hold the old file.
        with pytest.raises(ConnectionFailedError, match=how):
            async with db.session(read_only=True) as uow:
                await uow.workflows.get(before.id)
    if how == "deleted":
        # The refused connections did not create the file anew.
        assert not _exists(path)
    in_file = _ids_in_file(path)
    # Every acknowledged unit is in the file at the path: here, none was acknowledged.
    assert [w.id for w in acknowledged if w.id not in in_file] == []
    assert len(refused) == UNITS
    for error in refused:
        assert not error.retryable
        assert str(path) in str(error)
        assert "Dispose of this Database" in str(error)
    # The file at the path can be opened again.
    async with Database.from_url(database_url) as reopened:
        if how == "deleted":
            await reopened.migrate()
        async with reopened.session() as uow:
            await persist_workflow(uow)


async def test_a_commit_after_the_file_was_deleted_mid_unit_is_not_acknowledged(
    database_url: str,
) -> None:
    path = Path(sqlite_path(database_url))
    async with Database.from_url(database_url) as db:
        workflow = WorkflowFactory.build()
        with pytest.raises(ConnectionFailedError, match="deleted") as caught:
            async with db.session() as uow:
                await uow.workflows.create(workflow)
                os.unlink(path)
        assert caught.value.retryable is False
        assert not uow.committed
    assert workflow.id not in _ids_in_file(path)


async def test_an_untouched_file_is_used_as_before(database_url: str) -> None:
    async with Database.from_url(database_url, max_connections=POOL_SIZE) as db:
        await _warm_pool(db)
        acknowledged, refused = await _units_acknowledged(db)
    assert refused == []
    assert {w.id for w in acknowledged} <= _ids_in_file(Path(sqlite_path(database_url)))


async def persist_in_own_unit(db: Database) -> Workflow:
    async with db.session() as uow:
        return await persist_workflow(uow)
