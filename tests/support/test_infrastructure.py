"""The throwaway servers themselves: clusters, crashes, TLS, a replica, PgBouncer, and cleanup."""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from tests.conftest import admin_postgres_url
from tests.support.system import (
    free_port,
    is_alive,
    processes_under,
    require_binary,
    server_user,
    wait_gone,
)

if TYPE_CHECKING:
    from tests.support.pg_cluster import Cluster
    from tests.support.pgbouncer import PgBouncer

pytest_plugins = ("tests.support.fixtures",)
pytestmark = pytest.mark.postgresql

CONNECTION_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def fetchval(url: str, sql: str, **connect: Any) -> Any:
    """One value of ``sql`` on a connection of its own (asyncpg)."""
    connection = await asyncpg.connect(url, timeout=5, **connect)
    try:
        return await connection.fetchval(sql)
    finally:
        await connection.close()


async def eventually(url: str, sql: str, seconds: float) -> Any:
    """The value of ``sql`` once its table exists (replication may lag), within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await fetchval(url, sql)
        except asyncpg.UndefinedTableError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


def shared_memory() -> set[str]:
    """The server user's System V segments (by id) and POSIX dynamic shared memory files."""
    uid = str(server_user().uid)
    lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    segments = {f"sysv:{line.split()[1]}" for line in lines if line.split()[7] == uid}
    files = {str(p) for p in Path("/dev/shm").glob("PostgreSQL.*") if p.stat().st_uid == int(uid)}
    return segments | files


async def test_cluster_answers_on_its_own_port_from_its_own_directory(pg_cluster: Cluster) -> None:
    assert pg_cluster.port != 5432
    assert await fetchval(pg_cluster.url(), "SELECT inet_server_port()") == pg_cluster.port
    data_directory = await fetchval(pg_cluster.url(), "SHOW data_directory")
    assert Path(data_directory) == pg_cluster.data_dir
    assert await fetchval(pg_cluster.url(), "SHOW fsync") == "off"


async def test_create_database_returns_a_url_that_connects(pg_cluster: Cluster) -> None:
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    url = pg_cluster.create_database(name)
    try:
        assert await fetchval(url, "SELECT current_database()") == name
    finally:
        pg_cluster.psql(f'DROP DATABASE "{name}"')


async def test_tls_verified_by_the_cluster_ca_is_encrypted(pg_cluster: Cluster) -> None:
    sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    assert await fetchval(pg_cluster.url(), sql, ssl=pg_cluster.ssl_context()) is True
    libpq_url = pg_cluster.url(sslmode="verify-full", sslrootcert=str(pg_cluster.ca_path))
    assert await fetchval(libpq_url, sql) is True


async def test_tls_verification_fails_against_the_wrong_root(pg_cluster: Cluster) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        wrong_root = pg_cluster.ssl_context(pg_cluster.wrong_ca_path)
        await fetchval(pg_cluster.url(), "SELECT 1", ssl=wrong_root)


async def test_ssl_required_refuses_plain_tcp_and_serves_tls_on_extra_addresses(
    pg_cluster_factory: Any,
) -> None:
    cluster: Cluster = pg_cluster_factory(
        ssl=True, ssl_required=True, listen_addresses=["127.0.0.2"]
    )
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        await fetchval(cluster.url(), "SELECT 1", ssl=False)
    # The server's certificate names the extra address too: verify-full passes there.
    url = cluster.url(host="127.0.0.2")
    assert await fetchval(url, "SELECT inet_server_addr()::text", ssl=cluster.ssl_context()) == (
        "127.0.0.2/32"
    )


