"""The fewest transactions per workflow (docs/workers.md): what each one writes, and no more.

``Worker.start`` creates and claims in one transaction; a step's attempt is
numbered from the resume point (no lock of the workflow per start); the
output and the end of a workflow are one UPDATE. And every hot statement is
found in SQLAlchemy's compiled cache, and prepared once per connection by
asyncpg.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.engine import default
from sqlalchemy.sql import cache_key
from tests.factories import statements_run, stored_workflow

from ecl_persistence import (
    ConflictError,
    Database,
    JsonValue,
    Retry,
    SerializationError,
    StepExecutionState,
    StepRecording,
    Worker,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import utc_now
from ecl_persistence.orm import WorkflowRecord

S = StepExecutionState
W = WorkflowState


async def echo(recording: StepRecording) -> JsonValue:
    return {"attempt": recording.attempt}


@contextmanager
def commits(db: Database) -> Iterator[list[int]]:
    """Count the transactions committed inside the block."""
    seen: list[int] = []

    def record(connection: Any) -> None:
        seen.append(1)

    event.listen(db.engine.sync_engine, "commit", record)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "commit", record)


async def three_steps(worker: Worker, n: int) -> Workflow:
    run = await worker.start(Workflow.new("fast", {"n": n}))
    async with run:
        for k in range(3):
            await run.step(f"step-{k}", {"k": k}, echo)
        await run.complete({"n": n})
    return run.workflow


async def test_a_three_step_workflow_takes_eight_transactions(db: Database) -> None:
    worker = Worker(db, "w1")
    with commits(db) as committed, statements_run(db) as statements:
        done = await three_steps(worker, 1)
    # start (create + claim), 3 x (start, end of the step), complete.
    assert len(committed) == 8
    assert done.state is W.COMPLETED
    assert done.output == {"n": 1}
    # The wake-up of other workers on PostgreSQL (a NOTIFY of the creation) aside.
    writes = [
        s.split()[0]
        for s in statements
        if not s.lstrip().upper().startswith("BEGIN") and "notify" not in s.lower()
    ]
    # create: INSERT + audit; claim: pick, UPDATE, audit; steps: INSERT, UPDATE each;
    # complete: audit + one UPDATE with the output.
    assert writes.count("INSERT") == 2 + 1 + 3 + 1
    assert writes.count("UPDATE") == 1 + 3 + 1
    assert writes.count("SELECT") == 1  # the claim's pick of the row: nothing else is read
    async with db.session(read_only=True) as uow:
        steps = await uow.step_executions.get_for_workflow(done.id)
        trail = await uow.workflows.history(done.id)
    assert [(s.step_id, s.attempt, s.state, s.output) for s in steps] == [
        (f"step-{k}", 1, S.SUCCEEDED, {"attempt": 1}) for k in range(3)
    ]
    assert [(t.from_state, t.to_state, t.actor) for t in trail] == [
        (None, W.PENDING, "w1"),
        (W.PENDING, W.RUNNING, "w1"),
        (W.RUNNING, W.COMPLETED, "w1"),
    ]


async def test_start_leaves_a_leased_running_workflow_that_a_crash_gives_back(
    db: Database,
) -> None:
    worker = Worker(db, "w1", lease_seconds=30.0)
    run = await worker.start(Workflow.new("fast", {"n": 1}))
    # As if the process died right after the start: nothing else is written.
    await run._stop_heartbeat()
    stored = await stored_workflow(db, run.workflow.id)
    assert (stored.state, stored.lease_owner, stored.claim_count) == (W.RUNNING, "w1", 1)
    assert run.resume_point.succeeded == {}
    assert run.resume_point.to_retry == {}
    async with db.session() as uow:
        # Once the lease has expired, the next claim takes it: nothing was lost.
        (taken,) = await uow.workflows.claim("w2", now=utc_now() + timedelta(seconds=31))
    assert (taken.id, taken.lease_owner, taken.claim_count) == (stored.id, "w2", 2)


async def test_start_of_a_workflow_not_due_writes_nothing(db: Database) -> None:
    worker = Worker(db, "w1")
    later = Workflow.new("fast", {"n": 1}, run_after=utc_now() + timedelta(hours=1))
    with pytest.raises(ConflictError, match="not to run before"):
        await worker.start(later)
    async with db.session(read_only=True) as uow:
        assert await uow.workflows.get(later.id) is None


async def test_start_with_a_used_idempotency_key_resumes_the_stored_workflow(
    db: Database,
) -> None:
    first = Workflow.new("fast", {"n": 1}, idempotency_key="k1")
    async with db.session() as uow:
        await uow.workflows.create(first)
        done = await uow.step_executions.start(first.id, "step-0", {})
        await uow.step_executions.update_completion(done.id, S.SUCCEEDED, output={"kept": 1})
        failed = await uow.step_executions.start(first.id, "step-1", {})
        await uow.step_executions.update_completion(failed.id, S.FAILED, error="boom")
    called: list[str] = []

    async def fresh(recording: StepRecording) -> JsonValue:
        called.append(str(recording.execution.step_id))
        return {"attempt": recording.attempt}

    run = await Worker(db, "w1").start(Workflow.new("fast", {"n": 1}, idempotency_key="k1"))
    async with run:
        assert run.workflow.id == first.id
        assert await run.step("step-0", {}, fresh) == {"kept": 1}
        # The attempt number continues from the resume point: 2, after the failed 1.
        assert await run.step("step-1", {}, fresh) == {"attempt": 2}
    assert called == ["step-1"]
    assert (await stored_workflow(db, first.id)).state is W.COMPLETED


async def test_a_run_numbers_attempts_of_a_step_run_twice_apart(db: Database) -> None:
    worker = Worker(db, "w1")
    run = await worker.start(Workflow.new("fast", {}))
    attempts: list[int] = []

    async def flaky(recording: StepRecording) -> JsonValue:
        attempts.append(recording.attempt)
        if recording.attempt == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    async with run:
        assert await run.step("s", {}, flaky, retry=Retry(max_attempts=2, delay_seconds=0)) == "ok"
    assert attempts == [1, 2]
    async with db.session(read_only=True) as uow:
        stored = await uow.step_executions.get_for_step(run.workflow.id, "s")
    assert [(s.attempt, s.state) for s in stored] == [(1, S.FAILED), (2, S.SUCCEEDED)]


async def test_update_state_with_output_stores_both_in_one_statement(db: Database) -> None:
    workflow = Workflow.new("fast", {})
    async with db.session() as uow:
        await uow.workflows.create(workflow)
    with statements_run(db) as statements:
        async with db.session() as uow:
            done = await uow.workflows.update_state(
                workflow.id, W.COMPLETED, output={"summary": "tides"}
            )
    assert (done.state, done.output, done.version) == (W.COMPLETED, {"summary": "tides"}, 2)
    assert [s.split()[0] for s in statements if s.split()[0] in ("INSERT", "UPDATE")] == [
        "INSERT",  # the audit row
        "UPDATE",
    ]
    assert (await stored_workflow(db, workflow.id)).output == {"summary": "tides"}


async def test_update_state_refuses_a_bad_output_and_writes_nothing(db: Database) -> None:
    workflow = Workflow.new("fast", {})
    async with db.session() as uow:
        await uow.workflows.create(workflow)
    with pytest.raises(SerializationError):
        async with db.session() as uow:
            await uow.workflows.update_state(workflow.id, W.COMPLETED, output=float("nan"))
    stored = await stored_workflow(db, workflow.id)
    assert (stored.state, stored.version) == (W.PENDING, 1)


async def test_every_hot_statement_is_found_in_the_compiled_cache(db: Database) -> None:
    worker = Worker(db, "w1")
    for n in range(3):  # every statement compiled once
        await three_steps(worker, n)
    outcomes: list[tuple[object, str]] = []

    def record(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        _params, context, _many = rest
        outcomes.append((context.cache_hit, statement.split()[0]))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        for n in range(3, 6):
            await three_steps(worker, n)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    assert len(outcomes) >= 3 * 12
    misses = [(hit, verb) for hit, verb in outcomes if hit is not default.CACHE_HIT]
    assert misses == []


@pytest.mark.postgresql
async def test_asyncpg_prepares_each_hot_statement_once(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared: list[str] = []
    prepare = asyncpg.Connection.prepare

    async def counting(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        prepared.append(query.split()[0])
        return await prepare(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "prepare", counting)
    async with Database.from_url(postgres_url, max_connections=1) as db:
        worker = Worker(db, "w1")
        await three_steps(worker, 0)
        warm = len(prepared)
        assert warm >= 6  # the statements of a workflow, each prepared on first use
        for n in range(1, 4):
            await three_steps(worker, n)
    assert prepared[warm:] == []


async def test_no_hot_statement_computes_its_cache_key_again(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An ORM-enabled INSERT or UPDATE is annotated anew by the session on
    # every call, and the copy's cache key computed from scratch: the hot
    # writes go through the tables instead, so each statement object keeps
    # the key it computed once.
    worker = Worker(db, "w1")
    for n in range(3):
        await three_steps(worker, n)
    computed: list[str] = []
    original = cache_key.HasCacheKey._generate_cache_key

    def counting(self: Any) -> Any:
        computed.append(type(self).__name__)
        return original(self)

    monkeypatch.setattr(cache_key.HasCacheKey, "_generate_cache_key", counting)
    for n in range(3, 6):
        await three_steps(worker, n)
    assert computed == []


async def test_writes_through_rows_keep_an_entity_the_session_holds_fresh(db: Database) -> None:
    workflow = Workflow.new("fast", {})
    async with db.session() as uow:
        await uow.workflows.create(workflow)
    async with db.session() as uow:
        held = await uow.session.get(WorkflowRecord, workflow.id)
        assert held is not None
        claimed = await uow.workflows.claim_by_id(workflow.id, "w1")
        assert (held.state, held.lease_owner, held.claim_count) == ("running", "w1", 1)
        await uow.workflows.update_state(
            workflow.id, W.COMPLETED, lease=claimed.lease, output={"done": 1}
        )
        assert (held.state, held.output, held.lease_owner) == ("completed", {"done": 1}, None)
