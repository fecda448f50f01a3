"""The ledger: attempts, tokens and cost of step executions, aggregated in SQL.

One ``GROUP BY`` query over ``step_executions`` (joined with ``workflows``
only to filter or group by definition); ``since``/``until`` bound
``started_at``, which ``ix_step_executions_started_at`` serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, cast

from sqlalchemy import Select, Table, func, literal, null, select

from ecl_persistence.domain import MAX_ID_LENGTH, UsageRow, check_text
from ecl_persistence.errors import ValidationError
from ecl_persistence.orm import MoneySum, StepExecutionRecord, WorkflowRecord
from ecl_persistence.repositories._checks import check_aware, check_id
from ecl_persistence.repositories._context import UnitContext

__all__ = ["GROUPS", "Grouping", "ledger", "ledger_statement"]

Grouping = Literal["model", "definition", "day"]
GROUPS: tuple[str, ...] = ("model", "definition", "day")
"""The ways the ledger groups its rows (or ``None``: one row over everything)."""

_TABLE = cast("Table", StepExecutionRecord.__table__)
_T = _TABLE.c
_W = cast("Table", WorkflowRecord.__table__).c


def _sum(column: Any) -> Any:
    return func.coalesce(func.sum(column), 0)


def ledger_statement(
    uow: UnitContext,
    *,
    workflow_id: Any = None,
    definition_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    group_by: str | None = None,
) -> Select[Any]:
    """The ledger's query, with its arguments checked (ValidationError before any SQL)."""
    if group_by is not None and group_by not in GROUPS:
        raise ValidationError(f"group_by must be one of {', '.join(GROUPS)} or None")
    conditions: list[Any] = []
    if workflow_id is not None:
        conditions.append(_T.workflow_id == check_id(workflow_id, "workflow id"))
    if definition_id is not None:
        checked = check_text(definition_id, field="definition_id", max_length=MAX_ID_LENGTH)
        conditions.append(_W.definition_id == checked)
    if since is not None:
        conditions.append(_T.started_at >= check_aware(since, "since"))
    if until is not None:
        conditions.append(_T.started_at < check_aware(until, "until"))
    joined = definition_id is not None or group_by == "definition"
    key: Any
    if group_by == "model":
        key = _T.model
    elif group_by == "definition":
        key = _W.definition_id
    elif group_by == "day":
        key = uow.strategy.utc_day(_T.started_at)
    else:
        key = null()
    statement = select(
        key.label("key") if group_by is not None else literal(None).label("key"),
        func.count(),
        func.count(_T.input_tokens),
        _sum(_T.input_tokens),
        _sum(_T.output_tokens),
        _sum(_T.cached_tokens),
        _sum(_T.reasoning_tokens),
        MoneySum(_T.cost),
    )
    source = _TABLE.join(WorkflowRecord.__table__, _W.id == _T.workflow_id) if joined else _TABLE
    statement = statement.select_from(source).where(*conditions)
    if group_by is not None:
        # NULL last on both backends (PostgreSQL sorts it last, SQLite first).
        statement = statement.group_by(key).order_by(key.is_(None), key)
    return statement


async def ledger(uow: UnitContext, **arguments: Any) -> list[UsageRow]:
    """Run :func:`ledger_statement`: a :class:`UsageRow` per group, by key (None last)."""
    statement = ledger_statement(uow, **arguments)
    result = await uow.execute(statement, action="read the usage ledger")
    rows = [_row(row) for row in result]
    if arguments.get("group_by") is None:
        return [row for row in rows if row.attempts]
    return rows


def _row(row: Sequence[Any]) -> UsageRow:
    key, attempts, recorded, input_tokens, output_tokens, cached, reasoning, cost = tuple(row)
    return UsageRow(
        key=None if key is None else str(key),
        attempts=int(attempts),
        recorded=int(recorded),
        input_tokens=int(input_tokens),
        output_tokens=int(output_tokens),
        cached_tokens=int(cached),
        reasoning_tokens=int(reasoning),
        cost=None if cost is None else Decimal(cost),
    )
