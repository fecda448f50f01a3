"""Reading rows back: decode, check, and blame the right table, column and id."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TypeVar

from ecl_persistence.domain import MISSING, JsonValue, Missing, decode_json
from ecl_persistence.errors import QueryFailedError, SerializationError, ValidationError

__all__ = ["build", "json_column", "optional_json_column", "same_json", "state_column"]

T = TypeVar("T")
E = TypeVar("E", bound=enum.Enum)


def json_column(text: str | None, *, table: str, column: str, id: object) -> JsonValue:
    """Decode a NOT NULL JSON column."""
    if text is None:
        raise QueryFailedError(f"{table}.{column} of {id} is NULL but must hold JSON")
    return _decode(text, table=table, column=column, id=id)


def optional_json_column(
    text: str | None, *, table: str, column: str, id: object
) -> JsonValue | Missing:
    """Decode a nullable JSON column: SQL NULL is MISSING, JSON ``null`` is ``None``."""
    if text is None:
        return MISSING
    return _decode(text, table=table, column=column, id=id)


def _decode(text: str, *, table: str, column: str, id: object) -> JsonValue:
    try:
        return decode_json(text)
    except SerializationError:
        raise QueryFailedError(f"{table}.{column} of {id} holds malformed JSON") from None


def state_column(enum_type: type[E], value: object, *, table: str, id: object) -> E:
    """Parse a state column, refusing a value that is not one of the enum's."""
    try:
        return enum_type(value)
    except ValueError:
        raise QueryFailedError(f"{table}.state of {id} holds an unknown state") from None


def build(factory: Callable[[], T], *, table: str, id: object) -> T:
    """Construct a domain object from a row, turning a refusal into QueryFailedError."""
    try:
        return factory()
    except (ValidationError, SerializationError) as error:
        raise QueryFailedError(
            f"{table} row {id} holds a value that is not valid: {error}"
        ) from None


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
