"""Scratch databases: a fresh SQLite file or PostgreSQL database per run, dropped afterwards."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

__all__ = ["DEFAULT_POSTGRES_URL", "scratch_database"]

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
"""The server's admin database; the benchmark creates and drops its own next to it."""


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(admin_url: str, statement: str) -> None:
    connection = await asyncpg.connect(_plain(admin_url), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@asynccontextmanager
async def scratch_database(dialect: str, admin_url: str) -> AsyncIterator[str]:
    """Yield the URL of a new, empty database on ``dialect``; drop it on exit."""
    if dialect == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="ecl-bench-"))
        try:
            yield f"sqlite:///{directory / 'bench.db'}"
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    name = f"ecl_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
