"""The workflow repository's listings and counts: pages of rows, aggregates in SQL."""

from __future__ import annotations

import builtins
import functools
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam

from ecl_persistence.dialects.base import AnySelect
from ecl_persistence.domain import MAX_ID_LENGTH, Page, Workflow, WorkflowState, check_text
from ecl_persistence.repositories import _workflow_sql as sql
from ecl_persistence.repositories._checks import check_aware, check_limit
from ecl_persistence.repositories._cursor import decode_cursor, encode_cursor
from ecl_persistence.repositories._values import state_value
from ecl_persistence.repositories._workflow_base import TABLE_NAME, WorkflowRepositoryBase, as_state
from ecl_persistence.repositories._workflow_leases import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from ecl_persistence.repositories.mappers import workflow_from_row

__all__ = ["WorkflowListings"]

_T = sql.TABLE.c
# The unbounded listings still stop somewhere: at a hundred of the largest pages.
_MAX_LISTED = MAX_PAGE_SIZE * 100


@functools.cache
def _by_column(column: str, newest_first: bool, limited: bool) -> AnySelect:
    order = (_T.created_at.desc(), _T.id.desc()) if newest_first else (_T.created_at, _T.id)
    statement = sql.ROWS.where(_T[column] == bindparam("value")).order_by(*order)
    return statement.limit(bindparam("limit")) if limited else statement


class WorkflowListings(WorkflowRepositoryBase):
    """Workflows listed and counted: keyset pages, by state, by definition."""

    __slots__ = ()

    async def list(
        self,
        *,
        state: WorkflowState | None = None,
        definition_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[Workflow]:
        """A page of workflows, newest first, filtered by every argument given.

        Keyset pagination: pass the returned ``next_cursor`` to get the next
        page; workflows created meanwhile never shift or repeat later pages.
        Both ``created_after`` and ``created_before`` are exclusive bounds. A
        cursor this package did not issue raises ValidationError.
        """
        limit = check_limit(limit, MAX_PAGE_SIZE)
        params: dict[str, Any] = {"limit": limit + 1}
        if state is not None:
            params["state"] = as_state(state).value
        if definition_id is not None:
            params["definition_id"] = check_text(
                definition_id, field="definition_id", max_length=MAX_ID_LENGTH
            )
        if created_after is not None:
            params["created_after"] = check_aware(created_after, "created_after")
        if created_before is not None:
            params["created_before"] = check_aware(created_before, "created_before")
        if cursor is not None:
            params["cursor_at"], params["cursor_id"] = decode_cursor(cursor)
        statement = sql.list_statement(frozenset(params))
        result = await self._uow.execute(statement, params, action="list workflows")
        items = [workflow_from_row(row) for row in result]
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            last = items[-1]
            next_cursor = encode_cursor(last.created_at, last.id)
        return Page(items=tuple(items), next_cursor=next_cursor)

    async def list_by_state(
        self, state: WorkflowState, *, limit: int | None = None
    ) -> builtins.list[Workflow]:
        """Workflows in ``state``, oldest first (at most ``limit`` of them)."""
        target = as_state(state)
        params: dict[str, Any] = {"value": target.value}
        if limit is not None:
            params["limit"] = check_limit(limit, _MAX_LISTED)
        statement = _by_column("state", False, limit is not None)
        result = await self._uow.execute(statement, params, action=f"list {target.value} workflows")
        return [workflow_from_row(row) for row in result]

    async def list_by_definition(
        self, definition_id: str, *, limit: int | None = None
    ) -> builtins.list[Workflow]:
        """Workflows of ``definition_id``, newest first (at most ``limit`` of them)."""
        params: dict[str, Any] = {
            "value": check_text(definition_id, field="definition_id", max_length=MAX_ID_LENGTH)
        }
        if limit is not None:
            params["limit"] = check_limit(limit, _MAX_LISTED)
        statement = _by_column("definition_id", True, limit is not None)
        result = await self._uow.execute(statement, params, action="list workflows of a definition")
        return [workflow_from_row(row) for row in result]

    async def count_by_state(self, definition_id: str | None = None) -> dict[WorkflowState, int]:
        """How many workflows are in each state, every state present (zero when none).

        Counts every workflow when ``definition_id`` is ``None``, else only those
        of that definition; one ``GROUP BY`` query.
        """
        statement = sql.COUNT_BY_STATE
        if definition_id is not None:
            checked = check_text(definition_id, field="definition_id", max_length=MAX_ID_LENGTH)
            statement = statement.where(_T.definition_id == checked)
        result = await self._uow.execute(
            statement.group_by(_T.state), action="count workflows by state"
        )
        counts = dict.fromkeys(WorkflowState, 0)
        for row in result:
            value, count = tuple(row)
            state = state_value(WorkflowState, value, table=TABLE_NAME, id="one of its rows")
            counts[state] = int(count)
        return counts
