"""The exceptions of ecl-persistence.

Every failure that reaches a caller is a :class:`DbError`; no SQLAlchemy or
driver exception escapes the package. Messages name the entity and its id,
never a password or a payload.
"""

from __future__ import annotations

__all__ = [
    "AttemptsExhaustedError",
    "BudgetExceededError",
    "ConflictError",
    "ConnectionFailedError",
    "ConstraintViolationError",
    "DbError",
    "InvalidStateTransitionError",
    "LeaseLostError",
    "MigrationFailedError",
    "NotFoundError",
    "PurgeFailedError",
    "QueryFailedError",
    "SchemaNotReadyError",
    "SerializationError",
    "StoredValueError",
    "TransactionFailedError",
    "ValidationError",
]


class DbError(Exception):
    """Base class of every error raised by ecl-persistence.

    ``retryable`` tells whether the same unit of work may succeed if run again
    (a lost connection, a lock wait that timed out, a lost race).
    """

    retryable: bool = False


class ConnectionFailedError(DbError):
    """The database could not be reached, or the connection was lost.

    ``retryable`` is true when trying again later may succeed (a timeout, a
    busy SQLite database, a dropped connection), false when it will not (a
    wrong password, a missing database).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class NotFoundError(DbError):
    """No row of ``entity_type`` has the given ``id``."""

    def __init__(self, entity_type: str, id: object) -> None:
        super().__init__(f"{entity_type} {id} not found")
        self.entity_type = entity_type
        self.id = id


class ConstraintViolationError(DbError):
    """A write broke a database constraint (unique, foreign key, check).

    ``constraint`` is the constraint's name when the database reported it.
    """

    def __init__(self, message: str, *, constraint: str | None = None) -> None:
        super().__init__(message)
        self.constraint = constraint


class ValidationError(DbError, ValueError):
    """A value given by the caller is not acceptable; nothing was written."""


class SerializationError(DbError, ValueError):
    """A payload cannot be stored as JSON (NaN, NUL, a non-JSON type, too large or deep)."""


class QueryFailedError(DbError):
    """A statement failed, or a row read back holds a value that is not valid."""


class StoredValueError(SerializationError, QueryFailedError):
    """A value read back from the database cannot be decoded or breaks the rules of its column.

    A damaged row: JSON that is not JSON (or holds a NaN or a 65-bit
    integer), text with a NUL, a timestamp that is not one. The message
    names the table, the column and the row's id, never the value. It is a
    :class:`SerializationError` and a :class:`QueryFailedError` at once.
    """


class TransactionFailedError(DbError):
    """The unit of work cannot do what was asked.

    Raised for a write in a read-only unit of work, for use outside ``async with``,
    for a commit that failed, and when the database is busy beyond its timeout
    (then ``retryable`` is true).
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class MigrationFailedError(DbError):
    """An Alembic migration could not be applied."""


class PurgeFailedError(DbError):
    """A purge failed part way; the batches before the one that failed stay deleted.

    ``deleted`` is how many workflows those batches deleted. The batch's own
    error is the ``__cause__``, and ``retryable`` is its: running the purge
    again continues where it stopped.
    """

    def __init__(self, message: str, *, deleted: int, retryable: bool = False) -> None:
        super().__init__(message)
        self.deleted = deleted
        """How many workflows the purge had deleted (and committed) before it failed."""
        self.retryable = retryable


class SchemaNotReadyError(MigrationFailedError):
    """The database's schema is not the one this version of ecl-persistence needs.

    Raised when a statement meets a table or column the schema lacks, on a
    database that was never migrated or is behind: call ``await db.migrate()``
    (or run ``ecl-db migrate``). ``current_revision`` is the revision the
    database is at (``None``: never migrated, or unknown when it could not
    be read), ``head_revision`` the one the code needs.
    """

    def __init__(
        self,
        message: str,
        *,
        current_revision: str | None = None,
        head_revision: str | None = None,
        missing: str | None = None,
    ) -> None:
        super().__init__(message)
        self.current_revision = current_revision
        """The revision the database is at; ``None`` if never migrated or not read."""
        self.head_revision = head_revision
        """The revision this version of ecl-persistence needs (its newest)."""
        self.missing = missing
        """The table (or column) the statement did not find, when the database said."""


class InvalidStateTransitionError(DbError):
    """A state change that the rules of the workflow lifecycle forbid; nothing changed."""

    def __init__(self, entity_type: str, id: object, from_state: str, to_state: str) -> None:
        super().__init__(f"{entity_type} {id}: cannot move from {from_state} to {to_state}")
        self.entity_type = entity_type
        self.id = id
        self.from_state = from_state
        self.to_state = to_state


class ConflictError(DbError):
    """A concurrent change won: the row is not in the version or owner the caller expected.

    ``retryable`` is true when reading the row again and redoing the work may
    succeed (a stale ``expected_version``, a lost serialization race), false
    when it cannot (an idempotency key reused with another input, a lease
    another worker now holds).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class LeaseLostError(ConflictError):
    """A write was made under a lease that is no longer current; it changed nothing.

    Another worker claimed the workflow after the lease expired, or the
    workflow was released or finished since. Not retryable: the workflow is
    no longer the writer's to work on. ``workflow_id`` names it.
    """

    def __init__(self, message: str, *, workflow_id: object = None) -> None:
        super().__init__(message, retryable=False)
        self.workflow_id = workflow_id


class AttemptsExhaustedError(DbError):
    """A step already failed as many times as its retry policy allows; it was not run again.

    Raised by a workflow run for a step whose stored history already holds
    ``max_attempts`` failed attempts (a run that stopped before it could fail
    the workflow left it so). ``step_id`` and ``workflow_id`` name the step.
    """

    def __init__(self, workflow_id: object, step_id: str, attempts: int) -> None:
        super().__init__(
            f"step {step_id!r} of workflow {workflow_id} already failed {attempts} times, "
            "as many as its retry policy allows"
        )
        self.workflow_id = workflow_id
        self.step_id = step_id


class BudgetExceededError(Exception):
    """A step was not started: its workflow has already spent its budget.

    Not a :class:`DbError`: nothing failed in the database. Raised by
    :meth:`~ecl_persistence.WorkflowRun.step` when the workflow's recorded
    cost has reached ``max_cost`` (the step's, or the worker's
    ``max_cost_per_workflow``). ``spent`` and ``limit`` are the amounts.
    """

    def __init__(self, workflow_id: object, step_id: str, spent: object, limit: object) -> None:
        super().__init__(
            f"step {step_id!r} of workflow {workflow_id} not started: "
            f"the workflow has spent {spent} of a budget of {limit}"
        )
        self.workflow_id = workflow_id
        self.step_id = step_id
        self.spent = spent
        self.limit = limit
