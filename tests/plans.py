"""Query plans of the statements the package really runs, bound as it binds them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text

from ecl_persistence import Database, UnitOfWork


@asynccontextmanager
async def explaining(db: Database, prefix: str) -> AsyncIterator[list[str]]:
    """Inside the block, statements of ``db`` that start with ``prefix`` are explained first.

    The yielded list collects the plan's lines (``EXPLAIN QUERY PLAN`` on
    SQLite, ``EXPLAIN`` on PostgreSQL); then each statement runs as usual.
    Meant for reads.
    """
    explain = "EXPLAIN QUERY PLAN " if db.dialect == "sqlite" else "EXPLAIN "
    plan: list[str] = []

    def explain_first(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        # On the side, on the same cursor: the statement itself then runs as
        # usual, so what reads its result (the ORM's entity loading) sees it.
        if statement.startswith(prefix):
            cursor.execute(explain + statement, parameters)
            plan.extend(str(row[-1]) for row in cursor.fetchall())

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", explain_first)
    try:
        yield plan
    finally:
        event.remove(engine, "before_cursor_execute", explain_first)


async def forbid_seq_scan(uow: UnitOfWork) -> None:
    """On PostgreSQL, make this transaction's planner avoid whole-table scans.

    A tiny test table is cheapest to scan whole; forbidding that shows whether
    the planner can use an index at all. Does nothing on SQLite.
    """
    if uow.dialect == "postgresql":
        await uow.execute(text("SET LOCAL enable_seqscan = off"), action="plan")
