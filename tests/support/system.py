"""What the throwaway servers need from the machine: an unprivileged user, free ports, processes.

PostgreSQL and PgBouncer both refuse to run as root. Run as root (as CI is),
the servers run as the system user :data:`SERVER_OS_USER`, created on first
use, through ``runuser``; run as anyone else, they run as that user. Whatever
cannot be had fails the test loudly with :func:`fail`, naming what to install
or change; nothing here skips.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote, urlencode

import attrs
import pytest

SERVER_OS_USER = "ecl-pgtest"
"""The system user the servers run as when the tests run as root."""
SCRATCH_VARIABLE = "ECL_TEST_SCRATCH_DIR"
"""Overrides where the servers' temp dirs are made (default: /dev/shm, else the temp dir)."""

# Ports are drawn below Linux's ephemeral range (32768-60999), so that no
# outgoing connection's local port takes one between the draw and the bind.
_PORT_RANGE = (15000, 32000)
_TAIL_CHARS = 2000


def fail(message: str) -> NoReturn:
    """Fail the running test with ``message`` and no traceback: the message says what to fix."""
    pytest.fail(message, pytrace=False)


def require_binary(path: str | Path, package: str) -> Path:
    """The executable at ``path`` (or found on ``PATH`` by that name); fail naming its package."""
    candidate = Path(path)
    if candidate.is_absolute() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(candidate.name)
    if found is None:
        fail(
            f"{candidate} is missing: install the Debian package {package} "
            f"(apt-get install --no-install-recommends {package})."
        )
    return Path(found)


def postgres_url(
    host: str, port: int, database: str, user: str, query: Mapping[str, str] | None = None
) -> str:
    """``postgresql://user@host:port/database?query``, quoted (an IPv6 host in brackets)."""
    netloc = f"[{host}]" if ":" in host else host
    url = f"postgresql://{quote(user, safe='')}@{netloc}:{port}/{quote(database, safe='')}"
    return f"{url}?{urlencode(query)}" if query else url


def tail(path: Path, chars: int = _TAIL_CHARS) -> str:
    """The last ``chars`` characters of a log file, or a note that there is none."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return f"(no {path.name} was written)"


@attrs.frozen
class OsUser:
    """The operating-system user the servers' binaries run as."""

    name: str
    uid: int
    gid: int
    switch: bool
    """True when the tests run as root and every command goes through ``runuser``."""

    def command(self, *argv: str | Path) -> list[str]:
        """``argv`` as this user runs it."""
        words = [str(word) for word in argv]
        if not self.switch:
            return words
        runuser = require_binary("/usr/sbin/runuser", "util-linux")
        return [str(runuser), "-u", self.name, "--", *words]

    def own(self, path: Path) -> None:
        """Give ``path`` to this user (a no-op when the tests already run as it)."""
        if self.switch:
            os.chown(path, self.uid, self.gid)

    def run(
        self, *argv: str | Path, what: str, timeout: float = 60.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as this user in a plain environment; fail naming ``what`` if it fails."""
        return run(self.command(*argv), what=what, timeout=timeout, check=check)


def run(
    argv: Sequence[str | Path], *, what: str, timeout: float = 60.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with a plain environment (no ``PG*`` variables of the caller's leak in)."""
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
    try:
        result = subprocess.run(  # the arguments are ours, never a shell
            [str(word) for word in argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=environment,
            cwd="/",
            check=False,
        )
    except subprocess.TimeoutExpired:
        fail(f"{what}: no answer after {timeout:.0f} s ({argv[0]})")
    if check and result.returncode != 0:
        fail(
            f"{what} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-_TAIL_CHARS:]}"
        )
    return result


@functools.cache
def server_user() -> OsUser:
    """Who runs the servers: :data:`SERVER_OS_USER` (created if missing) as root, else oneself."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return OsUser(name=me.pw_name, uid=me.pw_uid, gid=me.pw_gid, switch=False)
    entry = _existing_user(SERVER_OS_USER) or _create_user(SERVER_OS_USER)
    return OsUser(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, switch=True)


def _existing_user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _create_user(name: str) -> pwd.struct_passwd:
    useradd = require_binary("/usr/sbin/useradd", "passwd")
    error = ""
    # Another test process may be adding the same user (or holding /etc/passwd's lock).
    for _ in range(5):
        result = run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            what=f"useradd {name}",
            check=False,
        )
        entry = _existing_user(name)
        if entry is not None:
            return entry
        error = result.stderr.strip()
        time.sleep(0.2)
    fail(
        f"cannot create the system user {name!r} that runs the throwaway PostgreSQL and "
        f"PgBouncer (both refuse root): {error}. Create it with "
        f"`useradd --system --no-create-home {name}`, or run the tests as an unprivileged user."
    )


def scratch_root() -> Path:
    """Where the servers' temp dirs go: :data:`SCRATCH_VARIABLE`, else /dev/shm, else the temp dir.

    A memory file system first: initdb creates some 1,500 files, three times
    faster there than on this machine's disk. The path stays short, since a
    unix socket's path in it must stay under 108 bytes.
    """
    configured = os.environ.get(SCRATCH_VARIABLE)
    if configured:
        return Path(configured)
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    parent = Path(tempfile.gettempdir())
    return parent if len(str(parent)) <= 40 else Path("/tmp")  # a long TMPDIR: sockets break


def private_dir(prefix: str, owner: OsUser) -> Path:
    """A fresh directory under :func:`scratch_root`, mode 0700, owned by ``owner``."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=scratch_root()))
    owner.own(path)
    return path


def free_port(addresses: Sequence[str] = ("127.0.0.1",)) -> int:
    """A TCP port that nothing listens on at any of ``addresses``; fail if one is unusable."""
    for address in addresses:
        _check_address(address)
    for _ in range(100):
        port = random.randrange(*_PORT_RANGE)  # a port, not a secret
        if all(_bindable(address, port) for address in addresses):
            return port
    fail(f"no free TCP port in {_PORT_RANGE} on {', '.join(addresses)} after 100 tries")


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _bindable(address: str, port: int) -> bool:
    with socket.socket(_family(address), socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def _check_address(address: str) -> None:
    with socket.socket(_family(address), socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as error:
            fail(
                f"cannot listen on {address} ({error.strerror}): no interface of this network "
                "namespace has that address. Set up the veth pair (ip addr add ...) first."
            )


def is_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the command name, which is in parentheses and may hold spaces.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def processes_under(root: Path) -> list[int]:
    """Live processes whose working directory, or one of whose arguments, lies under ``root``.

    PostgreSQL's processes all work in their data directory; PgBouncer is
    started with its configuration file's path. Processes that cannot be
    inspected (another user's, when not root) are left out.
    """
    prefix = str(root).rstrip("/") + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{cwd}/".startswith(prefix) or any(
            os.fsdecode(argument).startswith(prefix) for argument in arguments
        ):
            found.append(int(entry.name))
    return [pid for pid in found if is_alive(pid)]


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive; those still alive after ``timeout`` seconds."""
    remaining = list(pids)
    deadline = time.monotonic() + timeout
    while remaining:
        remaining = [pid for pid in remaining if is_alive(pid)]
        if not remaining or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return remaining


def send_signal(pid: int, signum: signal.Signals) -> None:
    """Send ``signum`` to ``pid``; nothing if it has exited already."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def kill_all(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """SIGKILL ``pids`` and wait for them; those that still would not die."""
    targets = list(pids)
    for pid in targets:
        send_signal(pid, signal.SIGKILL)
    return wait_gone(targets, timeout)


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything in it; fail if something stays."""
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        shutil.rmtree(path)  # again, to fail with the reason
