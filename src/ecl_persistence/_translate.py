"""The one place where SQLAlchemy and driver exceptions become ecl-persistence errors.

Messages are built from the driver's first line and the constraint name only:
SQLAlchemy's own text is never used, because it can carry bound parameters
(payloads), and URLs never appear, because they can carry a password. Values
that a driver quotes in its first line are cut out too.

A translated error is chained to a :class:`DriverError` that names the
driver's exception, its SQLSTATE, its first line and the SQL statement, and
not to the driver's exception itself: that one can hold row values
(PostgreSQL's ``DETAIL: Failing row contains ...``), and tracebacks, loggers
and error trackers print the whole chain of an exception.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

from ecl_persistence.errors import (
    ConflictError,
    ConnectionFailedError,
    ConstraintViolationError,
    DbError,
    QueryFailedError,
    TransactionFailedError,
    ValidationError,
)
from ecl_persistence.orm import Base

__all__ = ["DriverError", "translate", "translating"]

# SQLSTATE classes and codes of PostgreSQL that decide the translation.
_PG_CONNECTION_CLASSES = ("08", "57")
_PG_NOT_RETRYABLE = {
    "28P01": "wrong password",
    "28000": "authorization refused",
    "3D000": "database does not exist",
}
_PG_CONFLICT = {"40001", "40P01"}  # serialization failure, deadlock
_SQLITE_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_SQLITE_CANTOPEN = sqlite3.SQLITE_CANTOPEN
_SQLITE_NOT_A_DATABASE = sqlite3.SQLITE_NOTADB

# Driver messages that quote a value: asyncpg's "invalid input for query
# argument $4: <repr of the value> (<why>)", PostgreSQL's "invalid input
# syntax for type uuid: "<value>"" and "value "<value>" is out of range".
_ARGUMENT_ECHO = re.compile(r"(invalid input for query argument \$\d+)\b.*")
_QUOTED_AFTER_COLON = re.compile(r"""(:\s*)["'].*""")
_QUOTED_VALUE = re.compile(r"""\bvalue\s+(?:"[^"]*"|'[^']*')""")
_MAX_STATEMENT_CHARS = 2000

_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<columns>.+)$")
_SQLITE_CHECK = re.compile(r"CHECK constraint failed: (?P<name>\S+)")
# The trigger that keeps a table append-only raises "<table> is append-only"
# on both backends; it is named "<table>_append_only" (PostgreSQL reports the
# name itself, SQLite only the message).
_APPEND_ONLY = re.compile(r"^(?P<table>\w+) is append-only")


class DriverError(Exception):
    """The printed cause of a translated error: the driver's exception and statement, no values."""


def _raw_first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _first_line(error: BaseException) -> str:
    """The first line of the error's message, with any value it quotes cut out."""
    line = _ARGUMENT_ECHO.sub(r"\1", _raw_first_line(error))
    line = _QUOTED_AFTER_COLON.sub(r"\1(value hidden)", line)
    return _QUOTED_VALUE.sub("value (hidden)", line)[:300]


def _printable_cause(error: BaseException) -> BaseException:
    """What a translated error is chained to: ``error`` itself unless it may hold values."""
    if not isinstance(error, sa_exc.SQLAlchemyError):
        return error
    if isinstance(error, sa_exc.DBAPIError):
        driver = _driver_error(error)
    elif isinstance(error, sa_exc.StatementError) and error.orig is not None:
        driver = error.orig
    else:
        driver = error
    kind = type(driver)
    state = _sqlstate(driver)
    text = f"{kind.__module__}.{kind.__qualname__}{f' [SQLSTATE {state}]' if state else ''}"
    text += f": {_first_line(driver)}"
    statement = getattr(error, "statement", None)
    if statement:
        text += f"\n[SQL: {str(statement)[:_MAX_STATEMENT_CHARS]}]"
    return DriverError(text)


def _driver_error(error: sa_exc.DBAPIError) -> BaseException:
    """The driver's own exception: asyncpg's is chained behind SQLAlchemy's adapter."""
    orig: BaseException = error.orig if error.orig is not None else error
    cause = orig.__cause__
    if cause is not None and type(cause).__module__.startswith("asyncpg"):
        return cause
    return orig


def _sqlstate(error: BaseException) -> str | None:
    state = getattr(error, "sqlstate", None)
    return state if isinstance(state, str) else None


def _unique_constraint_for(columns: str) -> str | None:
    """Name the unique constraint SQLite reported only by its ``table.column`` list."""
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


