"""Values read back: check them, and blame the right table, column and id.

A value read back goes through the same rules as a caller's values, but not
through the same code: the checks a database can fail (a text column holding
NUL, a JSON document holding a 65-bit integer, a timestamp that is not one)
run here, cheaply and in one pass, and the domain object is then built
without running its validators again. A row that fails any of them is built
through the validating constructor instead, whose error names the field.
The JSON columns arrive decoded (or marked :class:`Undecodable`) by their
column type.
"""

from __future__ import annotations

import enum
import functools
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import attrs

from ecl_persistence.domain import (
    MAX_ATTEMPT,
    MAX_ERROR_LENGTH,
    MAX_ID_LENGTH,
    MAX_PRIORITY,
    MIN_PRIORITY,
    MISSING,
    JsonValue,
    Missing,
    StepExecution,
    Workflow,
    WorkflowState,
)
from ecl_persistence.errors import SerializationError, StoredValueError, ValidationError
from ecl_persistence.orm.payload_codec import StoredPayload
from ecl_persistence.orm.types import Undecodable

__all__ = [
    "build",
    "id_value",
    "json_value",
    "optional_json_value",
    "same_json",
    "state_value",
    "step_execution_from_values",
    "stored_value",
    "workflow_from_values",
]

T = TypeVar("T")
E = TypeVar("E", bound=enum.Enum)

_INT64_MAX = 2**63 - 1
# A domain object's fields are its table's columns, in the same order.
WORKFLOW_FIELDS = tuple(field.name for field in attrs.fields(Workflow))
STEP_FIELDS = tuple(field.name for field in attrs.fields(StepExecution))


def json_value(value: object, *, table: str, column: str, id: object) -> JsonValue:
    """Check a decoded NOT NULL JSON column (see :class:`~ecl_persistence.orm.JsonPayload`)."""
    if value is MISSING:
        raise StoredValueError(f"{table}.{column} of {id} is NULL but must hold JSON")
    if type(value) is Undecodable:
        raise value.error(table, column, id)
    return value  # type: ignore[return-value]  # JsonPayload decoded and checked it


def optional_json_value(
    value: object, *, table: str, column: str, id: object
) -> JsonValue | Missing:
    """Check a decoded nullable JSON column: SQL NULL is MISSING, JSON ``null`` is ``None``."""
    if type(value) is Undecodable:
        raise value.error(table, column, id)
    return value  # type: ignore[return-value]


def stored_value(value: object, *, table: str, column: str, id: object) -> JsonValue:
    """The value of a payload column read back (a ``PayloadRef``): its payload's value."""
    if type(value) is Undecodable:
        raise value.error(table, column, id)
    if not isinstance(value, StoredPayload):
        raise StoredValueError(f"{table}.{column} of {id} does not hold a payload reference")
    return value.value


def id_value(value: object, *, table: str, column: str = "id") -> uuid.UUID:
    """Check an id column read as a plain value (see :class:`~ecl_persistence.orm.Uuid`)."""
    if type(value) is Undecodable:
        raise value.error(table, column, value)
    return value  # type: ignore[return-value]  # the column type decoded it


@functools.cache
def _members(enum_type: type[E]) -> dict[object, E]:
    return {member.value: member for member in enum_type}


def state_value(enum_type: type[E], value: object, *, table: str, id: object) -> E:
    """Parse a state column, refusing a value that is not one of the enum's."""
    member: E | None = _members(enum_type).get(value)
    if member is None:
        raise StoredValueError(f"{table}.state of {id} holds an unknown state")
    return member


def build(
    factory: Callable[[], T],
    *,
    table: str,
    id: object,
    row: Sequence[object] = (),
    columns: Sequence[str] = (),
) -> T:
    """Construct a domain object from a row, turning a refusal into StoredValueError.

    ``row`` and its ``columns`` (names, in the same order) let the error name
    the column of a value its column type could not decode (an
    :class:`Undecodable`), which the domain object would only call "not valid".
    """
    try:
        return factory()
    except (ValidationError, SerializationError) as error:
        for column, value in zip(columns, row, strict=False):
            if type(value) is Undecodable:
                raise value.error(table, column, id) from None
        where = f"a {table} row" if type(id) is Undecodable else f"{table} row {id}"
        raise StoredValueError(f"{where} holds a value that is not valid: {error}") from None


