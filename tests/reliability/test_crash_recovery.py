"""A process killed with SIGKILL mid unit of work: committed work stays, the rest is gone."""

from __future__ import annotations

import signal
import sqlite3
import uuid

import pytest
from tests.factories import persist_step
from tests.reliability._support import (
    orphan_counts,
    read_marker,
    row_counts,
    settle_sessions,
    sqlite_path,
    start_child,
)

from ecl_persistence import Database, WorkflowId, WorkflowState


def _sqlite_checks(url: str) -> tuple[list[tuple[str]], list[tuple[object, ...]]]:
    # A plain sqlite3 connection opens the file as the next process would,
    # recovering the WAL the killed process left behind.
    connection = sqlite3.connect(sqlite_path(url))
    try:
        integrity = connection.execute("PRAGMA integrity_check").fetchall()
        foreign_keys = connection.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        connection.close()
    return integrity, foreign_keys


@pytest.mark.parametrize("how", ["self", "wait"], ids=["kills-itself", "killed-by-parent"])
async def test_sigkill_mid_unit_of_work_leaves_committed_rows_and_nothing_else(
    database_url: str, how: str
) -> None:
    child = await start_child("crash", database_url, how)
    (kept_id,) = await read_marker(child, "COMMITTED")
    lost_id, backend_pid = await read_marker(child, "WRITTEN")
    if how == "wait":
        child.send_signal(signal.SIGKILL)
    assert await child.wait() == -signal.SIGKILL

    if database_url.startswith("sqlite"):
        integrity, foreign_keys = _sqlite_checks(database_url)
        assert integrity == [("ok",)]
        assert foreign_keys == []
    else:
        # The server notices the dead client and rolls its transaction back.
        sessions = await settle_sessions(
            database_url, lambda now: all(pid != int(backend_pid) for pid, _ in now)
        )
        assert int(backend_pid) not in [pid for pid, _ in sessions]

    async with Database.from_url(database_url) as db:
        assert await row_counts(db) == {"workflows": 1, "step_executions": 0, "artifacts": 0}
        assert await orphan_counts(db) == {"step_executions": 0, "artifacts": 0}
        async with db.session() as uow:
            kept = await uow.workflows.get(WorkflowId(uuid.UUID(kept_id)))
            assert await uow.workflows.get(WorkflowId(uuid.UUID(lost_id))) is None
            assert kept is not None
            assert kept.state is WorkflowState.PENDING
            # The database takes writes again at once: no lock or row lock is left.
            await persist_step(uow, kept)
            await uow.workflows.update_state(kept.id, WorkflowState.RUNNING)
        assert await row_counts(db) == {"workflows": 1, "step_executions": 1, "artifacts": 0}
