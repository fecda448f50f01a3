"""SQLAlchemy's aiosqlite dialect, on one-trip connections whose transactions the package begins.

The engines the SQLite strategy builds use it under the driver name
``sqlite+ecl_aiosqlite`` (registered with SQLAlchemy's dialect registry, so
no other engine is affected). It differs from the stock dialect in how a
transaction begins and what "autocommit" means:

- a transaction that is not in autocommit begins with ``BEGIN IMMEDIATE``,
  sent together with its first statement: writers take SQLite's write lock
  up front and queue on ``busy_timeout`` instead of failing with "database
  is locked";
- ``AUTOCOMMIT`` is the isolation level of read-only units: no BEGIN, each
  statement on its own, nothing to roll back when the connection goes back
  to the pool; any other level is SQLite's own, ``SERIALIZABLE``, and
  changing it costs no statement.

Doing this in the dialect rather than in a ``begin`` event listener keeps
the engine free of connection events, so SQLAlchemy skips its event
dispatch on every statement.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler

__all__ = ["DRIVER_NAME", "HintingCompiler", "OneTripDialect"]

DRIVER_NAME = "ecl_aiosqlite"
"""The driver part of the engines' URLs: ``sqlite+ecl_aiosqlite``."""
_LEVELS = ("SERIALIZABLE", "AUTOCOMMIT")


class HintingCompiler(SQLiteCompiler):
    """SQLite's compiler, writing a table's ``with_hint`` text after it (``INDEXED BY ...``).

    The stock compiler drops table hints; the claim queue needs one.
    """

    def get_from_hint_text(self, table: Any, text: str | None) -> str | None:
        """The hint as given."""
        return text


class OneTripDialect(SQLiteDialect_aiosqlite):
    """The aiosqlite dialect, beginning every transaction that is not in autocommit itself."""

    supports_statement_cache = True
    statement_compiler = HintingCompiler
    # In autocommit nothing is open: the rollback before the pool takes a
    # connection back would be a trip to the driver for nothing.
    skip_autocommit_rollback = True

    def do_begin(self, dbapi_connection: Any) -> None:
        """Send ``BEGIN IMMEDIATE`` with the transaction's first statement, unless in autocommit."""
        driver = self.get_driver_connection(dbapi_connection)
        if not driver.autocommit:
            driver.defer_begin("BEGIN IMMEDIATE")

    def set_isolation_level(self, dbapi_connection: Any, level: Any) -> None:
        """``AUTOCOMMIT`` (read-only units) or ``SERIALIZABLE``: a flag, no statement."""
        if level not in _LEVELS:
            raise ValueError(f"isolation level {level!r} is not one of {', '.join(_LEVELS)}")
        self.get_driver_connection(dbapi_connection).autocommit = level == "AUTOCOMMIT"

    def get_isolation_level(self, dbapi_connection: Any) -> Any:
        """The level :meth:`set_isolation_level` set last."""
        return (
            self.get_default_isolation_level(dbapi_connection)
            if not (self.detect_autocommit_setting(dbapi_connection))
            else "AUTOCOMMIT"
        )

    def get_default_isolation_level(self, dbapi_conn: Any) -> Any:
        """SQLite's transactions are serializable."""
        return "SERIALIZABLE"

    def get_isolation_level_values(self, dbapi_connection: Any) -> list[Any]:
        """The two levels this dialect knows."""
        return list(_LEVELS)

    def detect_autocommit_setting(self, dbapi_conn: Any) -> bool:
        """Whether the connection is in autocommit (a read-only unit's)."""
        return bool(self.get_driver_connection(dbapi_conn).autocommit)


registry.register(f"sqlite.{DRIVER_NAME}", __name__, "OneTripDialect")