def _constraint(action: str, error: sa_exc.IntegrityError) -> ConstraintViolationError:
    driver = _driver_error(error)
    name = getattr(driver, "constraint_name", None)
    # Parsed, never shown: the message below names the kind and constraint only.
    message = _raw_first_line(driver)
    append_only = _APPEND_ONLY.search(message)
    if name is None:
        unique = _SQLITE_UNIQUE.search(message)
        check = _SQLITE_CHECK.search(message)
        if unique is not None:
            name = _unique_constraint_for(unique.group("columns"))
        elif check is not None:
            name = check.group("name")
        elif append_only is not None:
            name = f"{append_only.group('table')}_append_only"
    if append_only is not None:
        kind = "append-only"
    elif "FOREIGN KEY" in message.upper() or _sqlstate(driver) == "23503":
        kind = "foreign key"
    elif "UNIQUE" in message.upper() or _sqlstate(driver) == "23505":
        kind = "unique"
    elif "CHECK" in message.upper() or _sqlstate(driver) == "23514":
        kind = "check"
    elif "NOT NULL" in message.upper() or _sqlstate(driver) == "23502":
        kind = "not null"
    else:
        kind = "integrity"
    named = f" {name}" if name else ""
    return ConstraintViolationError(f"{action}: {kind} constraint{named} violated", constraint=name)


def _dbapi(action: str, error: sa_exc.DBAPIError) -> DbError:
    driver = _driver_error(error)
    state = _sqlstate(driver)
    if state in _PG_NOT_RETRYABLE:
        return ConnectionFailedError(
            f"{action}: cannot connect to PostgreSQL: {_PG_NOT_RETRYABLE[state]} "
            f"({_first_line(driver)})",
            retryable=False,
        )
    if error.connection_invalidated or (state is not None and state[:2] in _PG_CONNECTION_CLASSES):
        return ConnectionFailedError(f"{action}: the database connection was lost")
    if state in _PG_CONFLICT:
        return ConflictError(f"{action}: {_first_line(driver)}; retry the unit of work")
    sqlite_code = getattr(driver, "sqlite_errorcode", None)
    if sqlite_code == _SQLITE_NOT_A_DATABASE:
        return ConnectionFailedError(
            f"{action}: the file is not a SQLite database (or it is encrypted or damaged)",
            retryable=False,
        )
    if sqlite_code == _SQLITE_CANTOPEN:
        return ConnectionFailedError(
            f"{action}: cannot open the SQLite database file (does its directory exist "
            "and is it writable?)",
            retryable=False,
        )
    if sqlite_code in _SQLITE_BUSY_CODES or "database is locked" in (_first_line(driver)):
        return TransactionFailedError(
            f"{action}: the SQLite database stayed locked by another writer beyond the timeout",
            retryable=True,
        )
    if isinstance(error, sa_exc.InterfaceError | sa_exc.OperationalError) and isinstance(
        driver, OSError | ConnectionError
    ):
        return ConnectionFailedError(f"{action}: cannot reach the database ({_first_line(driver)})")
    return QueryFailedError(f"{action} failed: {_first_line(driver)}")


def translate(error: BaseException, action: str) -> BaseException:
    """Return the ecl-persistence error for ``error`` raised while doing ``action``.

    Errors that are already ours, and cancellation, are returned unchanged.
    """
    if isinstance(error, DbError | asyncio.CancelledError | KeyboardInterrupt | SystemExit):
        return error
    if isinstance(error, sa_exc.IntegrityError):
        return _constraint(action, error)
    if isinstance(error, sa_exc.DBAPIError):
        return _dbapi(action, error)
    if isinstance(error, sa_exc.TimeoutError):
        return ConnectionFailedError(
            f"{action}: no pooled connection became free within the timeout; "
            "raise max_connections or timeout_secs"
        )
    if isinstance(error, sa_exc.StatementError):
        # A bind parameter was refused before reaching the database (a naive datetime).
        cause = error.orig if error.orig is not None else error
        return ValidationError(f"{action}: {_first_line(cause)}")
    if isinstance(error, UnicodeError):
        # A lone surrogate the driver could not encode; the message would quote it.
        return ValidationError(f"{action}: a text value cannot be encoded as UTF-8")
    if isinstance(error, TimeoutError | ConnectionError | OSError):
        return ConnectionFailedError(f"{action}: cannot reach the database ({_first_line(error)})")
    if isinstance(error, sa_exc.SQLAlchemyError):
        return QueryFailedError(f"{action} failed: {type(error).__name__}")
    return error


@contextmanager
def translating(action: str) -> Iterator[None]:
    """Run the block, translating what it raises.

    The translated error's ``__cause__`` is a :class:`DriverError`, or the
    original error when it cannot hold values (an ``OSError``); an original
    that can is dropped from the chain altogether.
    """
    try:
        yield
    except Exception as error:
        translated = translate(error, action)
        if translated is error:
            raise
        cause = _printable_cause(error)
        try:
            raise translated from cause
        except DbError as raised:
            if cause is not error:
                # Raising inside this handler made the original the context;
                # a bare re-raise keeps the context as set here.
                raised.__context__ = None
            raise
