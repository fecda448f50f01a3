"""Portable column types: each asks the dialect's strategy how it is stored.

Each works both ways: what an entity or a row holds after a read is the
decoded value (an aware UTC ``datetime``, a JSON value, a UUID), whoever ran
the query, through the repositories or through ``uow.session``, or an
:class:`Undecodable` marker where the stored value cannot be read back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ColumnElement, DateTime, Dialect, Numeric, String
from sqlalchemy import Uuid as SqlUuid
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from ecl_persistence.dialects import strategy_for
from ecl_persistence.domain import MISSING, JsonValue, Missing, encode_json, load_json
from ecl_persistence.errors import SerializationError, StoredValueError
from ecl_persistence.orm.payload_codec import HASH_LENGTH, StoredPayload, decode_stored

__all__ = [
    "JsonPayload",
    "JsonText",
    "Money",
    "MoneySum",
    "PayloadLookup",
    "PayloadRef",
    "UTCDateTime",
    "Undecodable",
    "Uuid",
]


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC timestamp: ``timestamptz`` on PostgreSQL, sortable text on SQLite.

    Naive datetimes are refused when bound; values are read back as aware
    UTC datetimes. Text in a SQLite column that is not a timestamp (SQLite
    keeps whatever a hand-made ``UPDATE`` wrote) comes back as it is, and the
    repositories refuse it with an error naming the table, column and row.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        """Bind in one step per value, as the dialect stores timestamps."""
        bind, _result = strategy_for(dialect).datetime_processors()
        return bind

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        """Read timestamps back as aware UTC datetimes, in one step per value."""
        _bind, result = strategy_for(dialect).datetime_processors()
        return result


class Money(TypeDecorator[Decimal]):
    """An exact amount with six decimal places: ``numeric(20, 6)`` on PostgreSQL.

    On SQLite, whose NUMERIC keeps floats (and sums them as floats), a 64-bit
    count of millionths; either way a ``Decimal`` is bound and read back,
    and ``SUM`` over the column is exact.
    """

    impl = Numeric(20, 6, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Use the dialect's exact storage (see the class)."""
        return strategy_for(dialect).money_type(dialect)

    def bind_processor(self, dialect: Dialect) -> Any:
        """Bind as the dialect stores amounts."""
        bind, _result = strategy_for(dialect).money_processors()
        return bind

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        """Read a stored amount (or a sum of them) back as a ``Decimal``."""
        _bind, result = strategy_for(dialect).money_processors()
        return result


class MoneySum(FunctionElement[Decimal]):
    """The exact ``SUM`` of a :class:`Money` column (see ``DialectStrategy.money_sum``).

    NULL when every value summed is NULL (or there is none), as ``SUM``.
    """

    name = "money_sum"
    inherit_cache = True

    def __init__(self, column: ColumnElement[Any]) -> None:
        super().__init__(column)
        self.type = Money()


