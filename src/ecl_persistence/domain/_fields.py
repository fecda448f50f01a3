"""Converters and validators shared by the domain models.

Each raises :class:`~ecl_persistence.errors.ValidationError` (or
:class:`~ecl_persistence.errors.SerializationError` for payloads) itself, so a
caller never sees the ``TypeError`` or ``ValueError`` of attrs. Converters
handed to ``attrs.field`` are plain named functions with precise parameter
types, because that is what mypy's attrs plugin reads the ``__init__``
signature from.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast

from ecl_persistence.domain.ids import not_a_uuid, parse_uuid
from ecl_persistence.domain.payload import MISSING, JsonValue, check_json
from ecl_persistence.errors import ValidationError

if TYPE_CHECKING:
    import attrs

Validator: TypeAlias = Callable[[Any, "attrs.Attribute[Any]", Any], None]

_E = TypeVar("_E", bound=enum.Enum)
_T = TypeVar("_T")

#: The largest value of a signed 64-bit column.
INT64_MAX = 2**63 - 1


def _normalise_datetime(value: object) -> object:
    """Return an aware datetime converted to UTC; leave anything else to the validator."""
    if not isinstance(value, datetime):
        return value
    try:
        if value.utcoffset() is None:
            return value
        return value.astimezone(UTC)
    except Exception:
        # A tzinfo is caller code and may raise anything, and the instant may
        # fall outside the datetime range once in UTC: the validator reports
        # either with the field name.
        return value


def utc_datetime(value: datetime) -> datetime:
    """Convert an aware datetime to UTC (converter)."""
    return cast("datetime", _normalise_datetime(value))


def optional_utc_datetime(value: datetime | None) -> datetime | None:
    """Convert an aware datetime to UTC and keep None (converter)."""
    return cast("datetime | None", _normalise_datetime(value))


def aware_utc(*, optional: bool = False) -> Validator:
    """Require an aware datetime, already converted to UTC by the converter."""

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        name = attribute.name
        if value is None and optional:
            return
        if not isinstance(value, datetime):
            raise ValidationError(f"{name} must be a datetime, not {type(value).__name__}")
        if value.tzinfo is not UTC:
            try:
                naive = value.utcoffset() is None
            except Exception:
                naive = False
            if naive:
                raise ValidationError(f"{name} must be timezone-aware, not naive")
            raise ValidationError(f"{name} cannot be represented in UTC")

    return validate


def integer(*, minimum: int, maximum: int = INT64_MAX, optional: bool = False) -> Validator:
    """Require an ``int`` (not ``bool``) from ``minimum`` to ``maximum``."""

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        name = attribute.name
        if value is None and optional:
            return
        if type(value) is not int:
            raise ValidationError(f"{name} must be an integer, not {type(value).__name__}")
        if not minimum <= value <= maximum:
            raise ValidationError(f"{name} must be from {minimum} to {maximum}")

    return validate


def uuid_from_text(value: uuid.UUID | str) -> uuid.UUID:
    """Parse the text of a UUID; leave anything else to the validator (converter)."""
    parsed = parse_uuid(value)
    return value if parsed is None else parsed  # type: ignore[return-value]


def uuid_value(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Require a :class:`uuid.UUID` (validator)."""
    if not isinstance(value, uuid.UUID):
        raise ValidationError(not_a_uuid(value, attribute.name))


def optional_uuid_from_text(value: uuid.UUID | str | None) -> uuid.UUID | None:
    """Like :func:`uuid_from_text`, keeping None (converter)."""
    return None if value is None else uuid_from_text(value)


def optional_uuid(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Require a :class:`uuid.UUID` or None (validator)."""
    if value is not None:
        uuid_value(instance, attribute, value)


def json_payload(*, allow_missing: bool = False) -> Validator:
    """Require a value that :func:`check_json` accepts, or ``MISSING`` when allowed."""

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if allow_missing and value is MISSING:
            return
        check_json(value, field=attribute.name)

    return validate


def json_object(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Require a ``dict`` that :func:`check_json` accepts (validator)."""
    if type(value) is not dict:
        raise ValidationError(f"{attribute.name} must be a dict, not {type(value).__name__}")
    check_json(value, field=attribute.name)


def optional_str(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Require a ``str`` or None (validator)."""
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"{attribute.name} must be a string or None")


def coerce_enum(enum_type: type[_E], value: object, field: str) -> _E:
    """Return ``value`` as a member of ``enum_type``, accepting a plain ``str`` value."""
    if isinstance(value, enum_type):
        return value
    # Only an exact str is looked up, so a member of another StrEnum with the
    # same value ("failed") is refused instead of silently changing meaning.
    if type(value) is str:
        try:
            return enum_type(value)
        except ValueError:
            pass
    allowed = ", ".join(str(member.value) for member in enum_type)
    raise ValidationError(f"{field} must be one of: {allowed}")


def copy_metadata(metadata: object) -> dict[str, JsonValue]:
    """Return a new dict with the items of ``metadata``, or an empty dict for None."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValidationError(f"metadata must be a mapping, not {type(metadata).__name__}")
    return dict(metadata)


def to_tuple(items: Iterable[_T]) -> tuple[_T, ...]:
    """Return ``items`` as a tuple (converter)."""
    try:
        return tuple(items)
    except TypeError:
        raise ValidationError(f"items must be iterable, not {type(items).__name__}") from None


def redacted(value: object) -> str:
    """Stand-in for a payload in a ``repr``: payloads may hold secrets and reprs reach logs."""
    if value is MISSING:
        return "MISSING"
    return f"<{type(value).__name__}>"
