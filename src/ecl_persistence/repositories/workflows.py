"""The workflow repository."""

from __future__ import annotations

import builtins
import functools
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, insert, select, tuple_, update

from ecl_persistence.domain import (
    MAX_ID_LENGTH,
    WORKFLOW_TRANSITIONS,
    JsonValue,
    Page,
    Workflow,
    WorkflowId,
    WorkflowState,
    check_json,
    check_text,
    utc_now,
)
from ecl_persistence.errors import InvalidStateTransitionError, NotFoundError, ValidationError
from ecl_persistence.orm import WORKFLOWS
from ecl_persistence.orm.types import UTCDateTime
from ecl_persistence.repositories._checks import check_aware, check_id, check_limit, check_payloads
from ecl_persistence.repositories._cursor import decode_cursor, encode_cursor
from ecl_persistence.repositories._rows import (
    json_column,
    optional_json_column,
    state_column,
    workflow_from_values,
)

if TYPE_CHECKING:
    from ecl_persistence.unit_of_work import UnitOfWork

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "WorkflowRepository",
    "workflow_to_domain",
    "workflow_to_row",
]

_T = WORKFLOWS.c
_TABLE = "workflows"
_ENTITY = "workflow"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

_SELECT = select(*WORKFLOWS.c)
_GET = _SELECT.where(_T.id == bindparam("id"))
_INSERT = insert(WORKFLOWS)
_GET_STATE = select(_T.state).where(_T.id == bindparam("id"))
_DELETE = delete(WORKFLOWS).where(_T.id == bindparam("id"))


def workflow_to_domain(row: Sequence[Any]) -> Workflow:
    """Build a :class:`Workflow` from a ``workflows`` row (columns in table order)."""
    (id, definition_id, state, input, output, error, created_at, updated_at, completed_at,
     metadata, version) = row  # fmt: skip
    values = (
        id,
        definition_id,
        state_column(WorkflowState, state, table=_TABLE, id=id),
        json_column(input, table=_TABLE, column="input", id=id),
        optional_json_column(output, table=_TABLE, column="output", id=id),
        error,
        created_at,
        updated_at,
        completed_at,
        json_column(metadata, table=_TABLE, column="metadata", id=id),
        version,
    )
    return workflow_from_values(values, table=_TABLE, id=id)


def workflow_to_row(workflow: Workflow) -> dict[str, Any]:
    """The bind parameters of a ``workflows`` row for ``workflow``."""
    return {
        "id": workflow.id,
        "definition_id": workflow.definition_id,
        "state": workflow.state.value,
        "input": workflow.input,
        "output": workflow.output,
        "error": workflow.error,
        "created_at": workflow.created_at,
        "updated_at": workflow.updated_at,
        "completed_at": workflow.completed_at,
        "metadata": workflow.metadata,
        "version": workflow.version,
    }


def _sources_of(target: WorkflowState) -> tuple[str, ...]:
    """The states from which ``target`` may be reached."""
    return tuple(
        source.value for source, targets in WORKFLOW_TRANSITIONS.items() if target in targets
    )


def _update_state_statement(target: WorkflowState) -> Any:
    finished = target.is_finished
    return (
        update(WORKFLOWS)
        .where(_T.id == bindparam("wid"), _T.state.in_(_sources_of(target)))
        .values(
            state=target.value,
            error=bindparam("error"),
            updated_at=bindparam("now", type_=UTCDateTime()),
            completed_at=bindparam("now", type_=UTCDateTime()) if finished else None,
            version=_T.version + 1,
        )
        .returning(*WORKFLOWS.c)
    )


_UPDATE_STATE = {state: _update_state_statement(state) for state in WorkflowState}


@functools.cache
def _list_statement(filters: frozenset[str]) -> Any:
    """The query of ``list`` for one set of filters (parameter names), built once.

    Every call with the same filters then runs the same statement object,
    whose compiled form SQLAlchemy finds in its cache without rebuilding it.
    """
    statement = _SELECT
    if "state" in filters:
        statement = statement.where(_T.state == bindparam("state"))
    if "definition_id" in filters:
        statement = statement.where(_T.definition_id == bindparam("definition_id"))
    if "created_after" in filters:
        statement = statement.where(_T.created_at > bindparam("created_after"))
    if "created_before" in filters:
        statement = statement.where(_T.created_at < bindparam("created_before"))
    if "cursor_at" in filters:
        statement = statement.where(
            tuple_(_T.created_at, _T.id)
            < tuple_(
                bindparam("cursor_at", type_=_T.created_at.type),
                bindparam("cursor_id", type_=_T.id.type),
            )
        )
    return statement.order_by(_T.created_at.desc(), _T.id.desc()).limit(bindparam("limit"))


_UPDATE_OUTPUT = (
    update(WORKFLOWS)
    .where(_T.id == bindparam("wid"))
    .values(output=bindparam("output"), updated_at=bindparam("now"), version=_T.version + 1)
    .returning(*WORKFLOWS.c)
)


