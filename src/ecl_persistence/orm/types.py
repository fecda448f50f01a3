"""Portable column types: the one place where SQLite and PostgreSQL differ in storage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Text
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator, TypeEngine

from ecl_persistence.domain import MISSING, JsonValue, Missing, encode_json

__all__ = ["JsonPayload", "UTCDateTime"]


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC timestamp: ``timestamptz`` on PostgreSQL, sortable text on SQLite.

    Naive datetimes are refused when bound. SQLite keeps no offset, so values
    are stored in UTC and UTC is attached again when they are read back.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        """Bind in one step per value: UTC for PostgreSQL, SQLAlchemy's text format for SQLite."""
        if dialect.name == "sqlite":
            return _sqlite_text
        return _aware_utc

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        """Read timestamps back as aware UTC datetimes, in one step per value.

        SQLite keeps the text SQLAlchemy wrote (``2025-01-01 12:00:00.000000``),
        parsed here by ``datetime.fromisoformat``. Text that is not a timestamp
        (SQLite stores whatever a hand-made ``UPDATE`` wrote) comes back as it
        is: the repositories then refuse it with an error naming the table,
        column and row, instead of a bare ``ValueError`` from parsing.
        PostgreSQL's driver hands back aware datetimes already.
        """
        if dialect.name != "sqlite":
            return _as_utc
        return _parse_sqlite


def _aware_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: ecl-persistence stores aware UTC timestamps only")
    return value.astimezone(UTC)


def _sqlite_text(value: datetime | None) -> str | None:
    # What SQLAlchemy's SQLite DateTime writes: naive UTC, always with microseconds,
    # so that text order is time order.
    value = _aware_utc(value)
    return None if value is None else value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC:
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _parse_sqlite(value: Any) -> Any:
    if value is None:
        return None
    try:
        return _as_utc(datetime.fromisoformat(value))
    except (ValueError, TypeError):
        return value


class JsonPayload(TypeDecorator[Any]):
    """A JSON document: ``jsonb`` on PostgreSQL, JSON text in a TEXT column on SQLite.

    SQLite gets TEXT, not its JSON type name, because a column named JSON has
    numeric affinity there: the document ``5`` would be stored as the number 5.

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
        """Use JSONB on PostgreSQL, TEXT on SQLite."""
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB(none_as_null=True))
        return dialect.type_descriptor(Text())

    def bind_processor(self, dialect: Dialect) -> Any:
        """Encode in one step per value: JSON text for both backends, NULL for MISSING.

        PostgreSQL receives the text for its ``jsonb`` parameter as it would
        from the JSONB type's own processor, which calls the same encoder.
        """
        return _json_text


def _json_text(value: JsonValue | Missing) -> str | None:
    return None if value is MISSING else encode_json(value)
