"""Factories and helpers the tests share.

factory-boy factories for the domain objects; the fixed times ``T0`` and ``at``;
writes and reads in a unit of work of their own; raw SQL, statement watches and
query plans; child processes started from the repository root; other spellings
of a keyset cursor.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import string
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import factory
from sqlalchemy import Table, TextClause, Uuid, bindparam, event, text

from ecl_persistence import (
    Artifact,
    ArtifactId,
    Database,
    StepExecution,
    StepExecutionId,
    StepExecutionState,
    Workflow,
    WorkflowId,
    WorkflowState,
)
from ecl_persistence.domain import MISSING, new_uuid7, utc_now
from ecl_persistence.orm import Base, WorkflowRecord
from ecl_persistence.repositories.mappers import workflow_values
from ecl_persistence.unit_of_work import UnitOfWork

REPOSITORY = Path(__file__).resolve().parents[1]
"""The root of the repository, where child processes of the tests start."""

T0 = datetime(2024, 1, 1, tzinfo=UTC)
"""The fixed instant the tests count their times from."""


def at(seconds: float = 0, *, minutes: float = 0) -> datetime:
    """The instant ``seconds`` (plus ``minutes``) after :data:`T0`."""
    return T0 + timedelta(seconds=seconds, minutes=minutes)


class WorkflowFactory(factory.Factory[Workflow]):
    """A pending workflow of the ``research`` definition."""

    class Meta:
        model = Workflow

    id = factory.LazyFunction(new_uuid7)
    definition_id = "research"
    state = WorkflowState.PENDING
    input = factory.Sequence(lambda n: {"topic": f"topic-{n}", "n": n})
    output = MISSING
    error = None
    created_at = factory.LazyFunction(utc_now)
    updated_at = factory.SelfAttribute("created_at")
    completed_at = None
    metadata = factory.LazyFunction(dict)
    version = 1


class StepExecutionFactory(factory.Factory[StepExecution]):
    """A running first attempt of a step; pass ``workflow_id``."""

    class Meta:
        model = StepExecution

    id = factory.LazyFunction(new_uuid7)
    workflow_id = None
    step_id = factory.Sequence(lambda n: f"step-{n}")
    attempt = 1
    state = StepExecutionState.RUNNING
    input = factory.LazyFunction(lambda: {"q": "tides"})
    output = MISSING
    error = None
    started_at = factory.LazyFunction(utc_now)
    completed_at = None
    duration_ms = None
    tokens_used = None
    metadata = factory.LazyFunction(dict)


class ArtifactFactory(factory.Factory[Artifact]):
    """A JSON report artifact; pass ``workflow_id``."""

    class Meta:
        model = Artifact

    id = factory.LazyFunction(new_uuid7)
    workflow_id = None
    step_id = "search"
    name = factory.Sequence(lambda n: f"report-{n}.json")
    content_type = "application/json"
    path = factory.LazyAttribute(lambda a: f"artifacts/{a.workflow_id}/{a.name}")
    size_bytes = 1024
    created_at = factory.LazyFunction(utc_now)
    metadata = factory.LazyFunction(dict)


WORKFLOWS_TABLE = cast("Table", WorkflowRecord.__table__)
"""The ``workflows`` table, for raw Core statements of the tests."""


def column_values(record_class: type[Base], values: dict[str, Any]) -> dict[str, Any]:
    """Entity attribute values keyed by column name, for a Core INSERT into its table."""
    columns = {
        key: prop.columns[0].name for key, prop in record_class.__mapper__.column_attrs.items()
    }
    return {columns[key]: value for key, value in values.items()}


def workflow_row(workflow: Workflow) -> dict[str, Any]:
    """The ``workflows`` row of ``workflow``, keyed by column name."""
    return column_values(WorkflowRecord, workflow_values(workflow))


async def persist_workflow(uow: UnitOfWork, **fields: Any) -> Workflow:
    """Build a workflow with :class:`WorkflowFactory` and create it."""
    return await uow.workflows.create(WorkflowFactory.build(**fields))


async def new_workflow(db: Database, **fields: Any) -> Workflow:
    """Create a workflow with :class:`WorkflowFactory` in a unit of work of its own."""
    async with db.session() as uow:
        return await persist_workflow(uow, **fields)


async def persist_step(uow: UnitOfWork, workflow: Workflow, **fields: Any) -> StepExecution:
    """Build a step execution of ``workflow`` and create it."""
    return await uow.step_executions.create(
        StepExecutionFactory.build(workflow_id=workflow.id, **fields)
    )


async def persist_artifact(uow: UnitOfWork, workflow: Workflow, **fields: Any) -> Artifact:
    """Build an artifact of ``workflow`` and create it."""
    return await uow.artifacts.create(ArtifactFactory.build(workflow_id=workflow.id, **fields))


def checked_out(db: Database) -> int:
    """How many connections of ``db``'s pool are in use right now."""
    pool: Any = db.engine.pool
    return int(pool.checkedout())


