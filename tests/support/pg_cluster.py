"""Throwaway PostgreSQL clusters: TLS, crashes, restarts and replicas, never on the shared server.

```python
with Cluster(ssl=True) as cluster:             # initdb, configure, start: about a second
    url = cluster.url("postgres")              # postgresql://postgres@127.0.0.1:<port>/postgres
    cluster.kill()                             # SIGKILL the postmaster
    cluster.restart()                          # crash recovery, same port
    replica = cluster.replica()                # streaming, in recovery, closed with its primary
# stopped, and its directory removed, even when the test failed
```

Each cluster lives in a fresh temp dir owned by the user that runs it (see
:mod:`tests.support.system`): the data directory, the unix socket, the log,
the certificates. It listens on 127.0.0.1 on a free port (and on any extra
addresses given), trusts local and loopback connections, and trades
durability for speed (``fsync=off``). Its fixtures are in
:mod:`tests.support.fixtures`: ``pg_cluster``, one per session for the tests
that leave it as they found it, and ``pg_cluster_factory``, clusters of a
test's own.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import attrs
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
    server_user,
    tail,
    wait_gone,
)

BINDIR_VARIABLE = "ECL_TEST_PG_BINDIR"
"""Overrides where the server's binaries are (default: ``pg_config --bindir``)."""
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres", "pg_basebackup", "psql", "pg_isready")
StopMode = Literal["smart", "fast", "immediate"]
_BIND_ERRORS = ("could not bind", "could not create any TCP/IP sockets")
_START_TRIES = 3
_HBA_DATABASES = ("all", "replication")

_open_clusters: set[Cluster] = set()


