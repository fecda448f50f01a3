"""Configuration: which database, how many connections, how long to wait."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import attrs
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ecl_persistence.dialects import DialectStrategy, strategy_for
from ecl_persistence.domain import DEFAULT_MAX_PAYLOAD_BYTES
from ecl_persistence.errors import ValidationError

__all__ = ["DEFAULT_URL", "DatabaseConfig", "mask_url", "normalize_url"]

DEFAULT_URL = "sqlite:///./ecl.db"
"""The embedded default: a SQLite file in the working directory."""

_SQLITE_ASYNC = "sqlite+aiosqlite"
_POSTGRES_ASYNC = "postgresql+asyncpg"
_DRIVERS = {
    "sqlite": _SQLITE_ASYNC,
    _SQLITE_ASYNC: _SQLITE_ASYNC,
    "postgresql": _POSTGRES_ASYNC,
    "postgres": _POSTGRES_ASYNC,
    _POSTGRES_ASYNC: _POSTGRES_ASYNC,
}


# Query parameters that may hold a secret: asyncpg takes ``?password=`` as the
# password, and a URL can carry other credentials the same way.
_SECRET_PARAMETER = re.compile(r"pass|secret|token", re.IGNORECASE)
_MASK = "***"


def _scheme_of(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    return scheme if sep else "(none)"


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and map it to the async driver of its dialect.

    ``sqlite:///path``, ``sqlite://`` (in memory) and ``postgresql://...`` (or
    ``postgres://``) become ``sqlite+aiosqlite`` and ``postgresql+asyncpg`` URLs.
    Raises :class:`ValidationError` naming the scheme, never the password, for
    anything else or for a URL that does not parse, and naming the parameter,
    never its value, for a query parameter its dialect does not understand
    (PostgreSQL takes libpq's ``sslmode``, ``connect_timeout``, ...; see
    ``docs/configuration.md``).

    """
    if isinstance(url, str):
        scheme = _scheme_of(url)
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            raise ValidationError(
                f"database URL with scheme {scheme!r} could not be parsed"
            ) from None
    else:
        parsed = url
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValidationError(
            f"unsupported database URL scheme {parsed.drivername!r}: "
            "use sqlite:///path/to/file.db or postgresql://user@host/dbname"
        )
    parsed = _password_from_query(parsed.set(drivername=driver))
    if parsed.host is not None and "@" in parsed.host:
        # "user:p@ss@host": the password's "@" was not encoded, so part of the
        # password was read as the host and would appear in messages as one.
        raise ValidationError(
            "the database URL's host contains '@': percent-encode '@' in the user "
            "name or password as %40"
        )
    if driver == _SQLITE_ASYNC and parsed.database == ":memory:":
        parsed = parsed._replace(database=None)
    strategy_for(parsed.get_backend_name()).check_url(parsed)
    return parsed


def _password_from_query(url: URL) -> URL:
    """Move ``?password=`` into the URL's password, where every rendering hides it."""
    if "password" not in url.query:
        return url
    given = url.query["password"]
    if url.password is not None or not isinstance(given, str):
        raise ValidationError("the database URL gives its password more than once")
    return url.difference_update_query(["password"]).set(password=given)


def mask_url(url: str | URL) -> str:
    """Render ``url`` with its password, and any secret query parameter, as ``***``.

    Safe to log or show, even for a URL that does not parse.
    """
    if not isinstance(url, URL):
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            return f"<unparsable {_scheme_of(url)} URL>"
        url = parsed
    if url.host is not None and "@" in url.host:
        # Part of the password would show as the host (see normalize_url).
        return f"<{url.drivername} URL with an unencoded '@'>"
    secrets = [name for name in url.query if _SECRET_PARAMETER.search(name)]
    if secrets:
        url = url.update_query_dict(dict.fromkeys(secrets, _MASK))
    return url.render_as_string(hide_password=True).replace(quote(_MASK), _MASK)


def _positive_int(name: str) -> Any:
    def check(instance: object, attribute: object, value: object) -> None:
        if type(value) is not int or value < 1:
            raise ValidationError(f"{name} must be a positive integer")

    return check


