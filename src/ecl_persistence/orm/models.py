"""The tables of ECL's state: workflows, their step executions, artifacts and transitions."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, object_session, relationship

from ecl_persistence.orm.base import Base
from ecl_persistence.orm.payload_codec import HASH_LENGTH
from ecl_persistence.orm.types import (
    JsonPayload,
    Money,
    PayloadRef,
    Undecodable,
    UTCDateTime,
    Uuid,
)

__all__ = [
    "ArtifactRecord",
    "ConcurrencyLimitRecord",
    "PayloadRecord",
    "StepExecutionRecord",
    "WorkflowRecord",
    "WorkflowTransitionRecord",
]

ID_LENGTH = 255
STATE_LENGTH = 16


def _state_check(*states: str, column: str = "state") -> str:
    quoted = ", ".join(f"'{state}'" for state in states)
    return f"{column} IN ({quoted})"


WORKFLOW_STATES = ("pending", "running", "completed", "failed", "cancelled")
"""The values of a workflow's ``state`` column."""
CLAIMABLE_STATES = ("pending", "running")
"""The states a claim looks at: the partial claim index covers exactly these."""
_CLAIMABLE = _state_check(*CLAIMABLE_STATES)


_REFERRING: dict[str, Any] = {
    "postgresql_where": text("input_ref IS NOT NULL"),
    "sqlite_where": text("input_ref IS NOT NULL"),
}
_REFERRING_OUTPUT: dict[str, Any] = {
    "postgresql_where": text("output_ref IS NOT NULL"),
    "sqlite_where": text("output_ref IS NOT NULL"),
}


