"""Query plans of the statements the package really runs, bound as it binds them."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from sqlalchemy import event, text
from tests.conftest import create_postgres_database, drop_postgres_database

from ecl_persistence import Database, UnitOfWork

T = TypeVar("T")

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
]
"""The ``params`` of a module-scoped fixture that gives a database of each backend."""


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


# "SCAN t" alone reads the whole table; "SCAN t USING INDEX i" walks an index in
# order and stops at the LIMIT.
_SQLITE_TABLE_SCAN = re.compile(r"\bSCAN \w+\b(?! USING)")
# Read whole by design: a claim reads the concurrency limits once (one row per
# limited key, a few), not per workflow; see docs/operations.md.
READ_WHOLE = frozenset({"concurrency_limits"})


def _sqlite_problems(plan: list[str]) -> list[str]:
    problems = [
        line
        for line in plan
        if _SQLITE_TABLE_SCAN.search(line) and line.split()[-1] not in READ_WHOLE
    ]
    # Sorting the whole result is refused; "RIGHT PART OF ORDER BY" only orders
    # the ties of the index's order (the rows of one workflow with equal times).
    problems += [line for line in plan if "TEMP B-TREE FOR ORDER BY" in line]
    if not any("USING" in line or line.startswith("SEARCH") for line in plan):
        problems.append("no index used")
    return problems


def _postgres_problems(plan: Any) -> list[str]:
    problems: list[str] = []
    stack = [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") not in READ_WHOLE:
            problems.append(f"Seq Scan on {node.get('Relation Name')}")
        stack.extend(node.get("Plans", []))
    return problems


async def explain_plan(
    db: Database, sql: str, parameters: Any, generic: bool
) -> tuple[str, list[str]]:
    """The plan of ``sql`` with ``parameters`` as text, and what is wrong with it.

    Wrong is a scan of a whole table, on SQLite also a sort of the whole
    result or no index at all. ``generic`` asks PostgreSQL for the plan a
    prepared statement settles on instead of one for these values.
    """
    async with db.engine.connect() as connection:
        if db.dialect == "sqlite":
            rows = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", parameters)
            lines = [str(row[-1]) for row in rows]
            return "\n".join(lines), _sqlite_problems(lines)
        mode = "force_generic_plan" if generic else "force_custom_plan"
        await connection.exec_driver_sql(f"SET plan_cache_mode = {mode}")
        result = await connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", parameters)
        plan = result.scalar()
        await connection.rollback()
        document = json.loads(plan) if isinstance(plan, str) else plan
        return json.dumps(document), _postgres_problems(document)


async def explain_problems(db: Database, sql: str, parameters: Any, generic: bool) -> list[str]:
    """What :func:`explain_plan` finds wrong with the plan of ``sql``."""
    _plan, problems = await explain_plan(db, sql, parameters, generic)
    return problems


def plan_modes(db: Database) -> tuple[bool, ...]:
    """The ``generic`` values to explain with: SQLite plans every statement afresh."""
    return (False, True) if db.dialect == "postgresql" else (False,)


def populated_database(
    backend: str,
    tmp_path_factory: pytest.TempPathFactory,
    populate: Callable[[str], Coroutine[Any, Any, T]],
) -> Iterator[tuple[str, T]]:
    """A scratch database of ``backend``, filled by ``populate(url)``; dropped afterwards.

    For module-scoped fixtures whose tests explain queries over many rows:
    yields the URL and what ``populate`` returned (the samples to query).
    """
    if backend == "sqlite":
        directory = tmp_path_factory.mktemp("plans")
        url = f"sqlite:///{directory / 'plans.db'}"
        yield url, asyncio.run(populate(url))
        shutil.rmtree(directory, ignore_errors=True)
        return
    url = create_postgres_database()
    try:
        samples = asyncio.run(populate(url))
        asyncio.run(_seed_payloads(url))
        yield url, samples
    finally:
        drop_postgres_database(url)


PAYLOADS = 2000
"""Payloads seeded beside the rows: the lookups of stored payloads are planned on a real table."""


async def _seed_payloads(url: str) -> None:
    """Fill ``payloads`` (empty, it would be scanned: the cheapest plan of nothing) and ANALYZE it.

    Every read of a workflow or an attempt looks its payloads up by hash
    (``PayloadRef``); in a database that stores any, that is the primary key.
    """
    async with Database.from_url(url) as db, db.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO payloads (hash, codec, raw_size, data) "
                "SELECT md5(n::text) || md5((n + 1)::text), 'zstd', 10, '\\x00'::bytea "
                f"FROM generate_series(1, {PAYLOADS}) AS n"
            )
        )
        await connection.execute(text("ANALYZE payloads"))


async def statements_sent(
    db: Database,
    operation: Callable[[UnitOfWork], Awaitable[object]],
    *,
    starts: tuple[str, ...] = ("SELECT",),
    read_only: bool = True,
) -> list[tuple[str, Any]]:
    """The statements (and parameters) that ``operation`` sends, those that begin with ``starts``.

    ``operation`` runs in a unit of work of its own, read-only unless told
    otherwise; a writing one is rolled back, so the database stays as it was.
    """
    wanted = tuple(start.upper() for start in starts)
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        if statement.lstrip().upper().startswith(wanted):
            sent.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with db.session(read_only=read_only) as uow:
            await operation(uow)
            if not read_only:
                await uow.rollback()
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    return sent


async def assert_plans_read_indexes(
    db: Database, name: str, statements: list[tuple[str, Any]]
) -> None:
    """Fail, naming ``name``, unless every statement's plan passes :func:`explain_plan`."""
    assert statements, f"{name} sent no statement that reads"
    for sql, parameters in statements:
        for generic in plan_modes(db):
            plan, problems = await explain_plan(db, sql, parameters, generic)
            assert not problems, f"{name} (generic plan: {generic}): {problems}\n{sql}\n{plan}"
