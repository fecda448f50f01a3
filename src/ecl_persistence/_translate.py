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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from sqlalchemy import exc as sa_exc

from ecl_persistence._messages import first_line, raw_first_line
from ecl_persistence.dialects import STRATEGIES
from ecl_persistence.errors import (
    ConnectionFailedError,
    ConstraintViolationError,
    DbError,
    QueryFailedError,
    ValidationError,
)

__all__ = ["DriverError", "raise_translated", "translate", "translating"]

_MAX_STATEMENT_CHARS = 2000

# The trigger that keeps a table append-only raises "<table> is append-only"
# on both backends; it is named "<table>_append_only" (PostgreSQL reports the
# name itself, SQLite only the message).
_APPEND_ONLY = re.compile(r"^(?P<table>\w+) is append-only")


class DriverError(Exception):
    """The printed cause of a translated error: the driver's exception and statement, no values."""


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
    text += f": {first_line(driver)}"
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


def _constraint_name(driver: BaseException) -> str | None:
    for strategy in STRATEGIES.values():
        name = strategy.constraint_name(driver)
        if name is not None:
            return name
    return None


def _constraint(action: str, error: sa_exc.IntegrityError) -> ConstraintViolationError:
    driver = _driver_error(error)
    # Parsed, never shown: the message below names the kind and constraint only.
    message = raw_first_line(driver)
    append_only = _APPEND_ONLY.search(message)
    name = _constraint_name(driver)
    if name is None and append_only is not None:
        name = f"{append_only.group('table')}_append_only"
    state = _sqlstate(driver)
    if append_only is not None:
        kind = "append-only"
    elif "FOREIGN KEY" in message.upper() or state == "23503":
        kind = "foreign key"
    elif "UNIQUE" in message.upper() or state == "23505":
        kind = "unique"
    elif "CHECK" in message.upper() or state == "23514":
        kind = "check"
    elif "NOT NULL" in message.upper() or state == "23502":
        kind = "not null"
    else:
        kind = "integrity"
    named = f" {name}" if name else ""
    return ConstraintViolationError(f"{action}: {kind} constraint{named} violated", constraint=name)


def _dbapi(action: str, error: sa_exc.DBAPIError) -> DbError:
    driver = _driver_error(error)
    for strategy in STRATEGIES.values():
        classified = strategy.classify(driver, action)
        if classified is not None:
            return classified
    if error.connection_invalidated:
        return ConnectionFailedError(f"{action}: the database connection was lost")
    if isinstance(error, sa_exc.InterfaceError | sa_exc.OperationalError) and isinstance(
        driver, OSError | ConnectionError
    ):
        return ConnectionFailedError(f"{action}: cannot reach the database ({first_line(driver)})")
    return QueryFailedError(f"{action} failed: {first_line(driver)}")


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
        return ValidationError(f"{action}: {first_line(cause)}")
    if isinstance(error, UnicodeError):
        # A lone surrogate the driver could not encode; the message would quote it.
        return ValidationError(f"{action}: a text value cannot be encoded as UTF-8")
    if isinstance(error, TimeoutError | ConnectionError | OSError):
        return ConnectionFailedError(f"{action}: cannot reach the database ({first_line(error)})")
    if isinstance(error, sa_exc.SQLAlchemyError):
        return QueryFailedError(f"{action} failed: {type(error).__name__}")
    return error


def raise_translated(error: Exception, action: str) -> NoReturn:
    """Raise the translation of ``error`` (or ``error`` itself if it needs none).

    For an ``except`` clause of a hot path; :func:`translating` is the same
    as a context manager. The translated error's ``__cause__`` is a
    :class:`DriverError`, or the original error when it cannot hold values
    (an ``OSError``); an original that can is dropped from the chain.
    """
    translated = translate(error, action)
    if translated is error:
        raise error
    cause = _printable_cause(error)
    try:
        raise translated from cause
    except DbError as raised:
        if cause is not error:
            # Raising inside this handler made the original the context;
            # a bare re-raise keeps the context as set here.
            raised.__context__ = None
        raise


@contextmanager
def translating(action: str) -> Iterator[None]:
    """Run the block, translating what it raises (see :func:`raise_translated`)."""
    try:
        yield
    except Exception as error:
        raise_translated(error, action)