class WorkflowRepository:
    """Workflows of one unit of work.

    Every method returns detached :class:`Workflow` values; changing one means
    calling a method here, which writes in the unit's transaction.
    """

    __slots__ = ("_uow",)

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    async def create(self, workflow: Workflow) -> Workflow:
        """Insert ``workflow``; a duplicate id raises ConstraintViolationError."""
        if not isinstance(workflow, Workflow):
            raise ValidationError("create expects a Workflow")
        action = f"create workflow {workflow.id}"
        self._uow.require_writable(action)
        check_payloads(self._uow, workflow.input, workflow.output, workflow.metadata)
        await self._uow.execute(_INSERT, workflow_to_row(workflow), action=action)
        return workflow

    async def get(self, id: WorkflowId) -> Workflow | None:
        """The workflow with this id, or ``None``."""
        check_id(id, "workflow id")
        result = await self._uow.execute(_GET, {"id": id}, action=f"get workflow {id}")
        row = result.first()
        return None if row is None else workflow_to_domain(row)

    async def update_state(
        self, id: WorkflowId, state: WorkflowState, error: str | None = None
    ) -> Workflow:
        """Move the workflow to ``state`` and return it as it now is.

        The move follows the lifecycle rules (:data:`WORKFLOW_TRANSITIONS`) and is
        a compare-and-set in SQL, so two racing moves cannot both win. It sets
        ``updated_at``, sets ``completed_at`` on completed and failed (and clears
        it otherwise), stores ``error`` (``None`` clears it) and bumps ``version``.
        Raises NotFoundError, or InvalidStateTransitionError with nothing changed.
        """
        action = f"update state of workflow {id}"
        self._uow.require_writable(action)
        check_id(id, "workflow id")
        target = _state(state)
        if error is not None:
            error = check_text(error, field="error", max_length=65536, allow_empty=True)
        params = {"wid": id, "error": error, "now": utc_now()}
        result = await self._uow.execute(_UPDATE_STATE[target], params, action=action)
        row = result.first()
        if row is None:
            current = await self._current_state(id, action)
            raise InvalidStateTransitionError(_ENTITY, id, current.value, target.value)
        return workflow_to_domain(row)

    async def update_output(self, id: WorkflowId, output: JsonValue) -> Workflow:
        """Store the workflow's output (``None`` is JSON null) and return the workflow."""
        action = f"update output of workflow {id}"
        self._uow.require_writable(action)
        check_id(id, "workflow id")
        check_json(output, field="output", max_bytes=self._uow.max_payload_bytes)
        params = {"wid": id, "output": output, "now": utc_now()}
        result = await self._uow.execute(_UPDATE_OUTPUT, params, action=action)
        row = result.first()
        if row is None:
            raise NotFoundError(_ENTITY, id)
        return workflow_to_domain(row)

    async def list_by_state(
        self, state: WorkflowState, *, limit: int | None = None
    ) -> builtins.list[Workflow]:
        """Workflows in ``state``, oldest first (at most ``limit`` of them)."""
        target = _state(state)
        statement = _SELECT.where(_T.state == target.value).order_by(_T.created_at, _T.id)
        if limit is not None:
            statement = statement.limit(check_limit(limit, MAX_PAGE_SIZE * 100))
        result = await self._uow.execute(statement, action=f"list {target.value} workflows")
        return [workflow_to_domain(row) for row in result]

    async def list_by_definition(
        self, definition_id: str, *, limit: int | None = None
    ) -> builtins.list[Workflow]:
        """Workflows of ``definition_id``, newest first (at most ``limit`` of them)."""
        definition_id = check_text(definition_id, field="definition_id", max_length=MAX_ID_LENGTH)
        statement = _SELECT.where(_T.definition_id == definition_id).order_by(
            _T.created_at.desc(), _T.id.desc()
        )
        if limit is not None:
            statement = statement.limit(check_limit(limit, MAX_PAGE_SIZE * 100))
        result = await self._uow.execute(statement, action="list workflows of a definition")
        return [workflow_to_domain(row) for row in result]

    async def delete(self, id: WorkflowId) -> None:
        """Delete the workflow; the database deletes its step executions and artifacts."""
        action = f"delete workflow {id}"
        self._uow.require_writable(action)
        check_id(id, "workflow id")
        result = await self._uow.execute(_DELETE, {"id": id}, action=action)
        if _rowcount(result) == 0:
            raise NotFoundError(_ENTITY, id)

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
            params["state"] = _state(state).value
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
        statement = _list_statement(frozenset(params))
        result = await self._uow.execute(statement, params, action="list workflows")
        items = [workflow_to_domain(row) for row in result]
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            last = items[-1]
            next_cursor = encode_cursor(last.created_at, last.id)
        return Page(items=tuple(items), next_cursor=next_cursor)

    async def _current_state(self, id: WorkflowId, action: str) -> WorkflowState:
        result = await self._uow.execute(_GET_STATE, {"id": id}, action=action)
        value = result.scalar_one_or_none()
        if value is None:
            raise NotFoundError(_ENTITY, id)
        return state_column(WorkflowState, value, table=_TABLE, id=id)


def _state(state: object) -> WorkflowState:
    if isinstance(state, WorkflowState):
        return state
    if type(state) is str:
        try:
            return WorkflowState(state)
        except ValueError:
            pass
    raise ValidationError("state is not a workflow state")


def _rowcount(result: Any) -> int:
    return int(result.rowcount)
