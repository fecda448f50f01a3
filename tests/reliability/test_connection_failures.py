"""A database that cannot be used: typed errors that say what to fix, and no password.

A missing PostgreSQL database and a missing SQLite directory are covered in
tests/integration/test_database.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from tests.reliability._support import HANG_GUARD_SECS

from ecl_persistence import ConnectionFailedError, Database

SECRET = "Conn-F4il-Secret"


async def _ping_error(url: str, **config: Any) -> ConnectionFailedError:
    db = Database.from_url(url, **config)
    try:
        with pytest.raises(ConnectionFailedError) as caught:
            async with asyncio.timeout(HANG_GUARD_SECS):
                await db.ping()
    finally:
        await db.dispose()
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)
    return caught.value


@pytest.mark.postgresql
async def test_refused_connection_names_the_server_and_is_retryable() -> None:
    error = await _ping_error(f"postgresql://ecl:{SECRET}@127.0.0.1:1/ecl", timeout_secs=2)
    assert error.retryable
    assert "cannot reach the PostgreSQL server at 127.0.0.1:1" in str(error)
    assert "check the host and port" in str(error)


@pytest.mark.postgresql
async def test_unknown_host_names_the_host() -> None:
    error = await _ping_error(
        f"postgresql://ecl:{SECRET}@ecl-no-such-host.invalid:5432/ecl", timeout_secs=2
    )
    assert "ecl-no-such-host.invalid:5432" in str(error)


@pytest.mark.postgresql
async def test_server_that_never_answers_times_out_with_the_setting_to_raise(
    silent_port: int,
) -> None:
    error = await _ping_error(
        f"postgresql://ecl:{SECRET}@127.0.0.1:{silent_port}/ecl", timeout_secs=0.3
    )
    assert error.retryable
    assert f"127.0.0.1:{silent_port}" in str(error)
    assert "no answer within 0.3 s" in str(error)
    assert "timeout_secs" in str(error)


@pytest.mark.postgresql
async def test_wrong_password_is_not_retryable_and_says_so(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test server trusts every local connection, so it cannot refuse a
    # password: the driver's real exception for SQLSTATE 28P01 is raised in
    # its place, and goes through the same translation.
    async def refuse(*args: Any, **kwargs: Any) -> None:
        assert kwargs.get("password") == SECRET
        raise asyncpg.InvalidPasswordError('password authentication failed for user "ecl"')

    monkeypatch.setattr(asyncpg, "connect", refuse)
    url = make_url(postgres_url).set(username="ecl", password=SECRET)
    error = await _ping_error(url.render_as_string(hide_password=False))
    assert not error.retryable
    assert "wrong password" in str(error)
    assert 'user "ecl"' in str(error)


@pytest.mark.postgresql
async def test_unknown_role_is_not_retryable_and_names_the_role(postgres_url: str) -> None:
    url = make_url(postgres_url).set(username="ecl_no_such_role", password=SECRET)
    error = await _ping_error(url.render_as_string(hide_password=False))
    assert not error.retryable
    assert 'role "ecl_no_such_role" does not exist' in str(error)


async def test_sqlite_file_that_is_not_a_database_is_not_retryable(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are notes, not a database\n" * 200)
    error = await _ping_error(f"sqlite:///{path}")
    assert not error.retryable
    assert "not a SQLite database" in str(error)
