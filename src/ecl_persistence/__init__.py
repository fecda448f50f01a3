"""ecl-persistence: the state of ECL workflows, on SQLite and PostgreSQL.

Workflows, every attempt of every step, and the artifacts steps produce,
stored through repositories behind a unit of work (and worked on by
:class:`Worker` processes sharing the database)::

    db = Database.from_url("sqlite:///./ecl.db")
    await db.migrate()
    async with db.session() as uow:
        await uow.workflows.create(Workflow.new("research", {"topic": "tides"}))
"""

from ecl_persistence.config import DEFAULT_URL, DatabaseConfig
from ecl_persistence.database import Database
from ecl_persistence.dialects.postgresql import APPLICATION_NAME
from ecl_persistence.domain import (
    MISSING,
    Artifact,
    ArtifactId,
    ConcurrencyLimit,
    ExecutionStats,
    JsonValue,
    Lease,
    Missing,
    Page,
    Price,
    PriceBook,
    ResumePoint,
    StepExecution,
    StepExecutionId,
    StepExecutionState,
    StepId,
    TokenUsage,
    UsageRow,
    Workflow,
    WorkflowAggregate,
    WorkflowId,
    WorkflowState,
    WorkflowTransition,
)
from ecl_persistence.errors import (
    AttemptsExhaustedError,
    BudgetExceededError,
    ConflictError,
    ConnectionFailedError,
    ConstraintViolationError,
    DbError,
    InvalidStateTransitionError,
    LeaseLostError,
    MigrationFailedError,
    NotFoundError,
    PurgeFailedError,
    QueryFailedError,
    SchemaNotReadyError,
    SerializationError,
    StoredValueError,
    TransactionFailedError,
    ValidationError,
)
from ecl_persistence.recorder import StepRecorder, StepRecording
from ecl_persistence.repositories import (
    ArtifactRepository,
    StepExecutionRepository,
    WorkflowRepository,
)
from ecl_persistence.unit_of_work import UnitOfWork
from ecl_persistence.workers import Retry, Worker, WorkflowRun

__version__ = "0.1.0"
"""The version of this package."""

__all__ = [
    "APPLICATION_NAME",
    "DEFAULT_URL",
    "MISSING",
    "Artifact",
    "ArtifactId",
    "ArtifactRepository",
    "AttemptsExhaustedError",
    "BudgetExceededError",
    "ConcurrencyLimit",
    "ConflictError",
    "ConnectionFailedError",
    "ConstraintViolationError",
    "Database",
    "DatabaseConfig",
    "DbError",
    "ExecutionStats",
    "InvalidStateTransitionError",
    "JsonValue",
    "Lease",
    "LeaseLostError",
    "MigrationFailedError",
    "Missing",
    "NotFoundError",
    "Page",
    "Price",
    "PriceBook",
    "PurgeFailedError",
    "QueryFailedError",
    "ResumePoint",
    "Retry",
    "SchemaNotReadyError",
    "SerializationError",
    "StepExecution",
    "StepExecutionId",
    "StepExecutionRepository",
    "StepExecutionState",
    "StepId",
    "StepRecorder",
    "StepRecording",
    "StoredValueError",
    "TokenUsage",
    "TransactionFailedError",
    "UnitOfWork",
    "UsageRow",
    "ValidationError",
    "Worker",
    "Workflow",
    "WorkflowAggregate",
    "WorkflowId",
    "WorkflowRepository",
    "WorkflowRun",
    "WorkflowState",
    "WorkflowTransition",
    "__version__",
]