def sql(statement: str, **params: object) -> TextClause:
    """A raw statement whose UUID parameters are bound the way each dialect stores them."""
    return text(statement).bindparams(
        *(
            bindparam(name, value, type_=Uuid())
            if isinstance(value, uuid.UUID)
            else bindparam(name, value)
            for name, value in params.items()
        )
    )


async def raw_execute(db: Database, statement: str, **params: object) -> None:
    """Run one raw statement outside the repositories, in a transaction of its own."""
    async with db.engine.begin() as connection:
        await connection.execute(sql(statement, **params))


async def raw_scalar(db: Database, statement: str, **params: object) -> Any:
    """Run one raw statement outside the repositories and return its single value."""
    async with db.engine.connect() as connection:
        return (await connection.execute(sql(statement, **params))).scalar_one()


async def create_workflows(db: Database, *workflows: Workflow) -> None:
    """Create ``workflows`` in one unit of work."""
    async with db.session() as uow:
        for workflow in workflows:
            await uow.workflows.create(workflow)


async def create_step_executions(db: Database, *executions: StepExecution) -> None:
    """Create ``executions`` one by one in one unit of work."""
    async with db.session() as uow:
        for execution in executions:
            await uow.step_executions.create(execution)


async def create_artifacts(db: Database, *artifacts: Artifact) -> None:
    """Create ``artifacts`` in one unit of work."""
    async with db.session() as uow:
        for artifact in artifacts:
            await uow.artifacts.create(artifact)


async def get_workflow(db: Database, workflow_id: WorkflowId) -> Workflow | None:
    """The workflow as stored now, or ``None``, read in a unit of work of its own."""
    async with db.session(read_only=True) as uow:
        return await uow.workflows.get(workflow_id)


async def get_step_execution(db: Database, execution_id: StepExecutionId) -> StepExecution | None:
    """The step execution as stored now, or ``None``, read in a unit of work of its own."""
    async with db.session(read_only=True) as uow:
        return await uow.step_executions.get(execution_id)


async def get_artifact(db: Database, artifact_id: ArtifactId) -> Artifact | None:
    """The artifact as stored now, or ``None``, read in a unit of work of its own."""
    async with db.session(read_only=True) as uow:
        return await uow.artifacts.get(artifact_id)


async def stored_workflow(db: Database, workflow_id: WorkflowId) -> Workflow:
    """The workflow as stored now; fails the test if it is missing."""
    workflow = await get_workflow(db, workflow_id)
    assert workflow is not None, f"workflow {workflow_id} is missing"
    return workflow


async def stored_step_execution(db: Database, execution_id: StepExecutionId) -> StepExecution:
    """The step execution as stored now; fails the test if it is missing."""
    execution = await get_step_execution(db, execution_id)
    assert execution is not None, f"step execution {execution_id} is missing"
    return execution


async def stored_artifact(db: Database, artifact_id: ArtifactId) -> Artifact:
    """The artifact as stored now; fails the test if it is missing."""
    artifact = await get_artifact(db, artifact_id)
    assert artifact is not None, f"artifact {artifact_id} is missing"
    return artifact


SNAPSHOT_TABLES = (
    "workflows",
    "step_executions",
    "artifacts",
    "workflow_transitions",
    "concurrency_limits",
)
"""Every table of the package, as :func:`snapshot` reads them."""


async def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, raw as the driver returns it, in id order: to compare."""
    async with db.engine.connect() as connection:
        return {
            table: [
                tuple(row)
                for row in await connection.execute(text(f"SELECT * FROM {table} ORDER BY 1"))
            ]
            for table in SNAPSHOT_TABLES
        }


async def claim_one(db: Database, worker: str, **options: Any) -> Workflow:
    """Claim exactly one workflow for ``worker`` in a unit of work of its own; fail if none."""
    async with db.session() as uow:
        claimed = await uow.workflows.claim(worker, **options)
    assert len(claimed) == 1, f"{worker} claimed {len(claimed)} workflows, not one"
    return claimed[0]


@contextmanager
def statements_run(db: Database) -> Iterator[list[str]]:
    """Collect every statement the engine sends to the driver inside the block."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)


