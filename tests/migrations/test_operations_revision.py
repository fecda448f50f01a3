"""Revision 0005 (operations) down and up with its own data: cancelled, forks, limits."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from tests.migrations.live_data import SCHEMAS, dump, foreign_key_problems

from ecl_persistence import ConstraintViolationError, Database, StepExecutionState, Workflow
from ecl_persistence import WorkflowState as W
from ecl_persistence.migrations import current_revision, downgrade, head_revision


async def test_downgrade_to_0004_turns_cancelled_into_failed_and_back_up_keeps_the_rest(
    empty_database_url: str,
) -> None:
    async with Database.from_url(empty_database_url) as db:
        await db.migrate()
        async with db.session() as uow:
            cancelled = await uow.workflows.create(Workflow.new("research", {"n": 1}))
            failed = await uow.workflows.create(Workflow.new("research", {"n": 2}))
            await uow.workflows.cancel(cancelled.id, reason="wrong topic", actor="ana")
            await uow.workflows.update_state(failed.id, W.FAILED, "boom")
            step = await uow.step_executions.start(failed.id, "search", {})
            await uow.step_executions.update_completion(step.id, StepExecutionState.SUCCEEDED)
            await uow.step_executions.start(failed.id, "answer", {})
            fork = await uow.workflows.fork(failed.id, from_step="answer")
            await uow.workflows.set_concurrency_limit("k", 2)

        await downgrade(db.engine, "0004")
        assert await current_revision(db.engine) == "0004"
        rows = await dump(db.engine, SCHEMAS["0004"])
        states = {uuid.UUID(str(row[0])): (row[2], row[5]) for row in rows["workflows"]}
        assert states[cancelled.id] == ("failed", "cancelled")
        assert states[failed.id] == ("failed", "boom")
        assert states[fork.id] == ("pending", None)
        assert "cancelled" not in {row[3] for row in rows["workflow_transitions"]}
        assert len(rows["step_executions"]) == 3  # the fork's copy stays, a plain attempt
        assert await foreign_key_problems(db.engine) == []
        # History is append-only again at 0004.
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.engine.begin() as connection:
                await connection.execute(text("UPDATE workflow_transitions SET actor = 'x'"))

        await db.migrate()
        assert await current_revision(db.engine) == head_revision()
        async with db.session() as uow:
            again = await uow.workflows.get(cancelled.id)
            assert again is not None
            assert again.state is W.FAILED
            await uow.workflows.cancel(again.id, actor="bo")  # cancelled exists again
            assert await uow.workflows.concurrency_limits() == []
        with pytest.raises(ConstraintViolationError):
            async with db.session() as uow:
                await uow.execute(
                    text("UPDATE workflow_transitions SET actor = 'x'"), action="rewrite"
                )
