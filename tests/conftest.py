"""Fixtures per backend: every test that takes ``db`` runs on SQLite and on PostgreSQL.

The PostgreSQL server comes from ``ECL_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); the suite creates its own
scratch databases there and drops them at the end. A server that does not
answer fails the PostgreSQL tests loudly; it never skips them.

With ``ECL_TEST_PGBOUNCER=1`` the session's scratch database (``postgres_url``,
hence ``database_url`` and ``db``) is reached through a PgBouncer of the
suite's own in transaction pooling mode, with ``?pgbouncer=true`` in its URL;
the plain asyncpg connections of the tests' own helpers (:func:`asyncpg_url`)
still go to the server directly. The ``tests-pgbouncer`` nox session runs
that way (see ``docs/testing.md``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from tests.support.pgbouncer import PgBouncer

from ecl_persistence import Database
from ecl_persistence.config import mask_url

# Throwaway clusters and PgBouncer (tests/support): pg_cluster, pg_cluster_factory,
# pgbouncer_factory.
pytest_plugins = ("tests.support.fixtures",)

POSTGRES_URL_VARIABLE = "ECL_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
PGBOUNCER_VARIABLE = "ECL_TEST_PGBOUNCER"
TABLES = (
    "artifacts",
    "step_executions",
    "workflow_transitions",
    "workflows",
    "concurrency_limits",
    "payloads",
)
# (host, port) of a PgBouncer of the suite -> (host, port) of the server behind it.
_BOUNCED: dict[tuple[str | None, int | None], tuple[str | None, int | None]] = {}


def admin_postgres_url() -> str:
    """The server URL the suite creates its scratch databases on."""
    return os.environ.get(POSTGRES_URL_VARIABLE) or DEFAULT_POSTGRES_URL


def through_pgbouncer() -> bool:
    """Whether ``ECL_TEST_PGBOUNCER`` asks for the scratch database through PgBouncer."""
    value = os.environ.get(PGBOUNCER_VARIABLE, "").strip().lower()
    if value not in ("", "0", "1"):
        pytest.fail(f"{PGBOUNCER_VARIABLE} must be 0 or 1", pytrace=False)
    return value == "1"


def asyncpg_url(url: str) -> str:
    """``url`` with the plain ``postgresql`` scheme, as ``asyncpg.connect`` takes it.

    A URL of the suite's PgBouncer becomes the URL of the server behind it:
    the tests' own connections watch and kill sessions on the server.
    """
    parsed = make_url(url).set(drivername="postgresql")
    if "pgbouncer" in parsed.query:
        parsed = parsed.difference_update_query(["pgbouncer"])
        host, port = _BOUNCED.get((parsed.host, parsed.port), (parsed.host, parsed.port))
        parsed = parsed.set(host=host, port=port)
    return parsed.render_as_string(hide_password=False)


async def _admin_execute(statement: str) -> None:
    connection = await asyncpg.connect(asyncpg_url(admin_postgres_url()), timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def create_postgres_database() -> str:
    """Create a scratch database and return its URL; fail loudly if the server is unreachable."""
    name = f"ecl_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_admin_execute(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        pytest.fail(
            f"cannot create a scratch database on the PostgreSQL server at "
            f"{mask_url(admin_postgres_url())} ({type(error).__name__}: {error}). "
            f"Start the server or set {POSTGRES_URL_VARIABLE} to one where this user "
            "may create databases.",
            pytrace=False,
        )
    return make_url(admin_postgres_url()).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    """Drop a scratch database made by :func:`create_postgres_database`."""
    name = make_url(url).database
    asyncio.run(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated scratch PostgreSQL database shared by the session's tests."""
    url = create_postgres_database()

    async def migrate() -> None:
        async with Database.from_url(url) as database:
            await database.migrate()

    asyncio.run(migrate())
    if not through_pgbouncer():
        yield url
    else:
        with PgBouncer(admin_postgres_url(), default_pool_size=10, max_client_conn=400) as bouncer:
            server = make_url(url)
            _BOUNCED[(bouncer.host, bouncer.port)] = (server.host, server.port)
            yield bouncer.url(str(server.database), server.username or "postgres", pgbouncer="true")
    drop_postgres_database(url)


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """An empty scratch PostgreSQL database of its own, for migration tests."""
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test instead of migrating again."""
    path = tmp_path_factory.mktemp("template") / "ecl.db"

    async def migrate() -> None:
        async with Database.from_url(f"sqlite:///{path}") as database:
            await database.migrate()

    asyncio.run(migrate())
    return path


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend a test runs on; ``-m postgresql`` or ``-m "not postgresql"`` selects one."""
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a migrated, empty database on ``backend``."""
    if backend == "sqlite":
        path = tmp_path / "ecl.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_url")
    asyncio.run(_truncate(url))
    return url


@pytest.fixture
def empty_database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a database on ``backend`` that was never migrated."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


async def _truncate(url: str) -> None:
    connection = await asyncpg.connect(asyncpg_url(url), timeout=5)
    try:
        await connection.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
    finally:
        await connection.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A :class:`Database` on a migrated, empty database of the test's backend."""
    database = Database.from_url(database_url)
    yield database
    await database.dispose()
