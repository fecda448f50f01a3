"""Error translation: every driver failure becomes the documented, typed error."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from sqlalchemy import exc as sa_exc

from ecl_persistence import (
    ConflictError,
    ConnectionFailedError,
    ConstraintViolationError,
    QueryFailedError,
    TransactionFailedError,
    ValidationError,
)
from ecl_persistence._translate import DriverError, translate, translating

SECRET_PAYLOAD = "top-secret-payload-value"


class FakePgError(Exception):
    """Stands in for an asyncpg exception: it carries a SQLSTATE."""

    __module__ = "asyncpg.exceptions"

    def __init__(self, message: str, sqlstate: str, constraint_name: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.constraint_name = constraint_name


def _wrapped(
    driver: BaseException, kind: type[sa_exc.DBAPIError] = sa_exc.DBAPIError
) -> sa_exc.DBAPIError:
    adapter = Exception(f"adapted: {driver}")
    adapter.__cause__ = driver
    return kind("INSERT ...", {"payload": SECRET_PAYLOAD}, adapter, hide_parameters=True)


def _sqlite(message: str, code: int, kind: type[sa_exc.DBAPIError]) -> sa_exc.DBAPIError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return kind("BEGIN IMMEDIATE", {}, error)


@pytest.mark.parametrize(
    ("sqlstate", "expected", "retryable"),
    [
        ("28P01", ConnectionFailedError, False),
        ("3D000", ConnectionFailedError, False),
        ("08006", ConnectionFailedError, True),
        ("57P01", ConnectionFailedError, True),
        ("40001", ConflictError, True),
        ("40P01", ConflictError, True),
        ("42601", QueryFailedError, False),
    ],
)
def test_postgres_sqlstates_map_to_typed_errors(
    sqlstate: str, expected: type[Exception], retryable: bool
) -> None:
    error = translate(_wrapped(FakePgError("boom", sqlstate)), "do it")
    assert type(error) is expected
    assert getattr(error, "retryable", False) is retryable
    assert SECRET_PAYLOAD not in str(error)


@pytest.mark.parametrize(
    ("message", "sqlstate", "constraint", "kind"),
    [
        ("duplicate key", "23505", "uq_x", "unique"),
        ("violates foreign key", "23503", "fk_x", "foreign key"),
        ("violates check", "23514", "ck_x", "check"),
        ("null value", "23502", None, "not null"),
        ("other", "23000", None, "integrity"),
    ],
)
def test_postgres_integrity_errors_name_kind_and_constraint(
    message: str, sqlstate: str, constraint: str | None, kind: str
) -> None:
    driver = FakePgError(message, sqlstate, constraint)
    error = translate(_wrapped(driver, sa_exc.IntegrityError), "create thing 1")
    assert isinstance(error, ConstraintViolationError)
    assert error.constraint == constraint
    assert kind in str(error)
    assert "create thing 1" in str(error)


def test_sqlite_unique_failure_is_mapped_to_the_constraint_name() -> None:
    driver = sqlite3.IntegrityError(
        "UNIQUE constraint failed: artifacts.workflow_id, artifacts.step_id, artifacts.name"
    )
    error = translate(sa_exc.IntegrityError("INSERT", {}, driver), "create artifact")
    assert isinstance(error, ConstraintViolationError)
    assert error.constraint == "uq_artifacts_workflow_id_step_id_name"


def test_sqlite_unique_failure_on_an_unknown_table_has_no_name() -> None:
    driver = sqlite3.IntegrityError("UNIQUE constraint failed: elsewhere.x")
    error = translate(sa_exc.IntegrityError("INSERT", {}, driver), "create")
    assert isinstance(error, ConstraintViolationError)
    assert error.constraint is None


def test_sqlite_check_failure_carries_the_check_name() -> None:
    driver = sqlite3.IntegrityError("CHECK constraint failed: ck_workflows_state")
    error = translate(sa_exc.IntegrityError("UPDATE", {}, driver), "update")
    assert isinstance(error, ConstraintViolationError)
    assert error.constraint == "ck_workflows_state"


def test_sqlite_busy_is_a_retryable_transaction_failure() -> None:
    error = translate(
        _sqlite("database is locked", sqlite3.SQLITE_BUSY, sa_exc.OperationalError), "begin"
    )
    assert isinstance(error, TransactionFailedError)
    assert error.retryable


def test_sqlite_cannot_open_is_a_connection_failure() -> None:
    error = translate(
        _sqlite("unable to open database file", sqlite3.SQLITE_CANTOPEN, sa_exc.OperationalError),
        "connect",
    )
    assert isinstance(error, ConnectionFailedError)
    assert not error.retryable


def test_invalidated_connection_is_a_retryable_connection_failure() -> None:
    error = sa_exc.OperationalError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    translated = translate(error, "read")
    assert isinstance(translated, ConnectionFailedError)
    assert translated.retryable


def test_os_level_connection_errors_are_connection_failures() -> None:
    refused = translate(
        sa_exc.OperationalError("connect", {}, ConnectionRefusedError("refused")), "connect"
    )
    assert isinstance(refused, ConnectionFailedError)
    assert isinstance(translate(ConnectionRefusedError("x"), "connect"), ConnectionFailedError)
    assert isinstance(translate(TimeoutError(), "connect"), ConnectionFailedError)


def test_pool_timeout_tells_which_settings_to_raise() -> None:
    error = translate(sa_exc.TimeoutError("QueuePool limit"), "checkout")
    assert isinstance(error, ConnectionFailedError)
    assert "max_connections" in str(error)


def test_statement_error_from_a_bind_is_a_validation_error() -> None:
    error = sa_exc.StatementError("bad bind", "INSERT", {"p": SECRET_PAYLOAD}, ValueError("naive"))
    translated = translate(error, "create")
    assert isinstance(translated, ValidationError)
    assert SECRET_PAYLOAD not in str(translated)


def test_other_sqlalchemy_errors_are_query_failures() -> None:
    assert isinstance(translate(sa_exc.InvalidRequestError("x"), "q"), QueryFailedError)


def test_ours_cancellation_and_foreign_errors_pass_through_unchanged() -> None:
    for error in (ValidationError("x"), asyncio.CancelledError(), KeyError("k")):
        assert translate(error, "q") is error


def test_translating_chains_a_summary_and_reraises_the_untranslatable() -> None:
    with pytest.raises(QueryFailedError) as caught, translating("q"):
        raise sa_exc.InvalidRequestError("x")
    assert isinstance(caught.value.__cause__, DriverError)
    assert "InvalidRequestError: x" in str(caught.value.__cause__)
    assert caught.value.__context__ is None
    with pytest.raises(ConnectionFailedError) as refused, translating("connect"):
        raise ConnectionRefusedError("refused")
    assert isinstance(refused.value.__cause__, ConnectionRefusedError)
    with pytest.raises(KeyError), translating("q"):
        raise KeyError("k")
