"""Every repository read is served by an index, never by a full scan of its table.

The statements checked are the ones the repositories send: each read runs
against a populated database while ``before_cursor_execute`` records its SQL
and parameters, which are then explained on the same backend. SQLite's
``EXPLAIN QUERY PLAN`` must show only searches or index scans (no
``SCAN <table>`` without an index, no sort of the whole result in a temporary
B-tree, though ties of the index order may be sorted); PostgreSQL's plan,
after ``ANALYZE`` of tables holding thousands of rows, must hold no
``Seq Scan``, both as planned for the values given and as the generic plan a
prepared statement settles on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from tests.plans import (
    BACKENDS,
    assert_plans_read_indexes,
    explain_problems,
    plan_modes,
    populated_database,
    statements_sent,
)

from ecl_persistence import (
    Artifact,
    Database,
    StepExecution,
    StepExecutionState,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import MISSING, WorkflowId, new_uuid7
from ecl_persistence.unit_of_work import UnitOfWork

WORKFLOWS = 3000
START = datetime(2025, 2, 1, tzinfo=UTC)
# Most workflows are finished, as in a long-running system: the states a
# scheduler lists (running, failed) are the selective ones.
STATES = [WorkflowState.COMPLETED] * 18 + [WorkflowState.RUNNING, WorkflowState.FAILED]


def _workflow(number: int) -> Workflow:
    state = STATES[number % len(STATES)]
    finished = state.is_finished
    created = START + timedelta(seconds=number)
    return Workflow(
        id=WorkflowId(new_uuid7()),
        definition_id=f"definition-{number % 30}",
        state=state,
        input={"n": number},
        output={"ok": True} if finished else MISSING,
        error=None,
        created_at=created,
        updated_at=created,
        completed_at=created if finished else None,
        metadata={},
        version=1,
    )


async def _populate(url: str) -> dict[str, Any]:
    """3000 workflows, two executions each, an artifact for every third; ANALYZE on PostgreSQL."""
    async with Database.from_url(url) as db:
        await db.migrate()
        workflows = [_workflow(number) for number in range(WORKFLOWS)]
        async with db.session() as uow:
            for workflow in workflows:
                await uow.workflows.create(workflow)
            await uow.step_executions.create_many(
                StepExecution.start(workflow.id, step, {"q": 1}, now=workflow.created_at)
                for workflow in workflows
                for step in ("search", "summarise")
            )
            for workflow in workflows[::3]:
                await uow.artifacts.create(
                    Artifact.new(
                        workflow.id, "search", "hits.json", path="a/hits.json", size_bytes=1
                    )
                )
        if db.dialect == "postgresql":
            async with db.engine.connect() as connection:
                await connection.execute(text("ANALYZE"))
                await connection.commit()
        page = None
        async with db.session(read_only=True) as uow:
            page = await uow.workflows.list(limit=10)
        sample = workflows[WORKFLOWS // 2]
        return {"workflow": sample, "cursor": page.next_cursor}


@pytest.fixture(scope="module", params=BACKENDS)
def populated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, Any]]]:
    """A database of either backend holding thousands of rows, shared by this module's tests."""
    yield from populated_database(request.param, tmp_path_factory, _populate)


