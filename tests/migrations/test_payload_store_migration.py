"""Revision 0006 and stored payloads: taken back down, they return inline; up again, unchanged."""

from __future__ import annotations

import json

from tests.factories import StepExecutionFactory, WorkflowFactory, raw_scalar

from ecl_persistence import Database, StepExecutionState
from ecl_persistence.domain import JsonValue
from ecl_persistence.migrations import downgrade, upgrade

BIG: JsonValue = {"conversation": [f"turn {n}: " + "words " * 40 for n in range(40)]}


async def test_a_downgrade_puts_stored_payloads_back_inline(empty_database_url: str) -> None:
    async with Database.from_url(empty_database_url, payload_inline_bytes=256) as db:
        await db.migrate()
        workflow = WorkflowFactory.build(input=BIG)
        execution = StepExecutionFactory.build(workflow_id=workflow.id, input=BIG)
        async with db.session() as uow:
            await uow.workflows.create(workflow)
            await uow.step_executions.create(execution)
            await uow.step_executions.update_completion(
                execution.id, StepExecutionState.SUCCEEDED, output=BIG
            )
        assert await raw_scalar(db, "SELECT count(*) FROM payloads") == 1
        await downgrade(db.engine, "0005")
        for column, table in (("input", "workflows"), ("input", "step_executions"),
                              ("output", "step_executions")):  # fmt: skip
            raw = await raw_scalar(db, f"SELECT {column} FROM {table}")
            assert (json.loads(raw) if isinstance(raw, str) else raw) == BIG, (table, column)
        await upgrade(db.engine, "head")
        async with db.session(read_only=True) as uow:
            stored = await uow.step_executions.get(execution.id)
            again = await uow.workflows.get(workflow.id)
        assert stored is not None
        assert again is not None
        assert (stored.input, stored.output, again.input) == (BIG, BIG, BIG)
