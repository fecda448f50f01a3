"""Where the tokens went: step executions summed by definition and by UTC day, in SQL.

Tokens by definition and day come from ``tokens_used`` per attempt; tokens
by kind and cost by model, and the window's total cost, come from the
ledger (:meth:`~ecl_persistence.StepExecutionRepository.usage`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
from sqlalchemy import case, func, select

from ecl_persistence.domain import StepExecutionState, UsageRow
from ecl_persistence.orm import StepExecutionRecord, WorkflowRecord
from ecl_persistence.unit_of_work import UnitOfWork

__all__ = ["MAX_DAYS", "DayUsage", "DefinitionUsage", "UsageReport", "usage_report"]

MAX_DAYS = 92
"""The longest window the costs page sums, in days (one ``CASE`` branch per day)."""

_S = StepExecutionRecord
_W = WorkflowRecord


@attrs.frozen
class DefinitionUsage:
    """The attempts of one definition's workflows in the window."""

    definition_id: str
    attempts: int
    failed: int
    tokens: int
    duration_ms: int


@attrs.frozen
class DayUsage:
    """The attempts that started on one UTC day, all definitions together."""

    day: datetime
    """Midnight UTC at the start of the day."""
    attempts: int
    tokens: int


@attrs.frozen
class UsageReport:
    """Tokens and attempts by definition and by day, from ``since`` (midnight UTC) to ``until``."""

    since: datetime
    until: datetime
    by_definition: tuple[DefinitionUsage, ...]
    """Most tokens first."""
    by_day: tuple[DayUsage, ...]
    """Every day of the window, oldest first, zero where nothing ran."""
    by_model: tuple[UsageRow, ...] | None = None
    """Tokens by kind and cost, by model (the ledger's rows; key None: no model recorded)."""
    cost: Decimal | None = None
    """The total cost of the window: None when no attempt in it has a cost."""

    @property
    def total_tokens(self) -> int:
        """Tokens of every attempt in the window."""
        return sum(day.tokens for day in self.by_day)

    @property
    def total_attempts(self) -> int:
        """Attempts that started in the window."""
        return sum(day.attempts for day in self.by_day)


def _rows(result: Any) -> list[Any]:
    return list(result)


def days_of(since: datetime, until: datetime) -> list[datetime]:
    """The midnights (UTC) of each day from ``since``'s to the one before ``until``."""
    first = since.replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    day = first
    while day < until:
        days.append(day)
        day += timedelta(days=1)
    return days


async def usage_report(uow: UnitOfWork, since: datetime, until: datetime) -> UsageReport:
    """Sum the attempts that started from ``since``'s midnight (UTC) to ``until``.

    Two grouped queries; the day of an attempt is found by comparing its
    start with each midnight of the window (a ``CASE``), which both
    backends run alike, whatever the session's time zone.
    """
    days = days_of(since, until)
    start = days[0] if days else since
    in_window = (_S.started_at >= start, _S.started_at < until)
    failed = func.sum(case((_S.state == StepExecutionState.FAILED.value, 1), else_=0))
    tokens = func.coalesce(func.sum(_S.tokens_used), 0)
    per_definition = (
        select(
            _W.definition_id,
            func.count(),
            failed,
            tokens,
            func.coalesce(func.sum(_S.duration_ms), 0),
        )
        .select_from(_S)
        .join(_W, _W.id == _S.workflow_id)
        .where(*in_window)
        .group_by(_W.definition_id)
    )
    result = await uow.execute(per_definition, action="sum tokens by definition")
    definitions = [
        DefinitionUsage(str(row[0]), int(row[1]), int(row[2] or 0), int(row[3]), int(row[4]))
        for row in _rows(result)
    ]
    definitions.sort(key=lambda usage: (-usage.tokens, usage.definition_id))
    counts: dict[int, tuple[int, int]] = {}
    if days:
        bucket = case(
            *((_S.started_at < day + timedelta(days=1), index) for index, day in enumerate(days)),
            else_=len(days),
        ).label("day")
        # Grouped outside: PostgreSQL would not see that two copies of a CASE
        # with bound values are the same expression.
        rows = select(bucket, _S.tokens_used.label("tokens")).where(*in_window).subquery()
        per_day = select(
            rows.c.day, func.count(), func.coalesce(func.sum(rows.c.tokens), 0)
        ).group_by(rows.c.day)
        result = await uow.execute(per_day, action="sum tokens by day")
        for row in _rows(result):
            counts[int(row[0])] = (int(row[1]), int(row[2]))
    by_day = tuple(DayUsage(day, *counts.get(index, (0, 0))) for index, day in enumerate(days))
    by_model = tuple(await uow.step_executions.usage(since=start, until=until, group_by="model"))
    costs = [row.cost for row in by_model if row.cost is not None]
    return UsageReport(
        since=start,
        until=until,
        by_definition=tuple(definitions),
        by_day=by_day,
        by_model=by_model,
        cost=sum(costs, Decimal(0)) if costs else None,
    )