async def test_kill_then_restart_serves_new_connections_and_close_leaves_nothing(
    pg_cluster_factory: Any,
) -> None:
    cluster: Cluster = pg_cluster_factory()
    survivor = await asyncpg.connect(cluster.url(), timeout=5)
    postmaster = cluster.pid
    cluster.kill()
    assert not cluster.running
    # Its orphaned backend notices the postmaster's death and exits by itself.
    assert wait_gone([survivor.get_server_pid()], timeout=5) == []
    with pytest.raises(CONNECTION_ERRORS):
        await survivor.fetchval("SELECT 1")
    survivor.terminate()
    with pytest.raises(ConnectionRefusedError):  # nothing listens while it is down
        await fetchval(cluster.url(), "SELECT 1")

    cluster.restart()
    assert cluster.pid not in (None, postmaster)
    assert await fetchval(cluster.url(), "SELECT 1") == 1

    base = cluster.base_dir
    assert processes_under(base)
    cluster.close()
    assert not base.exists()
    assert processes_under(base) == []


def test_closing_a_killed_cluster_removes_its_shared_memory(pg_cluster_factory: Any) -> None:
    before = shared_memory()
    cluster: Cluster = pg_cluster_factory()
    segment = (cluster.data_dir / "postmaster.pid").read_text().splitlines()[6].split()[1]
    assert f"sysv:{segment}" in shared_memory()
    cluster.kill()
    cluster.close()
    assert shared_memory() <= before


async def test_replica_is_in_recovery_and_sees_a_row_written_on_the_primary(
    pg_cluster: Cluster,
) -> None:
    table = f"replicated_{uuid.uuid4().hex[:8]}"
    with pg_cluster.replica() as replica:
        assert replica.primary is pg_cluster
        assert await fetchval(replica.url(), "SELECT pg_is_in_recovery()") is True
        pg_cluster.psql(f"CREATE TABLE {table} (note text); INSERT INTO {table} VALUES ('hi')")
        try:
            assert await eventually(replica.url(), f"SELECT note FROM {table}", seconds=5) == "hi"
        finally:
            pg_cluster.psql(f"DROP TABLE {table}")


async def test_pgbouncer_pools_transactions_onto_one_server_connection(
    pg_cluster: Cluster, pgbouncer_factory: Any
) -> None:
    bouncer: PgBouncer = pgbouncer_factory(pg_cluster, default_pool_size=1)
    first, second = [
        await asyncpg.connect(bouncer.url(), timeout=5, statement_cache_size=0) for _ in range(2)
    ]
    try:
        # One server connection for two clients: only transaction pooling lets both run.
        backends = [
            await asyncio.wait_for(client.fetchval("SELECT pg_backend_pid()"), 5)
            for client in (first, second)
        ]
        assert backends[0] == backends[1]
        assert await first.fetchval("SELECT inet_server_port()") == pg_cluster.port
    finally:
        await first.close()
        await second.close()
    pools = {row["database"]: row for row in bouncer.show("POOLS")}
    assert pools["postgres"]["pool_mode"] == "transaction"
    config = {row["key"]: row["value"] for row in bouncer.show("CONFIG")}
    assert config["pool_mode"] == "transaction"

    base, pid = bouncer.base_dir, bouncer.pid
    bouncer.close()
    assert not base.exists()
    assert pid is not None
    assert not is_alive(pid)
    assert processes_under(base) == []


async def test_pgbouncer_reaches_a_tls_only_cluster_over_verified_tls(
    pg_cluster_factory: Any, pgbouncer_factory: Any
) -> None:
    cluster: Cluster = pg_cluster_factory(ssl=True, ssl_required=True)
    bouncer: PgBouncer = pgbouncer_factory(cluster)
    sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    assert await fetchval(bouncer.url(), sql, statement_cache_size=0) is True


async def test_pgbouncer_in_front_of_the_shared_server(pgbouncer_factory: Any) -> None:
    bouncer: PgBouncer = pgbouncer_factory(admin_postgres_url())
    database = admin_postgres_url().rsplit("/", 1)[1]
    url = bouncer.url(database)
    assert await fetchval(url, "SELECT current_database()", statement_cache_size=0) == database


def test_a_missing_binary_fails_naming_its_package() -> None:
    with pytest.raises(pytest.fail.Exception, match="install the Debian package pgbouncer"):
        require_binary("/nonexistent/ecl-pgbouncer", "pgbouncer")


def test_an_address_on_no_interface_fails_naming_it() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"cannot listen on 198\.51\.100\.1"):
        free_port(("127.0.0.1", "198.51.100.1"))