@compiles(MoneySum)
def _money_sum(element: MoneySum, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = element.clauses
    return strategy_for(compiler.dialect).money_sum(compiler.process(column, **kw))


class PayloadRef(TypeDecorator[Any]):
    """The hash of a payload stored in the ``payloads`` table, read back as the payload.

    Bound as the hash (or NULL: the value is inline). Selected, the column
    reads its payload in the same statement (a lookup by primary key), so a
    row arrives with its value: a :class:`~.payload_codec.StoredPayload`, or
    an :class:`Undecodable` naming the payload (by hash) when it is missing
    or damaged; never a part of its content.
    """

    impl = String(HASH_LENGTH)
    cache_ok = True

    def column_expression(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """Select the payload itself, by its hash, with the row."""
        return PayloadLookup(column, type_=self)

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        """Decode ``hash:codec:hex`` (a missing payload reads as its hash alone)."""
        return _decode_payload


class PayloadLookup(FunctionElement[Any]):
    """A payload reference read as ``hash:codec:hex`` (see ``DialectStrategy.payload_lookup``)."""

    name = "payload_lookup"
    inherit_cache = True

    def __init__(self, column: ColumnElement[Any], type_: PayloadRef) -> None:
        super().__init__(column)
        self.type = type_


@compiles(PayloadLookup)
def _payload_lookup(element: PayloadLookup, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = element.clauses
    return strategy_for(compiler.dialect).payload_lookup(compiler.process(column, **kw))


def _decode_payload(value: str | None) -> StoredPayload | Undecodable | None:
    if value is None:
        return None
    hash, _, rest = value.partition(":")
    if not rest:
        return Undecodable(f"payload {hash} is missing", "a payload")
    codec, _, hex_data = rest.partition(":")
    try:
        return StoredPayload(hash, decode_stored(hash, codec, bytes.fromhex(hex_data)))
    except (SerializationError, ValueError) as error:
        reason = (
            str(error) if isinstance(error, SerializationError) else f"payload {hash} is corrupt"
        )
        return Undecodable(reason, "a payload")


class Undecodable:
    """What a column holds, once read, when its stored value cannot be read back.

    A JSON document that breaks the payload rules, or an id that is not a
    UUID (SQLite keeps whatever a hand-made ``UPDATE`` wrote). It keeps why,
    never the value: the mappers (and the entities' load hook) raise
    :class:`~ecl_persistence.StoredValueError` naming the table, column and
    row when they meet one.
    """

    __slots__ = ("reason", "what")

    def __init__(self, reason: str, what: str = "JSON") -> None:
        self.reason = reason
        """Why the value cannot be read back (no part of it)."""
        self.what = what
        """What the column should hold: ``"JSON"`` or ``"an id"``."""

    def __repr__(self) -> str:
        return f"<undecodable {self.what}>"

    def error(self, table: str, column: str, id: object) -> StoredValueError:
        """The error naming where the undecodable value is stored.

        ``id`` is the row's id; when that is an :class:`Undecodable` too (the
        id column itself is damaged), the row goes unnamed.

        """
        row = "a row" if type(id) is Undecodable else id
        return StoredValueError(
            f"{table}.{column} of {row} holds {self.what} that cannot be read back: {self.reason}"
        )


_NOT_A_UUID = "it is not a UUID"


def _uuid_or_undecodable(
    parse: Callable[[Any], Any],
) -> Callable[[Any], uuid.UUID | Undecodable | None]:
    def process(value: Any) -> uuid.UUID | Undecodable | None:
        try:
            return parse(value)  # type: ignore[no-any-return]
        except (ValueError, TypeError, AttributeError):
            return Undecodable(_NOT_A_UUID, "an id")

    return process


class Uuid(TypeDecorator[uuid.UUID]):
    """A UUID: native ``uuid`` on PostgreSQL, 32 hex digits in a CHAR(32) on SQLite.

    SQLAlchemy's ``Uuid``, except that a SQLite value that is not a UUID
    (SQLite keeps whatever a hand-made ``UPDATE`` wrote) reads back as an
    :class:`Undecodable` instead of raising ``ValueError`` in the middle of
    a result, so the repositories can name the table, column and row.
    PostgreSQL's native column cannot hold such a value and is read as is.
    """

    impl = SqlUuid()
    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        """The driver's value as a UUID (PostgreSQL: as is), or an :class:`Undecodable`."""
        parse = self.impl_instance.result_processor(dialect, coltype)
        return None if parse is None else _uuid_or_undecodable(parse)


def _decode_text(text: str | None) -> JsonValue | Missing | Undecodable:
    if text is None:
        return MISSING
    try:
        return load_json(text)
    except SerializationError as error:
        return Undecodable(str(error))


class JsonPayload(TypeDecorator[Any]):
    """A JSON document: ``jsonb`` on PostgreSQL, JSON text in a TEXT column on SQLite.

    Binding takes a JSON value, or :data:`~ecl_persistence.domain.MISSING` for
    "no value", which is stored as SQL NULL so that a JSON ``null`` (``None``)
    stays distinct from it. Reading gives the decoded value back, ``MISSING``
    for SQL NULL, or an :class:`Undecodable` for a stored document that breaks
    the rules payloads are written under (a NaN, a 65-bit integer, text that
    is not JSON): reading a row never raises here, the mapping of the row does.
    """

    impl = JSON(none_as_null=True)
    cache_ok = True
    # ``None`` is a document (JSON null), bound like any other: the ORM must
    # not leave it out of an INSERT as it does for plain NULLs.
    should_evaluate_none = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Use the dialect's JSON storage: JSONB on PostgreSQL, TEXT on SQLite."""
        return strategy_for(dialect).json_type(dialect)

    def bind_processor(self, dialect: Dialect) -> Any:
        """Encode in one step per value: JSON text for both backends, NULL for MISSING.

        PostgreSQL receives the text for its ``jsonb`` parameter as it would
        from the JSONB type's own processor, which calls the same encoder.
        """
        return _json_text

    def column_expression(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """Select the document as text, whatever the engine's JSON deserializer.

        The decoding then happens in :meth:`result_processor`, once, with
        the checks stored payloads must pass, also on an engine the
        application built with a deserializer of its own.
        """
        return JsonText(column, type_=self)

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        """Decode the text in one step per value (see :class:`Undecodable`)."""
        return _decode_text


class JsonText(FunctionElement[Any]):
    """A JSON column read as its text (see ``DialectStrategy.json_as_text``)."""

    name = "json_text"
    inherit_cache = True

    def __init__(self, column: ColumnElement[Any], type_: JsonPayload) -> None:
        super().__init__(column)
        self.type = type_


@compiles(JsonText)
def _json_as_text(element: JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = element.clauses
    return strategy_for(compiler.dialect).json_as_text(compiler.process(column, **kw))


def _json_text(value: JsonValue | Missing) -> str | None:
    return None if value is MISSING else encode_json(value)
