"""Argument checks shared by the repositories: bad input never reaches SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from ecl_persistence.domain import (
    MISSING,
    JsonValue,
    Missing,
    check_json,
)
from ecl_persistence.errors import ValidationError

if TYPE_CHECKING:
    from ecl_persistence.repositories._context import UnitContext

__all__ = ["check_aware", "check_count", "check_id", "check_limit", "check_payloads"]


def check_id(value: object, name: str) -> uuid.UUID:
    """Refuse an id that is not a UUID."""
    if not isinstance(value, uuid.UUID):
        raise ValidationError(f"{name} must be a UUID")
    return value


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
    """Refuse a datetime without a timezone."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValidationError(f"{name} must be a timezone-aware datetime")
    return value


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