class WorkflowRecord(Base):
    """A row of ``workflows``: one run of a workflow definition."""

    __tablename__ = "workflows"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    definition_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    state: Mapped[str] = mapped_column(String(STATE_LENGTH))
    input: Mapped[Any] = mapped_column(JsonPayload, nullable=False)
    output: Mapped[Any | None] = mapped_column(JsonPayload, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    metadata_: Mapped[Any] = mapped_column("metadata", JsonPayload, nullable=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    idempotency_key: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    lease_owner: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claim_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    run_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # No foreign key: a fork outlives the purge of the workflow it came from.
    forked_from: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    concurrency_key: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    # Set when the payload is in ``payloads``: the inline column then holds
    # JSON null (input) or NULL (output), and this, the payload's hash.
    input_ref: Mapped[Any | None] = mapped_column(PayloadRef)
    output_ref: Mapped[Any | None] = mapped_column(PayloadRef)

    step_executions: Mapped[list[StepExecutionRecord]] = relationship(
        back_populates="workflow",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="raise",
        order_by="(StepExecutionRecord.started_at, StepExecutionRecord.attempt, "
        "StepExecutionRecord.id)",
    )
    artifacts: Mapped[list[ArtifactRecord]] = relationship(
        back_populates="workflow",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="raise",
        order_by="(ArtifactRecord.created_at, ArtifactRecord.step_id, ArtifactRecord.name)",
    )
    transitions: Mapped[list[WorkflowTransitionRecord]] = relationship(
        back_populates="workflow",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="raise",
        order_by="WorkflowTransitionRecord.version",
    )

    __table_args__ = (
        CheckConstraint(_state_check(*WORKFLOW_STATES), name="state"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("claim_count >= 0", name="claim_count_non_negative"),
        # A lease is an owner and an expiry together, and only a running
        # workflow has one: claims and heartbeats can then trust both columns.
        CheckConstraint(
            "(lease_owner IS NULL AND lease_expires_at IS NULL) OR "
            "(lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL AND state = 'running')",
            name="lease",
        ),
        UniqueConstraint("definition_id", "idempotency_key"),
        Index("ix_workflows_state_created_at_id", "state", "created_at", "id"),
        Index("ix_workflows_definition_id_created_at_id", "definition_id", "created_at", "id"),
        Index("ix_workflows_created_at_id", "created_at", "id"),
        # A purge batch reads the workflows of one finished state that
        # finished before its cutoff, oldest first, straight from this index.
        Index("ix_workflows_state_completed_at", "state", "completed_at"),
        # Whether a payload is still referred to (purge, delete).
        Index("ix_workflows_input_ref", "input_ref", **_REFERRING),
        Index("ix_workflows_output_ref", "output_ref", **_REFERRING_OUTPUT),
    )


# The claim queue, highest priority first, then oldest: finished workflows
# (most rows, over time) are left out, so a claim reads only open workflows.
# Defined on the mapped columns, since it orders one of them descending.
Index(
    "ix_workflows_claimable_priority_created_at_id",
    WorkflowRecord.priority.desc(),
    WorkflowRecord.created_at,
    WorkflowRecord.id,
    postgresql_where=text(_CLAIMABLE),
    sqlite_where=text(_CLAIMABLE),
)

# What a claim counts against a concurrency limit: the running workflows of a
# key, with their lease's expiry (a live lease counts, an expired one not).
_RUNNING_KEYED = "state = 'running' AND concurrency_key IS NOT NULL"
Index(
    "ix_workflows_running_concurrency_key",
    WorkflowRecord.concurrency_key,
    WorkflowRecord.lease_expires_at,
    postgresql_where=text(_RUNNING_KEYED),
    sqlite_where=text(_RUNNING_KEYED),
)


USAGE_CHECK = (
    "(input_tokens IS NULL AND output_tokens IS NULL AND cached_tokens IS NULL "
    "AND reasoning_tokens IS NULL) OR (input_tokens IS NOT NULL AND output_tokens IS NOT NULL "
    "AND cached_tokens IS NOT NULL AND reasoning_tokens IS NOT NULL AND input_tokens >= 0 "
    "AND output_tokens >= 0 AND cached_tokens >= 0 AND reasoning_tokens >= 0)"
)
"""The four token counts of an attempt's usage: all set (and non-negative) or none."""


class StepExecutionRecord(Base):
    """A row of ``step_executions``: one attempt of one step of a workflow."""

    __tablename__ = "step_executions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    workflow_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("workflows.id", ondelete="CASCADE")
    )
    step_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    attempt: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(STATE_LENGTH))
    input: Mapped[Any] = mapped_column(JsonPayload, nullable=False)
    output: Mapped[Any | None] = mapped_column(JsonPayload, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    tokens_used: Mapped[int | None] = mapped_column(BigInteger)
    metadata_: Mapped[Any] = mapped_column("metadata", JsonPayload, nullable=False)
    # No foreign key: the copy outlives the purge of the attempt it copies.
    copied_from: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # The usage: all four counts or none (an attempt that recorded no usage).
    input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cached_tokens: Mapped[int | None] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int | None] = mapped_column(BigInteger)
    model: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    cost: Mapped[Decimal | None] = mapped_column(Money)
    input_ref: Mapped[Any | None] = mapped_column(PayloadRef)
    output_ref: Mapped[Any | None] = mapped_column(PayloadRef)

    workflow: Mapped[WorkflowRecord] = relationship(back_populates="step_executions", lazy="raise")

    __table_args__ = (
        CheckConstraint(_state_check("pending", "running", "succeeded", "failed"), name="state"),
        CheckConstraint("attempt >= 1", name="attempt_positive"),
        CheckConstraint("duration_ms >= 0", name="duration_ms_non_negative"),
        CheckConstraint("tokens_used >= 0", name="tokens_used_non_negative"),
        CheckConstraint(USAGE_CHECK, name="usage"),
        CheckConstraint("cost >= 0", name="cost_non_negative"),
        # Leads with workflow_id, so it is also the foreign key's index.
        UniqueConstraint("workflow_id", "step_id", "attempt"),
        Index("ix_step_executions_workflow_id_started_at", "workflow_id", "started_at"),
        # The ledger's since/until range.
        Index("ix_step_executions_started_at", "started_at"),
        # Whether a payload is still referred to (purge, delete).
        Index("ix_step_executions_input_ref", "input_ref", **_REFERRING),
        Index("ix_step_executions_output_ref", "output_ref", **_REFERRING_OUTPUT),
    )


class PayloadRecord(Base):
    """A row of ``payloads``: one large input or output, compressed, stored once.

    Keyed by the SHA-256 of the payload's canonical JSON text; ``raw_size``
    is the size of that text, ``data`` the bytes stored (``codec``: zstd).
    Rows of ``workflows`` and ``step_executions`` refer to it by hash
    (``input_ref``, ``output_ref``); purge and delete remove a payload no
    row refers to any more.
    """

    __tablename__ = "payloads"

    hash: Mapped[str] = mapped_column(String(HASH_LENGTH), primary_key=True)
    codec: Mapped[str] = mapped_column(String(STATE_LENGTH))
    raw_size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (CheckConstraint("raw_size >= 0", name="raw_size_non_negative"),)


class ArtifactRecord(Base):
    """A row of ``artifacts``: a file or object a step produced, stored elsewhere."""

    __tablename__ = "artifacts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    workflow_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("workflows.id", ondelete="CASCADE")
    )
    step_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    name: Mapped[str] = mapped_column(String(ID_LENGTH))
    content_type: Mapped[str] = mapped_column(String(ID_LENGTH))
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    metadata_: Mapped[Any] = mapped_column("metadata", JsonPayload, nullable=False)

    workflow: Mapped[WorkflowRecord] = relationship(back_populates="artifacts", lazy="raise")

    __table_args__ = (
        CheckConstraint("size_bytes >= 0", name="size_bytes_non_negative"),
        # Leads with workflow_id, so it is also the foreign key's index.
        UniqueConstraint("workflow_id", "step_id", "name"),
        Index("ix_artifacts_workflow_id_created_at", "workflow_id", "created_at"),
    )


