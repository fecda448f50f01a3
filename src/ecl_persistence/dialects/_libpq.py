"""libpq's URL parameters, read into the arguments asyncpg's ``connect()`` takes.

Hosted PostgreSQL hands out URLs such as
``postgresql://user:pw@host/db?sslmode=require``. asyncpg reads no query
parameters of its own when SQLAlchemy connects, so each one libpq defines
and this package understands is mapped here; any other is refused with a
:class:`ValidationError` that names the parameter, never its value.

===========================  =================================================
``sslmode``                  ``disable``, ``allow``, ``prefer``, ``require``,
                             ``verify-ca``, ``verify-full`` (as libpq)
``sslrootcert``              CA file that verifies the server (or ``system``)
``sslcert``, ``sslkey``      client certificate and its key
``connect_timeout``          seconds to wait for a connection
``application_name``         the sessions' ``application_name``
``options``                  ``-c name=value`` settings for the sessions
``target_session_attrs``     ``any``, ``read-write``, ``read-only``,
                             ``primary``, ``standby``, ``prefer-standby``
===========================  =================================================

and one of the package's own: ``pgbouncer`` (``true``/``false``, ``1``/``0``),
as ``DatabaseConfig(pgbouncer=...)``; it never reaches the driver.
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from sqlalchemy.engine import URL

from ecl_persistence.errors import ValidationError

__all__ = [
    "LIBPQ_PARAMETERS",
    "PACKAGE_PARAMETERS",
    "ConnectArguments",
    "check_query",
    "connect_arguments",
    "pgbouncer_flag",
]

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")
LIBPQ_PARAMETERS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "application_name",
    "options",
    "target_session_attrs",
)
"""The libpq parameters a URL may carry."""
# Read by SQLAlchemy's asyncpg dialect itself: hosts and ports (several for a
# multi-host URL, or a socket directory) and its statement cache.
_DIALECT_PARAMETERS = ("host", "port", "prepared_statement_cache_size")
# The package's own parameters, removed before the driver sees the URL.
PACKAGE_PARAMETERS = ("pgbouncer",)
_FLAGS = {"true": True, "1": True, "false": False, "0": False}
_SETTING = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
# libpq's default CA file for sslmode=verify-ca and verify-full.
_DEFAULT_ROOT = Path("~/.postgresql/root.crt")


@attrs.frozen
class ConnectArguments:
    """What a URL's libpq parameters ask of asyncpg's ``connect()``."""

    url: URL
    """The URL without them, for SQLAlchemy."""
    ssl: ssl.SSLContext | str | bool | None
    """asyncpg's ``ssl``: a context, one of its mode names, False, or None (its default)."""
    timeout: float | None
    """``connect_timeout`` in seconds, if given."""
    server_settings: dict[str, str]
    """``application_name`` and the ``-c`` settings of ``options``."""
    target_session_attrs: str | None
    """Which server of a multi-host URL to use."""


def _single(query: Mapping[str, Any], name: str) -> str | None:
    value = query.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"the database URL gives its {name} parameter more than once")
    return value


def check_query(url: URL) -> None:
    """Refuse a query parameter this package does not understand, or a malformed value.

    Messages name the parameter, never its value. Files are not read here.
    """
    for name in url.query:
        if name not in (*LIBPQ_PARAMETERS, *_DIALECT_PARAMETERS, *PACKAGE_PARAMETERS):
            raise ValidationError(
                f"the database URL has the parameter {name[:60]!r}, which ecl-persistence does "
                f"not understand; it understands {', '.join(LIBPQ_PARAMETERS)}"
            )
    _server_settings(url.query)
    _timeout(url.query)
    pgbouncer_flag(url)
    mode = _single(url.query, "sslmode")
    if mode is not None and mode not in SSL_MODES:
        raise ValidationError(f"sslmode must be one of {', '.join(SSL_MODES)}")
    if mode in (None, "disable", "allow", "prefer") and (
        _single(url.query, "sslcert") or _single(url.query, "sslkey")
    ):
        raise ValidationError("sslcert and sslkey need sslmode=require, verify-ca or verify-full")
    attrs_ = _single(url.query, "target_session_attrs")
    if attrs_ is not None and attrs_ not in _SESSION_ATTRS:
        raise ValidationError(f"target_session_attrs must be one of {', '.join(_SESSION_ATTRS)}")


