"""What the two ORM-based peers share: their engine, and mapping records to domain objects.

The engine is set up the way such code usually is: ``create_async_engine`` with
the pool size ecl-persistence uses by default and SQLAlchemy's defaults
otherwise (no pre-ping, the default JSON codec), plus SQLite's foreign keys
and busy timeout so that its writers wait for each other as ecl's do.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from typing_extensions import override

from benchmarks import build
from benchmarks.contenders.base import Contender, Target
from ecl_persistence import StepExecution, StepExecutionState, Workflow, WorkflowState
from ecl_persistence.config import normalize_url
from ecl_persistence.orm import StepExecutionRecord, WorkflowRecord

__all__ = ["OPEN_STATES", "OrmContender", "OrmMapping", "open_engine"]

OPEN_STATES = (StepExecutionState.PENDING.value, StepExecutionState.RUNNING.value)
_WORKFLOW_STATES = WorkflowState._value2member_map_
_STEP_STATES = StepExecutionState._value2member_map_


def open_engine(url: str) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    """An engine and a session factory on ``url`` (mapped to the async driver)."""
    engine_url = normalize_url(url)
    if engine_url.get_backend_name() == "sqlite":
        engine = create_async_engine(
            engine_url, pool_size=5, max_overflow=0, connect_args={"timeout": 30}
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    else:
        engine = create_async_engine(engine_url, pool_size=5, max_overflow=0)
    return engine, async_sessionmaker(engine, expire_on_commit=False)


class OrmMapping:
    """Records to domain objects, and step executions to records.

    The models' column types hand back decoded values on both backends
    (``MISSING`` for a SQL NULL output), so a record maps field for field.
    """

    def workflow(self, record: WorkflowRecord) -> Workflow:
        """The domain object of a ``workflows`` record."""
        return build.workflow(
            record.id,
            record.definition_id,
            _WORKFLOW_STATES[record.state],
            record.input,
            build.json_or_missing(record.output),
            record.error,
            record.created_at,
            record.updated_at,
            record.completed_at,
            record.metadata_,
            record.version,
            record.idempotency_key,
            record.lease_owner,
            record.lease_expires_at,
            record.claim_count,
            record.run_after,
            record.priority,
        )

    def step_execution(self, record: StepExecutionRecord) -> StepExecution:
        """The domain object of a ``step_executions`` record."""
        return build.step_execution(
            record.id,
            record.workflow_id,
            record.step_id,
            record.attempt,
            _STEP_STATES[record.state],
            record.input,
            build.json_or_missing(record.output),
            record.error,
            record.started_at,
            record.completed_at,
            record.duration_ms,
            record.tokens_used,
            record.metadata_,
        )

    @staticmethod
    def record(execution: StepExecution) -> StepExecutionRecord:
        """A new ``step_executions`` record for ``execution``."""
        return StepExecutionRecord(
            id=execution.id,
            workflow_id=execution.workflow_id,
            step_id=execution.step_id,
            attempt=execution.attempt,
            state=execution.state.value,
            input=execution.input,
            output=execution.output,
            error=execution.error,
            started_at=execution.started_at,
            completed_at=execution.completed_at,
            duration_ms=execution.duration_ms,
            tokens_used=execution.tokens_used,
            metadata_=execution.metadata,
        )


def now() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(UTC)


class OrmContender(Contender):
    """A contender on its own engine, one ``AsyncSession`` per operation."""

    def __init__(self) -> None:
        self._engine: AsyncEngine | None = None
        self._factory: async_sessionmaker[AsyncSession] | None = None
        self._map = OrmMapping()

    @property
    def _sessions(self) -> async_sessionmaker[AsyncSession]:
        assert self._factory is not None, "open() first"
        return self._factory

    @override
    async def open(self, target: Target) -> None:
        self._engine, self._factory = open_engine(target.url)
        self._map = OrmMapping()

    @override
    async def close(self) -> None:
        assert self._engine is not None
        await self._engine.dispose()
