"""The claim queue and the fenced writes read indexes, never a whole table, at scale.

A database of either backend holds 100,000 workflows (1,000,000 under
``ECL_TEST_SOAK=1``), as a long-running system does: almost all finished,
2 % pending at several priorities (some not due yet), 1 % running under
leases. Each operation of workers (claims, a claim by id, heartbeats,
releases, fenced writes of state, steps and artifacts) runs
in a unit of work that is rolled back, while ``before_cursor_execute``
records its statements; those that read rows are then explained on the same
backend (``tests/plans.py``): no ``Seq Scan`` on PostgreSQL (custom and
generic plans, after ``ANALYZE``), no ``SCAN`` without an index nor a sort of
the whole result on SQLite. (``list_stale`` sorts the running workflows, the
few in flight; ``test_stale_and_claim_by_id.py`` checks its plan.)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from tests.plans import (
    BACKENDS,
    assert_plans_read_indexes,
    explain_plan,
    plan_modes,
    populated_database,
    statements_sent,
)
from tests.reliability._support import sized

from ecl_persistence import (
    Artifact,
    Database,
    Lease,
    StepExecutionState,
    Workflow,
    WorkflowState,
)
from ecl_persistence.repositories._leases import QUEUE_INDEX
from ecl_persistence.unit_of_work import UnitOfWork

ROWS = sized(100_000, 1_000_000)
_WORKFLOW_COLUMNS = (
    "id, definition_id, state, input, output, error, created_at, updated_at, completed_at, "
    "metadata, version, idempotency_key, lease_owner, lease_expires_at, claim_count, "
    "run_after, priority"
)
# 97 % completed, 2 % pending (priorities -1 to 3, one in eight not due for ten
# days), 1 % running under a lease (half of them expired an hour after they began).
POSTGRES_ROWS = f"""
INSERT INTO workflows ({_WORKFLOW_COLUMNS})
SELECT gen_random_uuid(), 'definition-' || (n % 20), s.state, '{{}}'::jsonb, NULL, NULL,
    t, t, CASE WHEN s.state = 'completed' THEN t END, '{{}}'::jsonb, 1, NULL,
    CASE WHEN s.state = 'running' THEN 'w' || (n % 4) END,
    CASE WHEN s.state = 'running'
         THEN t + CASE WHEN n % 2 = 0 THEN interval '1000 days' ELSE interval '1 hour' END END,
    CASE WHEN s.state = 'running' THEN 1 ELSE 0 END,
    CASE WHEN s.state = 'pending' AND n % 8 = 0 THEN now() + interval '10 days' END,
    CASE WHEN s.state = 'pending' THEN (n / 100) % 5 - 1 ELSE 0 END
FROM generate_series(1, :rows) AS n,
    LATERAL (SELECT timestamptz '2025-01-01 00:00:00+00' + n * interval '1 second' AS t) AS c,
    LATERAL (SELECT CASE WHEN n % 100 < 97 THEN 'completed' WHEN n % 100 < 99 THEN 'pending'
                         ELSE 'running' END AS state) AS s
"""
# The same rows in SQLite's storage: hex UUIDs, UTC text with microseconds.
SQLITE_ROWS = f"""
INSERT INTO workflows ({_WORKFLOW_COLUMNS})
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < :rows),
    numbered AS (
        SELECT n, datetime('2025-01-01', '+' || n || ' seconds') AS t,
               CASE WHEN n % 100 < 97 THEN 'completed' WHEN n % 100 < 99 THEN 'pending'
                    ELSE 'running' END AS state
        FROM seq)
SELECT lower(hex(randomblob(16))), 'definition-' || (n % 20), state, '{{}}', NULL, NULL,
    t || '.000000', t || '.000000', CASE WHEN state = 'completed' THEN t || '.000000' END,
    '{{}}', 1, NULL,
    CASE WHEN state = 'running' THEN 'w' || (n % 4) END,
    CASE WHEN state = 'running'
         THEN datetime(t, CASE WHEN n % 2 = 0 THEN '+1000 days' ELSE '+1 hour' END) || '.000000'
    END,
    CASE WHEN state = 'running' THEN 1 ELSE 0 END,
    CASE WHEN state = 'pending' AND n % 8 = 0 THEN datetime('now', '+10 days') || '.000000' END,
    CASE WHEN state = 'pending' THEN (n / 100) % 5 - 1 ELSE 0 END
FROM numbered
"""


# Two attempts of a step for one workflow in ten, in either storage (the ids of
# both attempts derived from the workflow's: the same type and width).
STEP_ROWS = """
INSERT INTO step_executions (id, workflow_id, step_id, attempt, state, input, output, error,
    started_at, completed_at, duration_ms, tokens_used, metadata)
SELECT {id}, id, 'search', a.attempt, CASE a.attempt WHEN 1 THEN 'failed' ELSE 'succeeded' END,
    input, NULL, NULL, created_at, created_at, 5, NULL, metadata
