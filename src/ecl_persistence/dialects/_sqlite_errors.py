"""SQLite's errors, read: by sqlite3's error code where it gives one, else by its message.

The messages are parsed, never shown: the one for text that is not UTF-8
quotes the stored text. What an error names is a column or a table of the
schema, never a value.
"""

from __future__ import annotations

import re
import sqlite3

from ecl_persistence.errors import (
    ConnectionFailedError,
    DbError,
    SchemaNotReadyError,
    StoredValueError,
    TransactionFailedError,
)

__all__ = ["classify", "constraint_name"]

_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<columns>.+)$")
_CHECK = re.compile(r"CHECK constraint failed: (?P<name>\S+)")
_NOT_UTF8 = re.compile(r"^Could not decode to UTF-8 column '(?P<column>[^']{0,100})' with text")
_NO_TABLE = re.compile(r"^no such table: (?:main\.)?(?P<name>[\w.]{1,200})")
_NO_COLUMN = re.compile(
    r"^(?:no such column: (?P<name>[\w.]{1,200})"
    r"|table (?P<table>\w{1,100}) has no column named (?P<column>\w{1,100}))"
)


def _first_line(driver_error: BaseException) -> str:
    return str(driver_error).strip().split("\n", 1)[0]


def classify(driver_error: BaseException, action: str) -> DbError | None:
    """The ecl-persistence error for a sqlite3 error, or None if it is not one of these."""
    code = getattr(driver_error, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_NOTADB:
        return ConnectionFailedError(
            f"{action}: the file is not a SQLite database (or it is encrypted or damaged)",
            retryable=False,
        )
    if code == sqlite3.SQLITE_CANTOPEN:
        return ConnectionFailedError(
            f"{action}: cannot open the SQLite database file (does its directory exist "
            "and is it writable?)",
            retryable=False,
        )
    message = _first_line(driver_error)
    if code in _BUSY_CODES or "database is locked" in message:
        return TransactionFailedError(
            f"{action}: the SQLite database stayed locked by another writer beyond the timeout",
            retryable=True,
        )
    not_utf8 = _NOT_UTF8.match(message)
    if not_utf8 is not None:
        # SQLite names the column of the result, not its table or row.
        return StoredValueError(
            f"{action}: a stored value cannot be read back: column "
            f"{not_utf8.group('column')} of a row holds text that is not valid UTF-8"
        )
    return _missing(action, message)


def _missing(action: str, message: str) -> SchemaNotReadyError | None:
    """A table or column the schema lacks; the unit of work then reads the revision."""
    table = _NO_TABLE.match(message)
    if table is not None:
        name = table.group("name")
        return SchemaNotReadyError(f"{action}: the database has no table {name}", missing=name)
    column = _NO_COLUMN.match(message)
    if column is not None:
        name = column.group("name") or f"{column.group('table')}.{column.group('column')}"
        return SchemaNotReadyError(f"{action}: the database has no column {name}", missing=name)
    return None


def constraint_name(driver_error: BaseException) -> str | None:
    """SQLite names a CHECK constraint, and only the columns of a UNIQUE one."""
    message = _first_line(driver_error)
    check = _CHECK.search(message)
    if check is not None:
        return check.group("name")
    unique = _UNIQUE.search(message)
    if unique is not None:
        return _unique_constraint_for(unique.group("columns"))
    return None


def _unique_constraint_for(columns: str) -> str | None:
    """Name the unique constraint SQLite reported only by its ``table.column`` list."""
    from ecl_persistence.orm import Base

    qualified = [part.strip() for part in columns.split(",")]
    table_name = qualified[0].split(".")[0]
    names = {part.split(".", 1)[-1] for part in qualified}
    table = Base.metadata.tables.get(table_name)
    if table is None:
        return None
    for constraint in table.constraints:
        cols = getattr(constraint, "columns", None)
        if cols is not None and {c.name for c in cols} == names and constraint.name:
            return str(constraint.name)
    return None