Read = Callable[[UnitOfWork, dict[str, Any]], Awaitable[object]]
AT = START + timedelta(seconds=WORKFLOWS // 3)
# The ledger's windows: the last and the first few percent of the attempts.
LEDGER_FROM = START + timedelta(seconds=WORKFLOWS - 60)
LEDGER_UNTIL = START + timedelta(seconds=60)

READS: dict[str, Read] = {
    "workflows.get": lambda uow, s: uow.workflows.get(s["workflow"].id),
    "workflows.list": lambda uow, s: uow.workflows.list(),
    "workflows.list-cursor": lambda uow, s: uow.workflows.list(cursor=s["cursor"]),
    "workflows.list-state": lambda uow, s: uow.workflows.list(state=WorkflowState.RUNNING),
    "workflows.list-state-cursor": lambda uow, s: uow.workflows.list(
        state=WorkflowState.FAILED, cursor=s["cursor"]
    ),
    "workflows.list-definition": lambda uow, s: uow.workflows.list(definition_id="definition-3"),
    "workflows.list-definition-cursor": lambda uow, s: uow.workflows.list(
        definition_id="definition-3", cursor=s["cursor"]
    ),
    "workflows.list-state-definition": lambda uow, s: uow.workflows.list(
        state=WorkflowState.RUNNING, definition_id="definition-18"
    ),
    "workflows.list-created-after": lambda uow, s: uow.workflows.list(created_after=AT),
    "workflows.list-created-before": lambda uow, s: uow.workflows.list(created_before=AT),
    "workflows.list-created-between-cursor": lambda uow, s: uow.workflows.list(
        created_after=START, created_before=AT, cursor=s["cursor"]
    ),
    "workflows.list-everything": lambda uow, s: uow.workflows.list(
        state=WorkflowState.RUNNING,
        definition_id="definition-18",
        created_after=START,
        created_before=AT,
        cursor=s["cursor"],
        limit=5,
    ),
    "workflows.list_by_state": lambda uow, s: uow.workflows.list_by_state(WorkflowState.RUNNING),
    "workflows.list_by_state-limit": lambda uow, s: uow.workflows.list_by_state(
        WorkflowState.FAILED, limit=20
    ),
    "workflows.list_by_definition": lambda uow, s: uow.workflows.list_by_definition("definition-7"),
    "step_executions.get_for_workflow": lambda uow, s: uow.step_executions.get_for_workflow(
        s["workflow"].id
    ),
    "step_executions.get_for_step": lambda uow, s: uow.step_executions.get_for_step(
        s["workflow"].id, "search"
    ),
    "step_executions.get_stats": lambda uow, s: uow.step_executions.get_stats(s["workflow"].id),
    "step_executions.usage-since": lambda uow, s: uow.step_executions.usage(since=LEDGER_FROM),
    "step_executions.usage-since-until": lambda uow, s: uow.step_executions.usage(
        since=START, until=LEDGER_UNTIL
    ),
    "step_executions.usage-workflow": lambda uow, s: uow.step_executions.usage(
        workflow_id=s["workflow"].id
    ),
    "artifacts.list_for_workflow": lambda uow, s: uow.artifacts.list_for_workflow(s["workflow"].id),
    "artifacts.list_for_step": lambda uow, s: uow.artifacts.list_for_step(
        s["workflow"].id, "search"
    ),
}


@pytest.mark.parametrize("name", list(READS))
async def test_repository_read_uses_an_index_and_no_full_scan(
    populated: tuple[str, dict[str, Any]], name: str
) -> None:
    url, sample = populated
    async with Database.from_url(url) as db:
        statements = await statements_sent(db, lambda uow: READS[name](uow, sample))
        await assert_plans_read_indexes(db, name, statements)


async def test_the_plan_check_catches_a_full_scan(populated: tuple[str, dict[str, Any]]) -> None:
    """A filter on a column without an index is reported: the checks above can fail."""
    url, _ = populated
    async with Database.from_url(url) as db:
        marker = "?" if db.dialect == "sqlite" else "$1"
        sql = f"SELECT id FROM workflows WHERE error = {marker}"
        for generic in plan_modes(db):
            assert await explain_problems(db, sql, ("timeout",), generic)


async def test_the_sample_reads_find_rows(populated: tuple[str, dict[str, Any]]) -> None:
    """The plans above are of queries that match rows, not of empty lookups."""
    url, sample = populated
    async with Database.from_url(url) as db, db.session(read_only=True) as uow:
        workflow = sample["workflow"]
        assert await uow.workflows.get(workflow.id) == workflow
        assert len(await uow.step_executions.get_for_workflow(workflow.id)) == 2
        assert (await uow.step_executions.get_stats(workflow.id)).total_executions == 2
        running = await uow.workflows.list(state=WorkflowState.RUNNING)
        assert running.items
        assert all(w.state is WorkflowState.RUNNING for w in running.items)
        assert await uow.workflows.list_by_definition("definition-7")
        assert StepExecutionState.RUNNING in {
            e.state for e in await uow.step_executions.get_for_step(workflow.id, "search")
        }