FROM workflows, (SELECT 1 AS attempt UNION ALL SELECT 2) AS a
WHERE created_at < {cutoff}
"""


async def _populate(url: str) -> dict[str, Any]:
    async with Database.from_url(url, timeout_secs=60) as db:
        await db.migrate()
        postgres = db.dialect == "postgresql"
        rows = POSTGRES_ROWS if postgres else SQLITE_ROWS
        steps = STEP_ROWS.format(
            id="gen_random_uuid()" if postgres else "lower(hex(randomblob(16)))",
            cutoff=f"'2025-01-01'::timestamptz + interval '{ROWS // 10} seconds'"
            if postgres
            else f"datetime('2025-01-01', '+{ROWS // 10} seconds')",
        )
        async with db.engine.begin() as connection:
            await connection.execute(text(rows), {"rows": ROWS})
            await connection.execute(text(steps))
        async with db.session(read_only=True) as uow:
            # A workflow whose lease holds (so no claim below takes it), one pending.
            (leased,) = await uow.workflows.list_by_state(WorkflowState.RUNNING, limit=1)
            pending = (await uow.workflows.list_by_state(WorkflowState.PENDING, limit=1))[0]
        assert leased.lease is not None
        async with db.session() as uow:
            running = await uow.step_executions.start(leased.id, "search", {}, lease=leased.lease)
        async with db.engine.connect() as connection:
            await connection.execute(text("ANALYZE"))
            await connection.commit()
        return {"leased": leased, "pending": pending, "running": running}


@pytest.fixture(scope="module", params=BACKENDS)
def queue(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, Any]]]:
    """A database of either backend with a long history and a queue, shared by this module."""
    yield from populated_database(request.param, tmp_path_factory, _populate)


Operation = Callable[[UnitOfWork, dict[str, Any]], Awaitable[object]]


def _lease(sample: dict[str, Any]) -> Lease:
    lease = sample["leased"].lease
    assert isinstance(lease, Lease)
    return lease


OPERATIONS: dict[str, Operation] = {
    "claim": lambda uow, s: uow.workflows.claim("w9", limit=5),
    "claim-one-definition": lambda uow, s: uow.workflows.claim(
        "w9", definition_ids=["definition-3"]
    ),
    "claim-three-definitions": lambda uow, s: uow.workflows.claim(
        "w9", definition_ids=["definition-3", "definition-7", "definition-11"], limit=3
    ),
    "claim_by_id": lambda uow, s: uow.workflows.claim_by_id(s["pending"].id, "w9"),
    "heartbeat": lambda uow, s: uow.workflows.heartbeat(
        s["leased"].id, _lease(s).owner, lease=_lease(s)
    ),
    "release": lambda uow, s: uow.workflows.release(
        s["leased"].id, _lease(s).owner, lease=_lease(s)
    ),
    "update_state-fenced": lambda uow, s: uow.workflows.update_state(
        s["leased"].id, WorkflowState.COMPLETED, lease=_lease(s)
    ),
    "update_output-fenced": lambda uow, s: uow.workflows.update_output(
        s["leased"].id, {"done": True}, lease=_lease(s)
    ),
    "step-start-fenced": lambda uow, s: uow.step_executions.start(
        s["leased"].id, "summarise", {}, lease=_lease(s)
    ),
    "step-completion-fenced": lambda uow, s: uow.step_executions.update_completion(
        s["running"].id, StepExecutionState.SUCCEEDED, lease=_lease(s)
    ),
    "artifact-fenced": lambda uow, s: uow.artifacts.create(
        Artifact.new(s["leased"].id, "search", "hits.json", path="a/hits.json", size_bytes=1),
        lease=_lease(s),
    ),
}

# The statements that read rows to do their work; a plain INSERT ... VALUES reads none.
_READING = ("SELECT", "UPDATE", "DELETE", "INSERT INTO step_executions", "INSERT INTO artifacts")


async def _statements(db: Database, name: str, sample: dict[str, Any]) -> list[tuple[str, Any]]:
    operation = OPERATIONS[name]
    return await statements_sent(
        db, lambda uow: operation(uow, sample), starts=_READING, read_only=False
    )


@pytest.mark.parametrize("name", list(OPERATIONS))
async def test_worker_operations_read_an_index_and_no_whole_table(
    queue: tuple[str, dict[str, Any]], name: str
) -> None:
    url, sample = queue
    async with Database.from_url(url) as db:
        await assert_plans_read_indexes(db, name, await _statements(db, name, sample))


async def test_a_claim_walks_the_queue_index_in_its_order(
    queue: tuple[str, dict[str, Any]],
) -> None:
    """No sort of the open workflows: the queue's index gives their order, and the LIMIT stops it.

    SQLite is told to read the queue's index, with definitions too. With
    definitions PostgreSQL may instead combine the definition and state
    indexes and sort the open workflows of those definitions, which the test
    above checks reads no whole table.
    """
    url, sample = queue
    async with Database.from_url(url) as db:
        postgres = db.dialect == "postgresql"
        names = (
            ["claim"] if postgres else ["claim", "claim-one-definition", "claim-three-definitions"]
        )
        for name in names:
            (pick, parameters), *_take = await _statements(db, name, sample)
            for generic in plan_modes(db):
                plan, _problems = await explain_plan(db, pick, parameters, generic)
                assert QUEUE_INDEX in plan, f"{name}: {plan}"
                if postgres:
                    nodes = _node_types(json.loads(plan)[0]["Plan"])
                    assert nodes[:3] == ["Limit", "LockRows", "Index Scan"], plan
                else:
                    assert "TEMP B-TREE" not in plan, f"{name}: {plan}"


def _node_types(node: dict[str, Any]) -> list[str]:
    return [node["Node Type"], *(t for child in node.get("Plans", []) for t in _node_types(child))]


async def test_the_sample_is_a_queue_worth_planning(queue: tuple[str, dict[str, Any]]) -> None:
    """The plans above are of a claim that takes rows, first the highest priority."""
    url, _sample = queue
    async with Database.from_url(url) as db, db.session() as uow:
        claimed: list[Workflow] = await uow.workflows.claim("w9", limit=5)
        assert len(claimed) == 5
        assert {w.priority for w in claimed} == {3}
        counted = await uow.workflows.count_by_state()
        await uow.rollback()
    assert counted[WorkflowState.COMPLETED] > 0.9 * ROWS
    assert counted[WorkflowState.PENDING] > 0.01 * ROWS