def same_json(left: object, right: object) -> bool:
    """Whether two decoded JSON values are the same document.

    Unlike ``==``, this tells ``1``, ``1.0`` and ``True`` apart, as a JSON
    reader in another language would. Key order does not matter.
    """
    if type(left) is not type(right):
        return False
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same_json(v, right[k]) for k, v in left.items())
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same_json, left, right))
    return left == right


# --- the cheap checks of values read back ---------------------------------------------
# Each says True only when the domain's validator would surely accept the value;
# anything else (including what the validator would accept after all, such as
# non-ASCII text) goes to the validating constructor.


def _text(value: object, max_length: int) -> bool:
    # ASCII cannot hold a lone surrogate; other text is checked in full.
    return (
        type(value) is str
        and 0 < len(value) <= max_length
        and "\x00" not in value
        and value.isascii()
    )


def _error(value: object) -> bool:
    return value is None or (
        type(value) is str
        and len(value) <= MAX_ERROR_LENGTH
        and "\x00" not in value
        and value.isascii()
    )


def _utc(value: object) -> bool:
    return type(value) is datetime and value.tzinfo is UTC


def _int(value: object, minimum: int, maximum: int = _INT64_MAX) -> bool:
    return type(value) is int and minimum <= value <= maximum


def _optional_count(value: object) -> bool:
    return value is None or _int(value, 0)


def workflow_from_values(values: tuple[Any, ...], *, table: str, id: object) -> Workflow:
    """Build a :class:`Workflow` from a row whose state and JSON columns are decoded."""
    (id_, definition_id, state, _input, _output, error, created_at, updated_at, completed_at,
     metadata, version, idempotency_key, lease_owner, lease_expires_at,
     claim_count, run_after, priority, cancel_requested_at, forked_from,
     concurrency_key) = values  # fmt: skip
    if (
        isinstance(id_, uuid.UUID)
        and _text(definition_id, MAX_ID_LENGTH)
        and _error(error)
        and _utc(created_at)
        and _utc(updated_at)
        and (completed_at is None or _utc(completed_at))
        and type(metadata) is dict
        and _int(version, 1)
        and (idempotency_key is None or _text(idempotency_key, MAX_ID_LENGTH))
        and (
            (lease_owner is None and lease_expires_at is None)
            or (
                _text(lease_owner, MAX_ID_LENGTH)
                and _utc(lease_expires_at)
                and state is WorkflowState.RUNNING
            )
        )
        and _int(claim_count, 0)
        and (run_after is None or _utc(run_after))
        and _int(priority, MIN_PRIORITY, MAX_PRIORITY)
        and (cancel_requested_at is None or _utc(cancel_requested_at))
        and (forked_from is None or isinstance(forked_from, uuid.UUID))
        and (concurrency_key is None or _text(concurrency_key, MAX_ID_LENGTH))
    ):
        return Workflow._from_row(*values)
    return build(lambda: Workflow(*values), table=table, id=id, row=values, columns=WORKFLOW_FIELDS)


def step_execution_from_values(values: tuple[Any, ...], *, table: str, id: object) -> StepExecution:
    """Build a :class:`StepExecution` from a row whose state and JSON columns are decoded."""
    (id_, workflow_id, step_id, attempt, _state, _input, _output, error, started_at, completed_at,
     duration_ms, tokens_used, metadata, copied_from, _usage, model, cost) = values  # fmt: skip
    if (
        isinstance(id_, uuid.UUID)
        and isinstance(workflow_id, uuid.UUID)
        and _text(step_id, MAX_ID_LENGTH)
        and _int(attempt, 1, MAX_ATTEMPT)
        and _error(error)
        and _utc(started_at)
        and (completed_at is None or _utc(completed_at))
        and _optional_count(duration_ms)
        and _optional_count(tokens_used)
        and type(metadata) is dict
        and (copied_from is None or isinstance(copied_from, uuid.UUID))
        and (model is None or _text(model, MAX_ID_LENGTH))
        and (cost is None or type(cost) is Decimal)
    ):
        return StepExecution._from_row(*values)
    return build(
        lambda: StepExecution(*values), table=table, id=id, row=values, columns=STEP_FIELDS
    )
