"""PgBouncer in front of a test server, in transaction pooling mode by default.

```python
with Cluster() as cluster, PgBouncer(cluster) as bouncer:   # or PgBouncer("postgresql://...")
    url = bouncer.url("postgres")          # clients connect here; asyncpg: statement_cache_size=0
    bouncer.show("pools")                  # the admin console: SHOW POOLS, as dicts
```

Its configuration, auth file, pid file and log live in a temp dir of their
own, removed by :meth:`PgBouncer.close`. It runs as the unprivileged user of
:mod:`tests.support.system` (PgBouncer refuses root), trusts the users it is
given, and forwards every database name to the server. PgBouncer 1.18 (Debian
12) has no prepared statements in transaction mode: an asyncpg client needs
``statement_cache_size=0``. Its fixture, ``pgbouncer_factory``, is in
:mod:`tests.support.fixtures`.
"""

from __future__ import annotations

import csv
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import unquote, urlsplit

import attrs
from tests.support.pg_cluster import Cluster
from tests.support.system import (
    OsUser,
    fail,
    free_port,
    is_alive,
    kill_all,
    postgres_url,
    private_dir,
    processes_under,
    remove_tree,
    require_binary,
    run,
    send_signal,
    server_user,
    tail,
    wait_gone,
)

PGBOUNCER = "/usr/sbin/pgbouncer"
"""Where Debian's package ``pgbouncer`` installs the binary."""
ADMIN_DATABASE = "pgbouncer"
"""The admin console's database name."""


