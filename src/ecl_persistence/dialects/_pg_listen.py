"""PostgreSQL's wake-ups: ``NOTIFY`` in the writing transaction, ``LISTEN`` on one connection.

Every write that makes a workflow claimable (its creation, a release, a
retry) sends ``pg_notify('ecl_claimable', <definition id>)`` in its own
transaction: PostgreSQL delivers it at commit, and never for a transaction
that rolled back, and folds identical notices of one transaction into one.
A worker keeps one connection of its own (asyncpg, outside the pool) that
listens on the channel; transaction pooling (PgBouncer) cannot carry a
``LISTEN``, hence ``DatabaseConfig.listen_url`` for a direct connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy import Executable, text
from sqlalchemy.engine import URL

from ecl_persistence.dialects import _libpq as libpq
from ecl_persistence.dialects.base import Listening
from ecl_persistence.errors import ConnectionFailedError

if TYPE_CHECKING:
    from ecl_persistence.config import DatabaseConfig

__all__ = ["CHANNEL", "NOTICE", "PgListening", "open_listening"]

CHANNEL = "ecl_claimable"
"""The notification channel: its payload is the definition id of the workflow."""
NOTICE: Executable = text(f"SELECT pg_notify('{CHANNEL}', :definition_id)")
"""The statement a writing transaction sends; delivered at its commit."""


class PgListening(Listening):
    """An asyncpg connection listening on :data:`CHANNEL`."""

    __slots__ = ("_connection", "_lost")

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection
        self._lost = asyncio.Event()

    def _on_lost(self, _connection: Any) -> None:
        self._lost.set()

    async def wait_lost(self, check_seconds: float) -> None:
        """Return once the connection closed, or did not answer ``SELECT 1`` in time."""
        while not self._connection.is_closed():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(check_seconds):
                    await self._lost.wait()
                    return
            try:
                await self._connection.fetchval("SELECT 1", timeout=check_seconds)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return

    async def close(self) -> None:
        """Close the connection; a connection already lost is only let go."""
        if self._connection.is_closed():
            return
        try:
            await asyncio.wait_for(self._connection.close(), timeout=2.0)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self._connection.terminate()


async def open_listening(
    url: URL, config: DatabaseConfig, on_notice: Callable[[str], None], application_name: str
) -> PgListening:
    """Connect to ``url`` (its libpq parameters honoured), ``LISTEN``, return the connection.

    Raises ConnectionFailedError naming the server, never the password.
    """
    given = libpq.connect_arguments(url)
    target = given.url
    arguments: dict[str, Any] = {
        "host": target.host or target.query.get("host"),
        "port": target.port or target.query.get("port"),
        "user": target.username,
        "password": target.password,
        "database": target.database,
        "timeout": config.timeout_secs if given.timeout is None else given.timeout,
        "server_settings": {"application_name": application_name, **given.server_settings},
        "statement_cache_size": 0,
    }
    if given.ssl is not None:
        arguments["ssl"] = given.ssl
    try:
        connection = await asyncpg.connect(**arguments)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        server = f"{target.host or 'the default host'}:{target.port or 5432}"
        raise ConnectionFailedError(
            f"the worker's listener cannot connect to PostgreSQL at {server}: "
            f"{type(error).__name__}"
        ) from None
    listening = PgListening(connection)
    connection.add_termination_listener(listening._on_lost)

    def deliver(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
        on_notice(payload)

    try:
        await connection.add_listener(CHANNEL, deliver)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        connection.terminate()
        raise ConnectionFailedError(
            f"the worker's listener could not LISTEN: {type(error).__name__}"
        ) from None
    except BaseException:
        connection.terminate()
        raise
    return listening
