"""An application's own ORM models in the unit of work's transaction, through ``uow.session``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import ForeignKey, Integer, Uuid, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from tests.factories import WorkflowFactory

from ecl_persistence import Database, TransactionFailedError, WorkflowState
from ecl_persistence.orm import WorkflowRecord


class AppBase(DeclarativeBase):
    """The application's own declarative base, apart from the package's."""


class Invoice(AppBase):
    """A row the application writes beside a workflow."""

    __tablename__ = "app_invoices"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    workflow_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey(WorkflowRecord.id, ondelete="CASCADE")
    )
    amount: Mapped[int] = mapped_column(Integer)


@pytest.fixture
async def app_db(db: Database) -> AsyncIterator[Database]:
    """``db`` with the application's table created (and dropped afterwards)."""
    async with db.engine.begin() as connection:
        await connection.run_sync(AppBase.metadata.create_all)
    yield db
    async with db.engine.begin() as connection:
        await connection.run_sync(AppBase.metadata.drop_all)


async def _invoices(db: Database) -> int:
    async with db.session(read_only=True) as uow:
        return int((await uow.session.execute(select(func.count(Invoice.id)))).scalar_one())


async def _workflows(db: Database) -> int:
    async with db.session(read_only=True) as uow:
        return sum((await uow.workflows.count_by_state()).values())


async def test_an_application_row_commits_with_the_unit_of_work(app_db: Database) -> None:
    async with app_db.session() as uow:
        workflow = await uow.workflows.create(WorkflowFactory.build())
        uow.session.add(Invoice(workflow_id=workflow.id, amount=3))
        await uow.workflows.update_state(workflow.id, WorkflowState.RUNNING)
    assert (await _workflows(app_db), await _invoices(app_db)) == (1, 1)


async def test_an_application_row_rolls_back_with_the_unit_of_work(app_db: Database) -> None:
    with pytest.raises(RuntimeError, match="step failed"):
        async with app_db.session() as uow:
            workflow = await uow.workflows.create(WorkflowFactory.build())
            uow.session.add(Invoice(workflow_id=workflow.id, amount=3))
            await uow.session.flush()
            raise RuntimeError("step failed")
    assert (await _workflows(app_db), await _invoices(app_db)) == (0, 0)


async def test_an_explicit_rollback_takes_the_application_row_with_it(app_db: Database) -> None:
    async with app_db.session() as uow:
        workflow = await uow.workflows.create(WorkflowFactory.build())
        uow.session.add(Invoice(workflow_id=workflow.id, amount=3))
        await uow.rollback()
        kept = await uow.workflows.create(WorkflowFactory.build())
        uow.session.add(Invoice(workflow_id=kept.id, amount=4))
    assert (await _workflows(app_db), await _invoices(app_db)) == (1, 1)


async def test_a_read_only_unit_refuses_to_end_with_changes_in_its_session(
    app_db: Database,
) -> None:
    async with app_db.session() as uow:
        workflow = await uow.workflows.create(WorkflowFactory.build())
    with pytest.raises(TransactionFailedError, match="read-only"):
        async with app_db.session(read_only=True) as uow:
            uow.session.add(Invoice(workflow_id=workflow.id, amount=3))
    assert await _invoices(app_db) == 0


async def test_the_cascade_of_a_workflow_delete_reaches_the_application_row(
    app_db: Database,
) -> None:
    async with app_db.session() as uow:
        workflow = await uow.workflows.create(WorkflowFactory.build())
        uow.session.add(Invoice(workflow_id=workflow.id, amount=3))
    async with app_db.session() as uow:
        await uow.workflows.delete(workflow.id)
    assert await _invoices(app_db) == 0