def postgres_bindir() -> Path:
    """The directory of the PostgreSQL server binaries; fail naming the package if absent."""
    candidates = []
    if os.environ.get(BINDIR_VARIABLE):
        candidates.append(Path(os.environ[BINDIR_VARIABLE]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = run([pg_config, "--bindir"], what="pg_config --bindir", check=False)
        candidates.append(Path(result.stdout.strip()))
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True
    )
    found = next(
        (path for path in candidates if all(os.access(path / b, os.X_OK) for b in SERVER_BINARIES)),
        None,
    )
    if found is None:
        fail(
            f"the PostgreSQL server binaries ({', '.join(SERVER_BINARIES)}) were not found in "
            f"{', '.join(map(str, candidates)) or '/usr/lib/postgresql/*/bin'}: "
            "install the Debian package postgresql (apt-get install --no-install-recommends "
            f"postgresql), or set {BINDIR_VARIABLE} to the directory that holds them."
        )
    return found


@attrs.frozen
class Certificates:
    """A test CA, a server certificate it signed, and a second, unrelated CA, in ``directory``."""

    directory: Path

    @property
    def ca_path(self) -> Path:
        """The CA that signed the server's certificate: trust it to verify the server."""
        return self.directory / "ca.crt"

    @property
    def wrong_ca_path(self) -> Path:
        """A CA that signed nothing here: trusting only it must fail verification."""
        return self.directory / "wrong-ca.crt"

    @property
    def cert_path(self) -> Path:
        """The server's certificate."""
        return self.directory / "server.crt"

    @property
    def key_path(self) -> Path:
        """The server's private key (mode 0600)."""
        return self.directory / "server.key"

    @classmethod
    def make(cls, directory: Path, hosts: Sequence[str] = ()) -> Certificates:
        """Make them with the ``openssl`` command, valid for a week.

        The server's certificate names ``localhost``, ``127.0.0.1`` and ``hosts``.
        """
        made = cls(directory)
        openssl = require_binary("/usr/bin/openssl", "openssl")
        directory.mkdir(mode=0o700)
        names = ["DNS:localhost", "IP:127.0.0.1", *(_san(host) for host in hosts)]
        config = directory / "openssl.cnf"
        config.write_text(
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = ecl-test\n"
            "[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
            "subjectKeyIdentifier = hash\n"
            "[server]\nbasicConstraints = critical,CA:FALSE\n"
            "keyUsage = critical,digitalSignature,keyEncipherment\nextendedKeyUsage = serverAuth\n"
            f"subjectAltName = {','.join(names)}\n"
            "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
        )
        key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for name, subject in (("ca", "ecl-test CA"), ("wrong-ca", "ecl-test unrelated CA")):
            run(
                [openssl, "req", "-x509", *key, "-config", config, "-extensions", "ca",
                 "-subj", f"/CN={subject} {secrets.token_hex(4)}", "-days", "7",
                 "-keyout", directory / f"{name}.key", "-out", directory / f"{name}.crt"],
                what=f"openssl: the {subject}",
            )  # fmt: skip
        request = directory / "server.csr"
        run(
            [openssl, "req", "-new", *key, "-config", config, "-subj", "/CN=localhost",
             "-keyout", made.key_path, "-out", request],
            what="openssl: the server's key",
        )  # fmt: skip
        run(
            [openssl, "x509", "-req", "-in", request, "-CA", made.ca_path,
             "-CAkey", directory / "ca.key", "-set_serial", str(secrets.randbits(63)),
             "-days", "7", "-extfile", config, "-extensions", "server", "-out", made.cert_path],
            what="openssl: the server's certificate",
        )  # fmt: skip
        made.key_path.chmod(0o600)
        return made

    def copy_to(self, directory: Path) -> Certificates:
        """The same certificates, copied into ``directory`` (for a replica of its own)."""
        shutil.copytree(self.directory, directory)
        return Certificates(directory)

    def give_to(self, user: OsUser) -> None:
        """Hand the files to the user that runs the server (it must own its key)."""
        for path in (self.directory, *self.directory.iterdir()):
            user.own(path)


def _san(host: str) -> str:
    return f"IP:{host}" if host.replace(".", "").isdigit() or ":" in host else f"DNS:{host}"


class Cluster:
    """A PostgreSQL cluster of its own, in a temp dir, run by an unprivileged user.

    Use it as a context manager (or :meth:`open` and :meth:`close`). The
    server runs from :meth:`open` on; :meth:`close` stops it hard and removes
    every file, and is safe to call twice. A cluster made by :meth:`replica`
    is closed with its primary.

    Options: ``max_connections``; ``ssl`` makes a CA and a server certificate
    (:attr:`ca_path`, :attr:`wrong_ca_path`) and turns TLS on;
    ``ssl_required`` also refuses TCP connections without TLS;
    ``listen_addresses`` are extra addresses to listen on besides 127.0.0.1
    (each must be on an interface already, such as a veth end's 192.0.2.1);
    ``trusted_networks`` are extra client networks (CIDR) let in by trust,
    besides 127.0.0.0/8 and ::1; ``settings`` are extra ``postgresql.conf``
    lines, name to value.
    """

    host = "127.0.0.1"
    """The address :meth:`url` names (the cluster listens on it always)."""

    def __init__(
        self,
        *,
        max_connections: int = 20,
        ssl: bool = False,
        ssl_required: bool = False,
        listen_addresses: Sequence[str] = (),
        trusted_networks: Sequence[str] = (),
        settings: Mapping[str, str | int | float] | None = None,
    ) -> None:
        if ssl_required and not ssl:
            raise ValueError("ssl_required=True needs ssl=True")
        self.max_connections = max_connections
        self.ssl = ssl
        self.ssl_required = ssl_required
        self.listen_addresses = tuple(listen_addresses)
        self.trusted_networks = tuple(trusted_networks)
        self.settings = dict(settings or {})
        self.primary: Cluster | None = None
        """The cluster this one replicates, for a replica made by :meth:`replica`."""
        self._replicas: list[Cluster] = []
        self._base: Path | None = None
        self._port: int | None = None
        self._pid: int | None = None
        self._certificates: Certificates | None = None
        self._user: OsUser | None = None
        self._bindir: Path | None = None

    # -- where things are ------------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        """The temp dir that holds everything of this cluster; gone after :meth:`close`."""
        if self._base is None:
            raise RuntimeError("the cluster is not open: use it as a context manager first")
        return self._base

    @property
    def data_dir(self) -> Path:
        """The data directory (``PGDATA``)."""
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        """The directory of the server's unix socket."""
        return self.base_dir / "socket"

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.base_dir / "postgresql.log"

    @property
    def port(self) -> int:
        """The TCP port, the same on every address and across restarts."""
        if self._port is None:
            raise RuntimeError("the cluster is not open: use it as a context manager first")
        return self._port

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs, else None."""
        return self._pid if self._pid is not None and is_alive(self._pid) else None

    @property
    def running(self) -> bool:
        """Whether the postmaster is alive (it may still be starting up)."""
        return self.pid is not None

    @property
    def ca_path(self) -> Path:
        """The CA file that verifies the server's certificate (``sslrootcert``)."""
        return self._tls().ca_path

    @property
    def wrong_ca_path(self) -> Path:
        """An unrelated CA's file: a client trusting only it must refuse the server."""
        return self._tls().wrong_ca_path

    def _tls(self) -> Certificates:
        if self._certificates is None:
            raise RuntimeError("this cluster has no TLS: make it with Cluster(ssl=True)")
        return self._certificates

    def url(
        self,
        database: str = "postgres",
        user: str = "postgres",
        *,
        host: str | None = None,
        **query: str,
    ) -> str:
        """A ``postgresql://`` URL of ``database`` as ``user`` (trusted: no password).

        ``host`` is one of the cluster's addresses (default 127.0.0.1); ``query``
        adds libpq parameters, e.g. ``sslmode="verify-full", sslrootcert=str(ca)``.
        """
        return postgres_url(host or self.host, self.port, database, user, query)

    def ssl_context(self, ca: Path | None = None) -> ssl.SSLContext:
        """A client TLS context that verifies the server's certificate and name (verify-full).

        It trusts :attr:`ca_path`, or only ``ca`` when given (e.g.
        :attr:`wrong_ca_path`, to see verification fail).
        """
        return ssl.create_default_context(cafile=str(ca or self.ca_path))

    # -- lifecycle -------------------------------------------------------------------------

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

    def open(self) -> None:
        """Make the temp dir, ``initdb`` into it, configure and start the server.

        Nothing happens if it is open already (a replica is returned open, and
        ``with cluster.replica() as replica:`` closes it).
        """
        if self._base is not None:
            return
        self._prepare()
        try:
            self._server("initdb", "-D", self.data_dir, "-U", "postgres", "--auth=trust",
                         "-E", "UTF8", "--locale=C", "--no-sync", what="initdb")  # fmt: skip
            self._start_on_a_free_port()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the replicas, stop the server at once, kill what is left, remove the files."""
        for replica in self._replicas:
            replica.close()
        self._replicas.clear()
        if self._base is None:
            return
        if self.running:
            self._server("pg_ctl", "stop", "-D", self.data_dir, "-m", "immediate", "-w",
                         what="pg_ctl stop", check=False)  # fmt: skip
        leftover = kill_all(processes_under(self._base))
        if not leftover:
            self._remove_crashed_shared_memory()
        remove_tree(self._base)
        _open_clusters.discard(self)
        self._base = None
        self._pid = None
        if leftover:
            fail(f"processes {leftover} of the cluster on port {self._port} would not die")

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (after :meth:`stop` or :meth:`kill`) and wait until it answers."""
        try:
            self._start(timeout)
        except _StartFailed as error:
            fail(str(error))

    def _start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        # Backends orphaned by kill() still hold the old shared memory: a new
        # postmaster refuses to start until they have noticed and exited.
        if kill_all(wait_gone(processes_under(self.data_dir), timeout=10.0)):
            fail(f"processes of the killed cluster on port {self.port} would not die")
        self._release_stale_locks()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        result = self._server("pg_ctl", "start", "-D", self.data_dir, "-l", self.log_path,
                              "-w", "-t", str(int(timeout)), "-s",
                              what="pg_ctl start", check=False, timeout=timeout + 10)  # fmt: skip
        if result.returncode == 0:
            self._pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        with contextlib.suppress(FileNotFoundError), self.log_path.open("rb") as log:
            log.seek(offset)
            new_log = log.read().decode(errors="replace")
        port_taken = any(error in new_log for error in _BIND_ERRORS)
        if result.returncode != 0 or port_taken:
            raise _StartFailed(
                f"PostgreSQL on port {self.port} did not start: "
                f"{result.stderr.strip()}\n{new_log[-2000:]}",
                port_taken=port_taken,
            )
        self.wait_ready(timeout)

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server with ``pg_ctl stop -m mode`` and wait until it is down."""
        if not self.running:
            return
        self._server("pg_ctl", "stop", "-D", self.data_dir, "-m", mode, "-w", "-t", "30",
                     what=f"pg_ctl stop -m {mode}", timeout=40)  # fmt: skip
        self._pid = None

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; its backends notice and exit soon after."""
        pid = self.pid
        if pid is None:
            raise RuntimeError(f"the cluster on port {self.port} is not running")
        os.kill(pid, signal.SIGKILL)
        if wait_gone([pid], timeout=10.0):
            fail(f"the postmaster {pid} survived SIGKILL")

    def restart(self) -> None:
        """Stop the server (fast) if it runs, then start it again on the same port."""
        self.stop("fast")
        self.start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the server accepts connections; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = self._client("pg_isready", "-q", "-t", "2", what="pg_isready", check=False)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                fail(
                    f"PostgreSQL on port {self.port} does not accept connections after "
                    f"{timeout:.0f} s; its log ends with:\n{tail(self.log_path)}"
                )
            time.sleep(0.05)

    # -- SQL -------------------------------------------------------------------------------

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with ``psql`` over the unix socket; its unaligned, tuples-only output."""
        result = self._client("psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1",
                              "-d", database, "-c", sql, what=f"psql {sql[:60]!r}")  # fmt: skip
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        """Create the database ``name`` and return its URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    # -- replication -----------------------------------------------------------------------

    def replica(self, *, listen_addresses: Sequence[str] = (), timeout: float = 30.0) -> Cluster:
        """A streaming hot-standby replica of this running cluster, on its own port and dir.

        Made with ``pg_basebackup -R``; returned once it accepts connections and
        its WAL receiver streams. It is closed with this cluster (or before).
        """
        if not self.running:
            raise RuntimeError(f"the cluster on port {self.port} must run to be replicated")
        replica = Cluster(
            max_connections=self.max_connections,
            ssl=self.ssl,
            ssl_required=self.ssl_required,
            listen_addresses=listen_addresses,
            trusted_networks=self.trusted_networks,
            settings=self.settings,
        )
        replica.primary = self
        self._replicas.append(replica)
        replica._prepare(certificates_from=self)
        try:
            replica._server("pg_basebackup", "-D", replica.data_dir, "-h", self.socket_dir,
                            "-p", str(self.port), "-U", "postgres", "-X", "stream", "-c", "fast",
                            "-R", "--no-sync", "--no-manifest", what="pg_basebackup",
                            timeout=timeout)  # fmt: skip
            replica._start_on_a_free_port()
            replica._wait_streaming(timeout)
        except BaseException:
            replica.close()
            raise
        return replica

    def _wait_streaming(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.psql("SELECT status FROM pg_stat_wal_receiver") != "streaming":
            if time.monotonic() > deadline:
                fail(f"the replica on port {self.port} does not stream:\n{tail(self.log_path)}")
            time.sleep(0.05)

    # -- inside ----------------------------------------------------------------------------

    def _prepare(self, certificates_from: Cluster | None = None) -> None:
        self._user = server_user()
        self._bindir = postgres_bindir()
        self._base = private_dir("ecl-pg-", self._user)
        _open_clusters.add(self)
        self.socket_dir.mkdir(mode=0o700)
        self._user.own(self.socket_dir)
        if not self.ssl:
            return
        tls = self.base_dir / "tls"
        if certificates_from is None:
            self._certificates = Certificates.make(tls, self.listen_addresses)
        else:
            self._certificates = certificates_from._tls().copy_to(tls)
        self._certificates.give_to(self._user)

    def _configure(self) -> None:
        """Write the settings of this cluster (a replica's replace the copied primary's)."""
        transport = "hostssl" if self.ssl_required else "host"
        networks = ("127.0.0.0/8", "::1/128", *self.trusted_networks)
        hba = ["local all all trust", "local replication all trust"]
        hba += [f"{transport} {db} all {net} trust" for net in networks for db in _HBA_DATABASES]
        (self.data_dir / "pg_hba.conf").write_text("\n".join(hba) + "\n")
        settings: dict[str, str | int | float] = {
            "listen_addresses": ",".join((self.host, *self.listen_addresses)),
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": self.max_connections,
            "shared_buffers": f"{16 + self.max_connections // 32}MB",
            # Dynamic shared memory as files in the data directory, not in /dev/shm:
            # what a killed postmaster leaves there goes with the directory.
            "dynamic_shared_memory_type": "mmap",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "wal_level": "replica",
            "max_wal_senders": 4,
            "wal_keep_size": "64MB",
            "hot_standby": "on",
            "cluster_name": f"ecl-test-{self.port}",
        }
        if self._certificates is not None:
            settings |= {
                "ssl": "on",
                "ssl_cert_file": str(self._certificates.cert_path),
                "ssl_key_file": str(self._certificates.key_path),
            }
        settings |= self.settings
        (self.data_dir / "ecl_cluster.conf").write_text(
            "".join(f"{name} = {_conf_value(value)}\n" for name, value in settings.items())
        )
        main = self.data_dir / "postgresql.conf"
        if "include 'ecl_cluster.conf'" not in main.read_text():
            with main.open("a") as conf:
                conf.write("\ninclude 'ecl_cluster.conf'\n")

    def _start_on_a_free_port(self) -> None:
        for attempt in range(_START_TRIES):
            self._port = free_port((self.host, *self.listen_addresses))
            self._configure()
            try:
                self._start()
            except _StartFailed as error:
                self.stop("immediate")
                if not error.port_taken or attempt == _START_TRIES - 1:
                    fail(str(error))
            else:
                return

    def _release_stale_locks(self) -> None:
        """Let a new postmaster past the lock files of one that was killed and is now a zombie.

        Until init reaps it, ``kill(pid, 0)`` succeeds on the dead postmaster, so
        the new one would take its stale ``postmaster.pid`` (and socket lock) for
        a live server's. Their pid is replaced by one that cannot exist; the rest
        stays, so the new postmaster still removes the old shared memory segment.
        """
        for lock in (self.data_dir / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*.lock")):
            if not lock.exists():
                continue
            lines = lock.read_text().split("\n")
            pid = int(lines[0])
            if Path(f"/proc/{pid}").exists() and not is_alive(pid):
                lines[0] = str(int(Path("/proc/sys/kernel/pid_max").read_text()) + 1)
                lock.write_text("\n".join(lines))

    def _remove_crashed_shared_memory(self) -> None:
        """Remove the System V segment a killed, never restarted postmaster left behind."""
        lock = self.data_dir / "postmaster.pid"
        if not lock.exists():
            return
        # Line 7 of postmaster.pid: the segment's key and id.
        key_and_id = lock.read_text().split("\n")[6].split()
        if len(key_and_id) == 2:
            # As the server's user: it can remove that user's segments and no one else's.
            ipcrm = require_binary("/usr/bin/ipcrm", "util-linux")
            assert self._user is not None
            self._user.run(ipcrm, "-m", key_and_id[1], what="ipcrm", check=False)

    def _server(
        self,
        binary: str,
        *arguments: str | Path,
        what: str,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run a server binary as the user that owns the cluster."""
        assert self._user is not None
        assert self._bindir is not None
        command = (self._bindir / binary, *arguments)
        return self._user.run(*command, what=what, check=check, timeout=timeout)

    def _client(
        self, binary: str, *arguments: str | Path, what: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a client binary (as the tests' own user) against the unix socket."""
        assert self._bindir is not None
        command = (self._bindir / binary, "-h", self.socket_dir, "-p", str(self.port))
        return run([*command, "-U", "postgres", *arguments], what=what, check=check, timeout=30)


class _StartFailed(Exception):
    def __init__(self, message: str, *, port_taken: bool) -> None:
        super().__init__(message)
        self.port_taken = port_taken


def _conf_value(value: str | int | float) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


@atexit.register
def _close_forgotten_clusters() -> None:
    # A run interrupted before its fixtures' teardown must not leave servers behind.
    for cluster in list(_open_clusters):
        try:
            cluster.close()
        except BaseException as error:  # pytest.fail's exception, too: report it and go on
            print(f"could not close a test cluster at exit: {error}", file=sys.stderr)
