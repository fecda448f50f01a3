"""Portable column types: the one place where SQLite and PostgreSQL differ in storage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator, TypeEngine

from ecl_persistence.domain import MISSING, JsonValue, Missing

__all__ = ["JsonPayload", "UTCDateTime"]


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC timestamp: ``timestamptz`` on PostgreSQL, sortable text on SQLite.

    Naive datetimes are refused when bound. SQLite keeps no offset, so values
    are stored in UTC and UTC is attached again when they are read back.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to UTC; refuse a naive one."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: ecl-persistence stores aware UTC timestamps only")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime whatever the backend gave back."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JsonPayload(TypeDecorator[Any]):
    """A JSON document: ``jsonb`` on PostgreSQL, JSON text on SQLite.

    Binding takes a JSON value, or :data:`~ecl_persistence.domain.MISSING` for
    "no value", which is stored as SQL NULL so that a JSON ``null`` stays
    distinct from it. Reading returns the raw JSON text (or ``None`` for SQL
    NULL): the engine built by :class:`~ecl_persistence.Database` installs a
    pass-through JSON deserializer, and the repositories decode the text where
    they know the table, column and row it came from.
    """

    impl = JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Use JSONB on PostgreSQL so the documents can be indexed and compared."""
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))

    def process_bind_param(self, value: JsonValue | Missing, dialect: Dialect) -> Any:
        """Map MISSING to SQL NULL and ``None`` to JSON ``null``."""
        if value is MISSING:
            return None
        if value is None:
            return JSON.NULL
        return value