async def terminate_when_completed(
    db: Database, processes: list[asyncio.subprocess.Process], count: int, *, seconds: float = 180
) -> list[tuple[str, str]]:
    """Once ``count`` workflows are completed (by the processes), SIGTERM them; their output.

    Returns each process's standard output and error once it has exited; a
    process still running when anything fails (or after ``seconds``) is killed.
    """
    try:
        async with asyncio.timeout(seconds):
            # Other processes do the work: only the database can tell when it is done.
            while (await db_counts(db))[WorkflowState.COMPLETED] < count:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            for process in processes:
                process.send_signal(signal.SIGTERM)
            outputs = await asyncio.gather(*(process.communicate() for process in processes))
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    return [(out.decode(), err.decode()) for out, err in outputs]


async def db_counts(db: Database) -> dict[WorkflowState, int]:
    """How many workflows are in each state, read in a unit of work of its own."""
    async with db.session(read_only=True) as uow:
        return await uow.workflows.count_by_state()


async def start_python_module(module: str, *args: str) -> asyncio.subprocess.Process:
    """Start ``python -m MODULE ARGS`` from the repository root, its three streams piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPOSITORY,
    )


def leased_workflow(owner: str, expires_at: datetime, **fields: Any) -> Workflow:
    """A running workflow leased to ``owner`` until ``expires_at``, claimed once by default."""
    fields.setdefault("claim_count", 1)
    return WorkflowFactory.build(
        state=WorkflowState.RUNNING, lease_owner=owner, lease_expires_at=expires_at, **fields
    )


async def query_plan(db: Database, statement: Any, params: dict[str, Any], *, starts: str) -> str:
    """The plan of ``statement``, bound as a unit of work binds it, explained instead of run.

    The statement whose SQL begins with ``starts`` gets ``EXPLAIN`` in front.
    On PostgreSQL sequential scans are disabled: a tiny table is cheapest to
    scan whole, and the question is whether the planner can use an index at all.
    """
    explain = "EXPLAIN QUERY PLAN " if db.dialect == "sqlite" else "EXPLAIN "
    plan: list[str] = []

    def add_explain(
        conn: Any, cursor: Any, sql_text: str, parameters: Any, context: Any, many: bool
    ) -> tuple[str, Any]:
        return (explain + sql_text if sql_text.startswith(starts) else sql_text), parameters

    def read_plan(
        conn: Any, cursor: Any, sql_text: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if sql_text.startswith(explain):
            plan.extend(str(row[-1]) for row in cursor.fetchall())

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", add_explain, retval=True)
    event.listen(engine, "after_cursor_execute", read_plan)
    try:
        async with db.session() as uow:
            if db.dialect == "postgresql":
                await uow.execute(text("SET LOCAL enable_seqscan = off"), action="plan")
            # On the unit's connection, as Core: an ORM statement's entities
            # are not loaded from the plan's rows.
            connection = await uow.session.connection()
            await connection.execute(statement, params)
    finally:
        event.remove(engine, "before_cursor_execute", add_explain)
        event.remove(engine, "after_cursor_execute", read_plan)
    return "\n".join(plan)


_BASE64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def cursor_bytes(cursor: str) -> bytes:
    """The bytes a keyset cursor's base64 text stands for, read as leniently as Python reads it.

    ``base64.urlsafe_b64decode`` ignores the unused bits of a partial last
    group, characters outside the alphabet and surplus padding, so several
    texts stand for the same bytes.
    """
    token = cursor.partition(".")[2]
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _respelled(respell: Callable[[str], str]) -> Callable[[str], str]:
    def apply(cursor: str) -> str:
        prefix, dot, token = cursor.partition(".")
        # Only a partial last group has unused bits and padding to write out.
        assert len(token) % 4 in (2, 3), f"{cursor} ends in a whole base64 group"
        return prefix + dot + respell(token)

    return apply


def _unused_bits_set(token: str) -> str:
    # A canonical encoding leaves the unused low bits of the last character zero.
    return token[:-1] + _BASE64URL[_BASE64URL.index(token[-1]) | 1]


CURSOR_RESPELLINGS: dict[str, Callable[[str], str]] = {
    "unused-bits-set": _respelled(_unused_bits_set),
    "padding-written-out": _respelled(lambda token: token + "=" * (-len(token) % 4)),
    "skipped-characters": _respelled(lambda token: token[:8] + "...." + token[8:]),
}
"""Other texts for the bytes of a cursor whose last base64 group is partial, by name."""
