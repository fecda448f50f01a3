"""Argument checks shared by the repositories: bad input never reaches SQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar, cast

from ecl_persistence.domain import (
    MISSING,
    JsonValue,
    Missing,
    check_json,
    parse_uuid,
)
from ecl_persistence.domain.ids import not_a_uuid
from ecl_persistence.errors import ValidationError

if TYPE_CHECKING:
    from ecl_persistence.repositories._context import UnitContext

__all__ = ["check_aware", "check_count", "check_id", "check_limit", "check_payloads"]

_Id = TypeVar("_Id", bound=uuid.UUID)


def check_id(value: _Id | str, name: str) -> _Id:
    """The id ``value`` as a UUID: a :class:`uuid.UUID`, or its text, parsed here once.

    Refuses anything else with ValidationError; the message never quotes the value.
    """
    parsed = parse_uuid(value)
    if parsed is None:
        raise ValidationError(not_a_uuid(value, name))
    return cast("_Id", parsed)


def check_limit(value: object, maximum: int) -> int:
    """Refuse a page size that is not an integer in ``1..maximum``."""
    if type(value) is not int or not 1 <= value <= maximum:
        raise ValidationError(f"limit must be an integer from 1 to {maximum}")
    return value


def check_count(value: object, name: str) -> int | None:
    """Refuse a count or duration that is not ``None`` or a non-negative 64-bit integer."""
    if value is None:
        return None
    if type(value) is not int or not 0 <= value < 2**63:
        raise ValidationError(f"{name} must be a non-negative integer")
    return value


def check_aware(value: object, name: str) -> datetime:
    """``value``, an aware datetime, as a plain ``datetime`` in UTC; ValidationError otherwise.

    The check every datetime a caller hands in goes through, as the domain
    objects check theirs (``Workflow.new(now=...)``): a naive datetime, a
    ``tzinfo`` whose ``utcoffset()`` raises, returns something that is not a
    ``timedelta`` or an offset of a day or more, and an instant that falls
    outside the range of ``datetime`` once in UTC are all refused here,
    never as the ``TypeError``, ``ValueError`` or own exception of the tzinfo.
    """
    if not isinstance(value, datetime):
        raise ValidationError(
            f"{name} must be a timezone-aware datetime, not {type(value).__name__}"
        )
    try:
        naive = value.utcoffset() is None
    except Exception:
        # The tzinfo is caller code: its own exception (or the TypeError and
        # ValueError of datetime for an offset it may not return) says nothing
        # to the caller of this package and may quote a value.
        raise ValidationError(f"{name} has a tzinfo whose UTC offset is not valid") from None
    if naive:
        raise ValidationError(f"{name} must be a timezone-aware datetime, not a naive one")
    try:
        utc = value.astimezone(UTC)
    except Exception:
        raise ValidationError(f"{name} cannot be represented in UTC") from None
    if type(utc) is not datetime:
        # A subclass may override what the bind processors call later.
        utc = datetime(*utc.timetuple()[:6], utc.microsecond, tzinfo=UTC)
    return utc


def check_payloads(uow: UnitContext, *payloads: JsonValue | Missing) -> None:
    """Check payloads again, against the database's ``max_payload_bytes``, before any SQL.

    Domain objects checked their payloads when they were built, but a payload
    is a plain ``dict`` or ``list`` that the caller can still change in place
    (``workflow.input["x"] = float("nan")``); without this walk such a value
    would reach the driver: NaN and oversized documents fail mid-transaction,
    a NUL or a 65-bit integer is stored and the row can no longer be read, and
    the driver's error message quotes the value.
    """
    limit = uow.max_payload_bytes
    for payload in payloads:
        if payload is not MISSING:
            check_json(payload, field="payload", max_bytes=limit)
