"""One strategy per dialect: the only place where SQLite and PostgreSQL differ.

Engine and connection set-up, how a transaction begins, upserts, row locks,
column storage, error classification and the migration context are each a
method of :class:`DialectStrategy`; the rest of the package asks
:func:`strategy_for` and never tests a dialect's name.
"""

from __future__ import annotations

from sqlalchemy import Dialect

from ecl_persistence.dialects.base import DialectStrategy, LockMode
from ecl_persistence.dialects.postgresql import PostgresqlStrategy
from ecl_persistence.dialects.sqlite import SqliteStrategy
from ecl_persistence.errors import ValidationError

__all__ = ["POSTGRESQL", "SQLITE", "STRATEGIES", "DialectStrategy", "LockMode", "strategy_for"]

SQLITE = SqliteStrategy()
"""The SQLite strategy."""
POSTGRESQL = PostgresqlStrategy()
"""The PostgreSQL strategy."""
STRATEGIES: dict[str, DialectStrategy] = {SQLITE.name: SQLITE, POSTGRESQL.name: POSTGRESQL}
"""Every strategy, by dialect name."""


def strategy_for(dialect: str | Dialect) -> DialectStrategy:
    """The strategy of a dialect, given by name or as a SQLAlchemy ``Dialect``.

    Raises ValidationError for a dialect this package does not support.
    """
    name = dialect if isinstance(dialect, str) else dialect.name
    strategy = STRATEGIES.get(name)
    if strategy is None:
        raise ValidationError(
            f"unsupported database dialect {name!r}: ecl-persistence runs on SQLite and PostgreSQL"
        )
    return strategy