def _check_timeout(instance: object, attribute: object, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValidationError("timeout_secs must be a positive number of seconds")


def _check_url(instance: object, attribute: object, value: object) -> None:
    if not isinstance(value, str | URL):
        raise ValidationError("url must be a string")
    normalize_url(value)


def _check_bool(name: str) -> Any:
    def check(instance: object, attribute: object, value: object) -> None:
        if not isinstance(value, bool):
            raise ValidationError(f"{name} must be a bool")

    return check


def _check_optional_url(name: str) -> Any:
    def check(instance: object, attribute: object, value: object) -> None:
        if value is None:
            return
        if not isinstance(value, str | URL):
            raise ValidationError(f"{name} must be a string or None")
        normalize_url(value)

    return check


def _mask_optional(url: str | URL | None) -> str:
    return "None" if url is None else mask_url(url)


_URL_VARIABLES = (("ECL_DB_LISTEN_URL", "listen_url"), ("ECL_DB_REPLICA_URL", "replica_url"))
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


DEFAULT_PAYLOAD_INLINE_BYTES = 8192
"""Inputs and outputs longer than this (as JSON text, in bytes) go to the payload store."""


def _optional_size(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if type(value) is not int or value < 0:
        raise ValidationError(f"{attribute.name} must be a non-negative integer or None")


@attrs.frozen
class DatabaseConfig:
    """How to reach the database and how to use it.

    ``url`` is any URL :func:`normalize_url` accepts. ``max_connections`` is the
    pool size on PostgreSQL (and the pool of a SQLite file). ``timeout_secs``
    bounds the wait for a connection, for a connect and for a SQLite lock.
    ``max_payload_bytes`` bounds each JSON payload (input, output, metadata).
    An input or output whose JSON text is longer than ``payload_inline_bytes``
    is stored once, compressed, in the ``payloads`` table (``None``: always
    inline); reads are the same either way.
    The ``repr`` never shows the password.

    Scaling out on PostgreSQL (``docs/scaling.md``): ``pgbouncer`` (or
    ``?pgbouncer=true`` in the URL) turns off
    what PgBouncer's transaction pooling breaks (prepared statements kept
    across transactions, session settings); ``listen_url`` is where a
    worker's notification listener connects (a direct connection to the
    server, as ``LISTEN`` cannot go through transaction pooling; default:
    ``url`` unless ``pgbouncer``); ``replica_url`` is a read replica that
    read-only units of work use (see :meth:`Database.session
    <ecl_persistence.Database.session>`). SQLite refuses all three with
    ValidationError.
    """

    url: str = attrs.field(default=DEFAULT_URL, validator=_check_url, repr=mask_url)
    max_connections: int = attrs.field(default=5, validator=_positive_int("max_connections"))
    timeout_secs: float = attrs.field(default=3.0, validator=_check_timeout)
    echo: bool = attrs.field(default=False, validator=_check_bool("echo"))
    max_payload_bytes: int = attrs.field(
        default=DEFAULT_MAX_PAYLOAD_BYTES, validator=_positive_int("max_payload_bytes")
    )
    pgbouncer: bool = attrs.field(default=False, validator=_check_bool("pgbouncer"))
    listen_url: str | None = attrs.field(
        default=None, validator=_check_optional_url("listen_url"), repr=_mask_optional
    )
    replica_url: str | None = attrs.field(
        default=None, validator=_check_optional_url("replica_url"), repr=_mask_optional
    )
    payload_inline_bytes: int | None = attrs.field(
        default=DEFAULT_PAYLOAD_INLINE_BYTES, validator=_optional_size
    )
    # Parsed once: the URL is read on every engine set-up and by every unit of work.
    _async_url: URL = attrs.field(init=False, repr=False, eq=False)
    _listen_async_url: URL | None = attrs.field(init=False, repr=False, eq=False)
    _replica_async_url: URL | None = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_async_url", normalize_url(self.url))
        for name in ("listen_url", "replica_url"):
            given = getattr(self, name)
            parsed = None if given is None else normalize_url(given)
            object.__setattr__(self, f"_{name[:-4]}_async_url", parsed)
        if not self.pgbouncer and self.strategy.pgbouncer_in_url(self._async_url):
            # ``?pgbouncer=true`` in the URL is the other spelling of the field.
            object.__setattr__(self, "pgbouncer", True)
        self.strategy.check_scale_out(self)

    @property
    def listen_async_url(self) -> URL | None:
        """``listen_url`` with the async driver, or None."""
        return self._listen_async_url

    @property
    def replica_async_url(self) -> URL | None:
        """``replica_url`` with the async driver, or None."""
        return self._replica_async_url

    @property
    def async_url(self) -> URL:
        """The URL with the async driver of its dialect."""
        return self._async_url

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._async_url.get_backend_name()

    @property
    def strategy(self) -> DialectStrategy:
        """The strategy of the URL's dialect: everything that differs between backends."""
        return strategy_for(self.dialect)

    @property
    def is_memory(self) -> bool:
        """Whether this is a private in-memory database (SQLite's ``sqlite://``)."""
        return self.strategy.is_memory(self._async_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DatabaseConfig:
        """Build a configuration from the environment.

        Reads ``ECL_DATABASE_URL`` (else ``DATABASE_URL``), ``ECL_DB_MAX_CONNECTIONS``,
        ``ECL_DB_TIMEOUT_SECS``, ``ECL_DB_PGBOUNCER`` (``1``/``true`` or
        ``0``/``false``), ``ECL_DB_LISTEN_URL`` and ``ECL_DB_REPLICA_URL``.
        Unset variables keep their defaults; a value that is not valid raises
        :class:`ValidationError` naming the variable.
        """
        env = os.environ if environ is None else environ
        url = env.get("ECL_DATABASE_URL") or env.get("DATABASE_URL") or DEFAULT_URL
        fields: dict[str, Any] = {"url": url}
        raw_max = env.get("ECL_DB_MAX_CONNECTIONS")
        if raw_max is not None:
            try:
                fields["max_connections"] = int(raw_max.strip())
            except ValueError:
                raise ValidationError("ECL_DB_MAX_CONNECTIONS must be a positive integer") from None
        raw_timeout = env.get("ECL_DB_TIMEOUT_SECS")
        if raw_timeout is not None:
            try:
                fields["timeout_secs"] = float(raw_timeout.strip())
            except ValueError:
                raise ValidationError(
                    "ECL_DB_TIMEOUT_SECS must be a positive number of seconds"
                ) from None
        raw_bouncer = env.get("ECL_DB_PGBOUNCER")
        if raw_bouncer is not None:
            flag = raw_bouncer.strip().lower()
            if flag not in _TRUE + _FALSE:
                raise ValidationError("ECL_DB_PGBOUNCER must be 1, true, 0 or false")
            fields["pgbouncer"] = flag in _TRUE
        for variable, field in _URL_VARIABLES:
            if env.get(variable):
                fields[field] = env[variable]
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise ValidationError(f"invalid database settings in the environment: {exc}") from None