def connect_arguments(url: URL) -> ConnectArguments:
    """Read the libpq parameters of ``url`` (checked by :func:`check_query`); load TLS files."""
    check_query(url)
    query = url.query
    return ConnectArguments(
        url=url.difference_update_query((*LIBPQ_PARAMETERS, *PACKAGE_PARAMETERS)),
        ssl=_ssl(query),
        timeout=_timeout(query),
        server_settings=_server_settings(query),
        target_session_attrs=_single(query, "target_session_attrs"),
    )


def pgbouncer_flag(url: URL) -> bool:
    """The URL's ``pgbouncer`` parameter: whether it names a PgBouncer (False if absent)."""
    text = _single(url.query, "pgbouncer")
    if text is None:
        return False
    flag = _FLAGS.get(text.strip().lower())
    if flag is None:
        raise ValidationError("the database URL's pgbouncer parameter must be true or false")
    return flag


def _timeout(query: Mapping[str, Any]) -> float | None:
    text = _single(query, "connect_timeout")
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValidationError("connect_timeout must be a positive number of seconds")
    return seconds


def _server_settings(query: Mapping[str, Any]) -> dict[str, str]:
    settings: dict[str, str] = {}
    options = _single(query, "options")
    if options is not None:
        words = iter(_words(options))
        for word in words:
            if word == "-c":
                setting = next(words, "")
            elif word.startswith(("-c", "--")):
                setting = word[2:]
            else:
                raise ValidationError("options: only -c name=value settings are understood")
            name, equals, value = setting.partition("=")
            if not equals or _SETTING.fullmatch(name) is None:
                raise ValidationError("options: only -c name=value settings are understood")
            settings[name.replace("-", "_")] = value
    application_name = _single(query, "application_name")
    if application_name is not None:
        settings["application_name"] = application_name
    return settings


def _words(options: str) -> list[str]:
    """Split libpq's ``options`` at whitespace; a backslash keeps the next character."""
    words: list[str] = []
    word: list[str] = []
    escaped = False
    for character in options:
        if escaped:
            word.append(character)
            escaped = False
        elif character == "\\":
            escaped = True
        elif character.isspace():
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(character)
    if word:
        words.append("".join(word))
    return words


def _ssl(query: Mapping[str, Any]) -> ssl.SSLContext | str | bool | None:
    mode = _single(query, "sslmode")
    if mode is None:
        return None
    if mode == "disable":
        return False
    if mode in ("allow", "prefer"):
        # asyncpg's own modes: TLS if the server offers it, nothing verified.
        return mode
    root = _single(query, "sslrootcert")
    if mode == "require" and root is None:
        context = _context(None)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        # libpq: require with a root certificate verifies like verify-ca.
        context = _context(root)
        context.check_hostname = mode == "verify-full"
    _client_certificate(context, query)
    return context


def _context(root: str | None) -> ssl.SSLContext:
    """A client context trusting ``root``, libpq's default file, or else the system's CAs."""
    if root is None:
        default = _DEFAULT_ROOT.expanduser()
        root = str(default) if default.is_file() else "system"
    if root == "system":
        return ssl.create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=root)
    except (OSError, ssl.SSLError) as error:
        raise ValidationError(
            f"sslrootcert: cannot read the CA certificate file ({type(error).__name__})"
        ) from None
    return context


def _client_certificate(context: ssl.SSLContext, query: Mapping[str, Any]) -> None:
    cert, key = _single(query, "sslcert"), _single(query, "sslkey")
    if cert is None and key is None:
        return
    if cert is None:
        raise ValidationError("sslkey needs sslcert")
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise ValidationError(
            f"sslcert/sslkey: cannot read the client certificate or its key "
            f"({type(error).__name__})"
        ) from None
