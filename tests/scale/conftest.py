"""Fixtures of the scale-out tests: a database on one backend only."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.conftest import _truncate

from ecl_persistence import Database


@pytest.fixture
async def pg_db(postgres_url: str) -> AsyncIterator[Database]:
    """A :class:`Database` on the session's migrated PostgreSQL scratch database, emptied."""
    await _truncate(postgres_url)
    database = Database.from_url(postgres_url)
    yield database
    await database.dispose()


@pytest.fixture
async def sqlite_db(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[Database]:
    """A :class:`Database` on a migrated SQLite file of the test's own."""
    path = tmp_path / "ecl.db"
    await asyncio.to_thread(shutil.copy, sqlite_template, path)
    database = Database.from_url(f"sqlite:///{path}")
    yield database
    await database.dispose()
