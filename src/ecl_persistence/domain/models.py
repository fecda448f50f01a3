"""The domain objects: workflows, step executions and their summaries.

Every class is an immutable (frozen, slotted) attrs class that checks its
fields when it is built, so an instance that exists is valid. Invalid input
raises :class:`~ecl_persistence.errors.ValidationError`, or
:class:`~ecl_persistence.errors.SerializationError` for a payload that cannot
be stored as JSON; never a bare ``TypeError`` or ``ValueError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from ecl_persistence.domain import _fields
from ecl_persistence.domain.clock import utc_now
from ecl_persistence.domain.ids import (
    MAX_ID_LENGTH,
    StepExecutionId,
    StepId,
    WorkflowId,
    new_uuid7,
)
from ecl_persistence.domain.leases import Lease
from ecl_persistence.domain.payload import MISSING, JsonValue, Missing, check_text
from ecl_persistence.domain.states import StepExecutionState, WorkflowState
from ecl_persistence.domain.usage import TokenUsage, check_cost, check_model
from ecl_persistence.errors import ValidationError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime
    from decimal import Decimal

__all__ = [
    "MAX_ATTEMPT",
    "MAX_ERROR_LENGTH",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "StepExecution",
    "Workflow",
    "utc_now",
]

#: The longest error message stored, in characters.
MAX_ERROR_LENGTH = 65536
#: The highest attempt number of a step execution.
MAX_ATTEMPT = 1_000_000
#: The lowest and highest priority of a workflow (a 32-bit column).
MIN_PRIORITY = -(2**31)
MAX_PRIORITY = 2**31 - 1

# The frozen classes refuse attribute assignment; their trusted constructors
# fill the slots the way attrs' own __init__ does.
_NEW = object.__new__
_SET = object.__setattr__


def _definition_id(value: str) -> str:
    return check_text(value, field="definition_id", max_length=MAX_ID_LENGTH)


def _step_id(value: StepId | str) -> StepId:
    return StepId(check_text(value, field="step_id", max_length=MAX_ID_LENGTH))


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    return check_text(value, field="idempotency_key", max_length=MAX_ID_LENGTH)


def _lease_owner(value: str | None) -> str | None:
    if value is None:
        return None
    return check_text(value, field="lease_owner", max_length=MAX_ID_LENGTH)


def _lease(instance: Workflow, attribute: attrs.Attribute[Any], value: datetime | None) -> None:
    # Runs once every field is set: a lease is an owner and an expiry together,
    # held only by a running workflow (the database checks the same).
    if (instance.lease_owner is None) != (value is None):
        raise ValidationError("lease_owner and lease_expires_at must be set together")
    if value is not None and instance.state is not WorkflowState.RUNNING:
        raise ValidationError("only a running workflow can hold a lease")


def _concurrency_key(value: str | None) -> str | None:
    if value is None:
        return None
    return check_text(value, field="concurrency_key", max_length=MAX_ID_LENGTH)


def _error(value: str | None) -> str | None:
    if value is None:
        return None
    return check_text(value, field="error", max_length=MAX_ERROR_LENGTH, allow_empty=True)


def _usage(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, TokenUsage):
        raise ValidationError(f"usage must be a TokenUsage, not {type(value).__name__}")


def _model(value: str | None) -> str | None:
    return check_model(value)


def _cost(value: Decimal | None) -> Decimal | None:
    return check_cost(value)


def _workflow_state(value: WorkflowState | str) -> WorkflowState:
    return _fields.coerce_enum(WorkflowState, value, "state")


def _step_state(value: StepExecutionState | str) -> StepExecutionState:
    return _fields.coerce_enum(StepExecutionState, value, "state")


@attrs.frozen
class Workflow:
    """One run of a workflow definition.

    Instances are frozen and validated on construction: text fields are plain
    ``str`` without NUL, payloads pass :func:`~ecl_persistence.domain.check_json`,
    and every datetime is aware and in UTC. ``output`` is ``MISSING`` until the
    workflow produces one. ``version`` counts the stored changes, from 1, for
    optimistic locking. Build new workflows with :meth:`new`.

    The last fields serve workers sharing a database (see ``docs/workers.md``):
    ``idempotency_key`` makes a retried start return the first workflow;
    ``lease_owner`` and ``lease_expires_at`` name the worker that claimed a
    running workflow and until when (both or neither, and only while running);
    ``claim_count`` counts the claims, so a workflow that keeps killing its
    workers can be told apart; ``run_after``, when set, is the instant before
    which no claim takes the workflow, and claims take the highest
    ``priority`` first, then the oldest.

    The operations of ``docs/operations.md`` add the last three:
    ``cancel_requested_at`` is when a cancel of the running workflow was
    asked for (its run stops at its next heartbeat); ``forked_from`` is the
    workflow this one was forked from; ``concurrency_key`` names the group
    whose running workflows a concurrency limit counts.
    """

    id: WorkflowId = attrs.field(converter=_fields.uuid_from_text, validator=_fields.uuid_value)
    definition_id: str = attrs.field(converter=_definition_id)
    state: WorkflowState = attrs.field(converter=_workflow_state)
    input: JsonValue = attrs.field(validator=_fields.json_payload(), repr=_fields.redacted)
    output: JsonValue | Missing = attrs.field(
        validator=_fields.json_payload(allow_missing=True), repr=_fields.redacted
    )
    error: str | None = attrs.field(converter=_error)
    created_at: datetime = attrs.field(
        converter=_fields.utc_datetime, validator=_fields.aware_utc()
    )
    updated_at: datetime = attrs.field(
        converter=_fields.utc_datetime, validator=_fields.aware_utc()
    )
    completed_at: datetime | None = attrs.field(
        converter=_fields.optional_utc_datetime, validator=_fields.aware_utc(optional=True)
    )
    metadata: dict[str, JsonValue] = attrs.field(
        validator=_fields.json_object, repr=_fields.redacted
    )
    version: int = attrs.field(validator=_fields.integer(minimum=1))
    idempotency_key: str | None = attrs.field(default=None, converter=_idempotency_key)
    lease_owner: str | None = attrs.field(default=None, converter=_lease_owner)
    lease_expires_at: datetime | None = attrs.field(
        default=None,
        converter=_fields.optional_utc_datetime,
        validator=[_fields.aware_utc(optional=True), _lease],
    )
    claim_count: int = attrs.field(default=0, validator=_fields.integer(minimum=0))
    run_after: datetime | None = attrs.field(
        default=None,
        converter=_fields.optional_utc_datetime,
        validator=_fields.aware_utc(optional=True),
    )
    priority: int = attrs.field(
        default=0, validator=_fields.integer(minimum=MIN_PRIORITY, maximum=MAX_PRIORITY)
    )
    cancel_requested_at: datetime | None = attrs.field(
        default=None,
        converter=_fields.optional_utc_datetime,
        validator=_fields.aware_utc(optional=True),
    )
    forked_from: WorkflowId | None = attrs.field(
        default=None, converter=_fields.optional_uuid_from_text, validator=_fields.optional_uuid
    )
    concurrency_key: str | None = attrs.field(default=None, converter=_concurrency_key)

    @property
    def lease(self) -> Lease | None:
        """The lease this workflow is held under (a fencing token), or None without one."""
        if self.lease_owner is None:
            return None
        return Lease(self.id, self.lease_owner, self.claim_count)

    @classmethod
    def new(
        cls,
        definition_id: str,
        input: JsonValue,
        *,
        metadata: Mapping[str, JsonValue] | None = None,
        id: WorkflowId | str | None = None,
        now: datetime | None = None,
        idempotency_key: str | None = None,
        run_after: datetime | None = None,
        priority: int = 0,
        concurrency_key: str | None = None,
    ) -> Workflow:
        """Return a pending workflow at version 1, created ``now`` (default: the current time).

        With an ``idempotency_key`` (at most 255 characters, for example a
        request id), creating the workflow again with the same key and
        definition returns the workflow stored first instead of a second one.
        With ``run_after`` (an aware datetime) no claim takes the workflow
        before that instant; claims take the highest ``priority`` first
        (from :data:`MIN_PRIORITY` to :data:`MAX_PRIORITY`, 0 by default),
        then the oldest. With a ``concurrency_key`` (at most 255 characters,
        for example a tenant or a model), claims keep the number of running
        workflows of that key within its limit, if one is set.
        """
        created_at = utc_now() if now is None else now
        return cls(
            id=WorkflowId(new_uuid7()) if id is None else id,
            definition_id=definition_id,
            state=WorkflowState.PENDING,
            input=input,
            output=MISSING,
            error=None,
            created_at=created_at,
            updated_at=created_at,
            completed_at=None,
            metadata=_fields.copy_metadata(metadata),
            version=1,
            idempotency_key=idempotency_key,
            run_after=run_after,
            priority=priority,
            concurrency_key=concurrency_key,
        )

    @classmethod
    def _from_row(cls, *values: Any) -> Workflow:
        """Rebuild a stored workflow, from its field values in order, without validating them.

        Only for the repositories, with values they read back and checked
        (see ``repositories._values``): a caller's values go through ``__init__``.
        """
        self = _NEW(cls)
        for name, value in zip(_WORKFLOW_SLOTS, values, strict=True):
            _SET(self, name, value)
        return self


@attrs.frozen
class StepExecution:
    """One attempt at running one step of a workflow.

    Instances are frozen and validated on construction: ``attempt`` is from 1
    to :data:`MAX_ATTEMPT`, counters are non-negative 64-bit integers or None,
    payloads pass :func:`~ecl_persistence.domain.check_json`, and every
    datetime is aware and in UTC. ``output`` is ``MISSING`` until the step
    produces one. Build new executions with :meth:`start`. ``copied_from``
    is the attempt this one is a copy of, when a fork copied it from the
    workflow it was forked from (see ``docs/operations.md``); ``None`` otherwise.

    ``usage`` is what the attempt's LLM calls used (a :class:`TokenUsage`),
    ``model`` the model they ran on and ``cost`` what they cost (a
    non-negative ``Decimal`` with at most six decimal places); each None when
    not recorded. With a usage, ``tokens_used`` is its total.
    """

    id: StepExecutionId = attrs.field(
        converter=_fields.uuid_from_text, validator=_fields.uuid_value
    )
    workflow_id: WorkflowId = attrs.field(
        converter=_fields.uuid_from_text, validator=_fields.uuid_value
    )
    step_id: StepId = attrs.field(converter=_step_id)
    attempt: int = attrs.field(validator=_fields.integer(minimum=1, maximum=MAX_ATTEMPT))
    state: StepExecutionState = attrs.field(converter=_step_state)
    input: JsonValue = attrs.field(validator=_fields.json_payload(), repr=_fields.redacted)
    output: JsonValue | Missing = attrs.field(
        validator=_fields.json_payload(allow_missing=True), repr=_fields.redacted
    )
    error: str | None = attrs.field(converter=_error)
    started_at: datetime = attrs.field(
        converter=_fields.utc_datetime, validator=_fields.aware_utc()
    )
    completed_at: datetime | None = attrs.field(
        converter=_fields.optional_utc_datetime, validator=_fields.aware_utc(optional=True)
    )
    duration_ms: int | None = attrs.field(validator=_fields.integer(minimum=0, optional=True))
    tokens_used: int | None = attrs.field(validator=_fields.integer(minimum=0, optional=True))
    metadata: dict[str, JsonValue] = attrs.field(
        validator=_fields.json_object, repr=_fields.redacted
    )
    copied_from: StepExecutionId | None = attrs.field(
        default=None, converter=_fields.optional_uuid_from_text, validator=_fields.optional_uuid
    )
    usage: TokenUsage | None = attrs.field(default=None, validator=_usage)
    model: str | None = attrs.field(default=None, converter=_model)
    cost: Decimal | None = attrs.field(default=None, converter=_cost)

    def __attrs_post_init__(self) -> None:
        if self.usage is not None:
            _SET(self, "tokens_used", self.usage.total)

    @classmethod
    def start(
        cls,
        workflow_id: WorkflowId | str,
        step_id: StepId | str,
        input: JsonValue,
        *,
        attempt: int = 1,
        metadata: Mapping[str, JsonValue] | None = None,
        id: StepExecutionId | str | None = None,
        now: datetime | None = None,
    ) -> StepExecution:
        """Return a running execution started ``now`` (default: the current time)."""
        return cls(
            id=StepExecutionId(new_uuid7()) if id is None else id,
            workflow_id=workflow_id,
            step_id=StepId(step_id),
            attempt=attempt,
            state=StepExecutionState.RUNNING,
            input=input,
            output=MISSING,
            error=None,
            started_at=utc_now() if now is None else now,
            completed_at=None,
            duration_ms=None,
            tokens_used=None,
            metadata=_fields.copy_metadata(metadata),
        )

    @classmethod
    def _from_row(cls, *values: Any) -> StepExecution:
        """Rebuild a stored step execution, from its field values in order, without validating.

        Only for the repositories, with values they read back and checked
        (see ``repositories._values``): a caller's values go through ``__init__``.
        """
        self = _NEW(cls)
        for name, value in zip(_STEP_SLOTS, values, strict=True):
            _SET(self, name, value)
        return self


_WORKFLOW_SLOTS = tuple(field.name for field in attrs.fields(Workflow))
_STEP_SLOTS = tuple(field.name for field in attrs.fields(StepExecution))