class PgBouncer:
    """A PgBouncer of its own in front of ``target``: a :class:`Cluster` or a server's URL.

    ``target`` as a URL (``postgresql://user[:password]@host:port/db``) names the
    server; a password in it is given to the server, never printed. Options:
    ``pool_mode`` (``transaction``), ``default_pool_size``, ``max_client_conn``,
    ``users`` let in with trust (they are also the admin console's users),
    ``listen_addresses`` besides 127.0.0.1, ``ignore_startup_parameters``
    (asyncpg and SQLAlchemy send ``extra_float_digits`` or ``options``), and
    ``settings``, extra ``[pgbouncer]`` lines.
    """

    host = "127.0.0.1"
    """The address :meth:`url` names."""

    def __init__(
        self,
        target: Cluster | str,
        *,
        pool_mode: str = "transaction",
        default_pool_size: int = 5,
        max_client_conn: int = 100,
        users: Sequence[str] = ("postgres",),
        listen_addresses: Sequence[str] = (),
        ignore_startup_parameters: Sequence[str] = ("extra_float_digits", "options"),
        settings: Mapping[str, str | int] | None = None,
    ) -> None:
        self.target = target
        self.pool_mode = pool_mode
        self.default_pool_size = default_pool_size
        self.max_client_conn = max_client_conn
        self.users = tuple(users)
        self.listen_addresses = tuple(listen_addresses)
        self.ignore_startup_parameters = tuple(ignore_startup_parameters)
        self.settings = dict(settings or {})
        self._base: Path | None = None
        self._port: int | None = None
        self._pid: int | None = None
        self._user: OsUser | None = None

    @property
    def base_dir(self) -> Path:
        """The temp dir of its configuration, auth file, pid file and log."""
        if self._base is None:
            raise RuntimeError("PgBouncer is not open: use it as a context manager first")
        return self._base

    @property
    def config_path(self) -> Path:
        """The ``pgbouncer.ini`` it runs with."""
        return self.base_dir / "pgbouncer.ini"

    @property
    def log_path(self) -> Path:
        """PgBouncer's log file."""
        return self.base_dir / "pgbouncer.log"

    @property
    def port(self) -> int:
        """The TCP port clients connect to."""
        if self._port is None:
            raise RuntimeError("PgBouncer is not open: use it as a context manager first")
        return self._port

    @property
    def pid(self) -> int | None:
        """The process id while it runs, else None."""
        return self._pid if self._pid is not None and is_alive(self._pid) else None

    @property
    def running(self) -> bool:
        """Whether PgBouncer runs."""
        return self.pid is not None

    def url(self, database: str = "postgres", user: str = "postgres", **query: str) -> str:
        """A ``postgresql://`` URL of ``database`` through PgBouncer, as ``user``."""
        return postgres_url(self.host, self.port, database, user, query)

    def show(self, what: str) -> list[dict[str, str]]:
        """``SHOW <what>`` on the admin console (``pools``, ``config``, ...), one dict a row."""
        psql = require_binary("/usr/bin/psql", "postgresql-client")
        result = run(
            [psql, "-X", "-q", "--csv", "-h", self.host, "-p", str(self.port), "-U", self.users[0],
             "-d", ADMIN_DATABASE, "-c", f"SHOW {what}"],
            what=f"SHOW {what} on PgBouncer's admin console",
            timeout=15,
        )  # fmt: skip
        return list(csv.DictReader(result.stdout.splitlines()))

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def open(self, timeout: float = 10.0) -> None:
        """Write the configuration, start PgBouncer as a daemon, wait until it accepts.

        Nothing happens if it is open already.
        """
        if self._base is not None:
            return
        binary = require_binary(PGBOUNCER, "pgbouncer")
        self._user = server_user()
        self._base = private_dir("ecl-pgbouncer-", self._user)
        try:
            self._port = free_port((self.host, *self.listen_addresses))
            self._write_config()
            self._user.run(binary, "-d", "-q", self.config_path, what="pgbouncer -d")
            self._wait_ready(timeout)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop PgBouncer (SIGTERM, then SIGKILL) and remove its files; safe to call twice."""
        if self._base is None:
            return
        pid = self.pid
        if pid is not None:
            # Root signals the unprivileged user's daemon directly; SIGTERM drops clients at once.
            send_signal(pid, signal.SIGTERM)
            wait_gone([pid], timeout=5.0)
        leftover = kill_all(processes_under(self._base))
        remove_tree(self._base)
        self._base = None
        self._pid = None
        if leftover:
            fail(f"PgBouncer processes {leftover} would not die")

    def _wait_ready(self, timeout: float) -> None:
        pid_file = self.base_dir / "pgbouncer.pid"
        deadline = time.monotonic() + timeout
        while True:
            if self._pid is None and pid_file.exists() and pid_file.read_text().strip():
                self._pid = int(pid_file.read_text())
            if self._pid is not None and _accepts(self.host, self.port):
                return
            if time.monotonic() > deadline or (self._pid is not None and not self.running):
                fail(
                    f"PgBouncer on port {self.port} did not start; its log ends with:\n"
                    f"{tail(self.log_path)}"
                )
            time.sleep(0.02)

    def _write_config(self) -> None:
        assert self._user is not None
        server = _server_of(self.target)
        database = f"host={server.host} port={server.port}"
        if server.password:
            quoted = server.password.replace("'", "''")
            database += f" password='{quoted}'"
        settings: dict[str, str | int] = {
            "listen_addr": ",".join((self.host, *self.listen_addresses)),
            "listen_port": self.port,
            "unix_socket_dir": str(self.base_dir),
            "auth_type": "trust",
            "auth_file": str(self.base_dir / "userlist.txt"),
            "admin_users": ",".join(self.users),
            "stats_users": ",".join(self.users),
            "pool_mode": self.pool_mode,
            "default_pool_size": self.default_pool_size,
            "max_client_conn": self.max_client_conn,
            "ignore_startup_parameters": ",".join(self.ignore_startup_parameters),
            "pidfile": str(self.base_dir / "pgbouncer.pid"),
            "logfile": str(self.log_path),
            "server_login_retry": 1,
        }
        if server.ca_path is not None:
            settings |= {"server_tls_sslmode": "verify-full", "server_tls_ca_file": server.ca_path}
        settings |= self.settings
        lines = ["[databases]", f"* = {database}", "[pgbouncer]"]
        lines += [f"{name} = {value}" for name, value in settings.items()]
        for path, text in (
            (self.config_path, "\n".join(lines) + "\n"),
            (self.base_dir / "userlist.txt", "".join(f'"{user}" ""\n' for user in self.users)),
        ):
            path.write_text(text)
            path.chmod(0o600)
            self._user.own(path)


@attrs.frozen
class _Server:
    host: str
    port: int
    password: str | None
    ca_path: str | None


def _server_of(target: Cluster | str) -> _Server:
    if isinstance(target, Cluster):
        ca = str(target.ca_path) if target.ssl_required else None
        return _Server(target.host, target.port, None, ca)
    parts = urlsplit(target)
    password = unquote(parts.password) if parts.password else None
    return _Server(parts.hostname or "127.0.0.1", parts.port or 5432, password, None)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
