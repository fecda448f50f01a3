"""Fixtures of the reliability tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """The port of a TCP server that accepts connections and never says a word."""
    clients: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clients.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for client in clients:
        client.close()
    server.close()
    await server.wait_closed()
