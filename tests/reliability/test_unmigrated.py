"""A database whose schema is not the code's: one typed error that says what to do.

A unit of work on a database that was never migrated, or that is behind,
raises :class:`SchemaNotReadyError` (a ``MigrationFailedError``) naming the
revision the database is at, the one the code needs, and ``await
db.migrate()``. The revision is read only then: a healthy unit runs no
extra statement for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import text
from tests.factories import WorkflowFactory, persist_workflow, statements_run

from ecl_persistence import (
    Database,
    MigrationFailedError,
    PurgeFailedError,
    QueryFailedError,
    SchemaNotReadyError,
    WorkflowState,
)
from ecl_persistence.migrations import head_revision
from ecl_persistence.unit_of_work import UnitOfWork


async def test_a_database_never_migrated_says_to_migrate(empty_database_url: str) -> None:
    head = head_revision()
    async with Database.from_url(empty_database_url) as db:
        calls: dict[str, Callable[[UnitOfWork], Awaitable[object]]] = {
            "create": lambda uow: uow.workflows.create(WorkflowFactory.build()),
            "get": lambda uow: uow.workflows.get(WorkflowFactory.build().id),
            "list": lambda uow: uow.workflows.list(),
            "claim": lambda uow: uow.workflows.claim("w"),
            "count_by_state": lambda uow: uow.workflows.count_by_state(),
        }
        for name, call in calls.items():
            with pytest.raises(SchemaNotReadyError) as caught:
                async with db.session() as uow:
                    await call(uow)
            error = caught.value
            message = str(error)
            assert isinstance(error, MigrationFailedError), name
            assert "never migrated" in message, name
            assert f"needs revision {head}" in message, name
            assert "await db.migrate()" in message, name
            assert error.current_revision is None
            assert error.head_revision == head
        # A purge says how many it deleted before it failed (none), and why.
        with pytest.raises(PurgeFailedError, match=r"await db\.migrate") as purge_failed:
            await db.purge(finished_before=WorkflowFactory.build().created_at)
        assert purge_failed.value.deleted == 0
        assert isinstance(purge_failed.value.__cause__, SchemaNotReadyError)
        # Once migrated, the same database works.
        await db.migrate()
        async with db.session() as uow:
            await persist_workflow(uow)
            assert (await uow.workflows.count_by_state())[WorkflowState.PENDING] == 1


@pytest.mark.parametrize("revision", ["0001", "0002", "0003"])
async def test_a_database_behind_names_its_revision_and_the_one_needed(
    empty_database_url: str, revision: str
) -> None:
    async with Database.from_url(empty_database_url) as db:
        await db.migrate(revision)
        with pytest.raises(SchemaNotReadyError) as caught:
            async with db.session() as uow:
                await uow.workflows.create(WorkflowFactory.build())
                await uow.workflows.list()
        message = str(caught.value)
        assert f"at revision {revision}" in message
        assert f"needs revision {head_revision()}" in message
        assert "await db.migrate()" in message
        assert caught.value.current_revision == revision
        await db.migrate()
        async with db.session() as uow:
            await uow.workflows.create(WorkflowFactory.build())


async def test_a_missing_table_of_the_application_is_a_query_error_on_a_migrated_database(
    db: Database,
) -> None:
    with pytest.raises(QueryFailedError) as caught:
        async with db.session() as uow:
            await uow.execute(text("SELECT * FROM my_own_table"), action="read my table")
    assert not isinstance(caught.value, MigrationFailedError)
    assert "my_own_table" in str(caught.value)
    assert "at the head revision" in str(caught.value)


async def test_a_healthy_unit_never_reads_the_schema_revision(db: Database) -> None:
    with statements_run(db) as statements:
        async with db.session() as uow:
            workflow = await persist_workflow(uow)
            await uow.workflows.get(workflow.id)
            await uow.workflows.list()
    assert statements
    assert not [s for s in statements if "alembic_version" in s]