class WorkflowTransitionRecord(Base):
    """A row of ``workflow_transitions``: one state change of a workflow, never updated.

    A database trigger refuses every UPDATE of this table; rows go only with
    their workflow (delete, purge).
    """

    __tablename__ = "workflow_transitions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    workflow_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("workflows.id", ondelete="CASCADE")
    )
    from_state: Mapped[str | None] = mapped_column(String(STATE_LENGTH))
    to_state: Mapped[str] = mapped_column(String(STATE_LENGTH))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    reason: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)

    workflow: Mapped[WorkflowRecord] = relationship(back_populates="transitions", lazy="raise")

    __table_args__ = (
        # NULL only on the row that records the workflow's creation.
        CheckConstraint(
            "from_state IS NULL OR " + _state_check(*WORKFLOW_STATES, column="from_state"),
            name="from_state",
        ),
        CheckConstraint(_state_check(*WORKFLOW_STATES, column="to_state"), name="to_state"),
        CheckConstraint("version >= 1", name="version_positive"),
        # One transition per version of a workflow. Leads with workflow_id, so
        # it is also the foreign key's index and the one history() reads.
        UniqueConstraint("workflow_id", "version"),
    )


class ConcurrencyLimitRecord(Base):
    """A row of ``concurrency_limits``: how many workflows of a key may run at once.

    Claims lock the row of each key they take workflows of (on PostgreSQL),
    so that two claims never both see room for the same last slot.
    """

    __tablename__ = "concurrency_limits"

    key: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    max_running: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint("max_running >= 0", name="max_running_non_negative"),)


def _decoded_attributes(record_class: type[Base]) -> tuple[tuple[str, str], ...]:
    """The (attribute, column) names of the class's columns that may read as Undecodable."""
    return tuple(
        (key, prop.columns[0].name)
        for key, prop in record_class.__mapper__.column_attrs.items()
        if isinstance(prop.columns[0].type, JsonPayload | Uuid | PayloadRef)
    )


_DECODED_ATTRIBUTES: dict[type[Base], tuple[tuple[str, str], ...]] = {
    record_class: _decoded_attributes(record_class)
    for record_class in (
        WorkflowRecord,
        StepExecutionRecord,
        ArtifactRecord,
        WorkflowTransitionRecord,
    )
}


@event.listens_for(Base, "load", propagate=True)
@event.listens_for(Base, "refresh", propagate=True)
def _refuse_undecodable(record: Base, context: Any, *attributes: Any) -> None:
    """An entity never holds a value it could not decode: its load fails, naming where.

    The half-loaded entity leaves the session first, so a later ``get`` of the
    same id reads the row again (and fails again) instead of finding it.
    """
    values = record.__dict__
    for key, column in _DECODED_ATTRIBUTES.get(type(record), ()):
        value = values.get(key)
        if type(value) is Undecodable:
            session = object_session(record)
            if session is not None:
                session.expunge(record)
            raise value.error(type(record).__tablename__, column, values.get("id"))
