"""Running the dashboard: where it may listen, and uvicorn on a socket bound beforehand."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

import uvicorn

from ecl_persistence.config import DatabaseConfig
from ecl_persistence.web.app import create_app
from ecl_persistence.web.guard import LOOPBACK_HOSTS

__all__ = ["MIN_TOKEN_LENGTH", "bind", "check_exposure", "is_loopback", "serve_on"]

MIN_TOKEN_LENGTH = 16
"""The shortest ``--token`` accepted."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None, insecure_no_auth: bool) -> None:
    """Refuse (``ValueError``) to listen beyond loopback without a token or the explicit opt-out."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"--token must be at least {MIN_TOKEN_LENGTH} characters")
    if token is not None and insecure_no_auth:
        raise ValueError("--token and --insecure-no-auth exclude each other")
    if not is_loopback(host) and token is None and not insecure_no_auth:
        raise ValueError(
            f"{host} is reachable from other machines: give --token (or ECL_DB_SERVE_TOKEN), "
            "or --insecure-no-auth to serve the data to anyone who can connect"
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (``0``: any free port); ``OSError`` if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve_on(
    sock: socket.socket,
    config: DatabaseConfig,
    *,
    payloads: bool,
    token: str | None,
    insecure_no_auth: bool,
    configure: Callable[[uvicorn.Server], None] | None = None,
) -> None:
    """Serve the dashboard on ``sock`` until interrupted (or ``server.should_exit``).

    Without a token, a loopback server answers only requests addressed to
    this machine's names; ``--insecure-no-auth`` answers any.
    """
    host = str(sock.getsockname()[0])
    hosts = None if insecure_no_auth else {*LOOPBACK_HOSTS, host, f"[{host}]"}
    app = create_app(config, payloads=payloads, token=token, hosts=hosts)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            ws="none",
            lifespan="on",
            server_header=False,
        )
    )
    if configure is not None:
        configure(server)
    server.run(sockets=[sock])
