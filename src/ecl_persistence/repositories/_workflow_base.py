"""What the parts of the workflow repository share: their unit, and how a miss is explained."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Result

from ecl_persistence.domain import Lease, Workflow, WorkflowId, WorkflowState, check_lease
from ecl_persistence.errors import ConflictError, NotFoundError, ValidationError
from ecl_persistence.orm import WorkflowRecord
from ecl_persistence.repositories import _workflow_sql as sql
from ecl_persistence.repositories._context import UnitContext
from ecl_persistence.repositories._fencing import lease_lost
from ecl_persistence.repositories._leases import lease_params
from ecl_persistence.repositories._values import state_value
from ecl_persistence.repositories.mappers import workflow_from_record, workflow_from_row

__all__ = [
    "ENTITY",
    "TABLE_NAME",
    "WorkflowRepositoryBase",
    "as_state",
    "expect_lease",
    "expect_version",
]

ENTITY = "workflow"
"""How errors name a workflow."""
TABLE_NAME = "workflows"
"""The table errors name."""


class WorkflowRepositoryBase:
    """The unit of work of a workflow repository and the helpers of its methods."""

    __slots__ = ("_uow",)

    def __init__(self, uow: UnitContext) -> None:
        self._uow = uow

    async def _diagnose(
        self, id: WorkflowId, expected_version: int | None, action: str, lease: Lease | None = None
    ) -> tuple[WorkflowState, str | None]:
        """After a write matched no row: raise NotFoundError, LeaseLostError or ConflictError.

        Otherwise return the workflow's state and lease owner for the caller to explain.
        """
        row = (await self._uow.execute(sql.GET_STATUS, {"id": id}, action=action)).first()
        if row is None:
            raise NotFoundError(ENTITY, id)
        state, version, owner, claims = tuple(row)
        current = state_value(WorkflowState, state, table=TABLE_NAME, id=id)
        if lease is not None and (owner, claims) != (lease.owner, lease.claim_count):
            raise lease_lost(action, lease, current, owner, claims)
        if expected_version is not None and version != expected_version:
            raise ConflictError(
                f"{action}: the workflow is at version {version}, not {expected_version}"
            )
        return current, owner


def one_workflow(result: Result[Any]) -> Workflow | None:
    """The workflow an ORM statement returned as its one entity, or None."""
    record = result.scalars().first()
    return None if record is None else workflow_from_record(record)


def one_workflow_row(uow: UnitContext, result: Result[Any]) -> Workflow | None:
    """The workflow a statement through the table returned as its one row, or None.

    An entity of it that the session holds gets the row (``keep_fresh``).
    """
    row = result.first()
    if row is None:
        return None
    uow.keep_fresh(WorkflowRecord, row)
    return workflow_from_row(row)


def as_state(state: object) -> WorkflowState:
    """``state`` as a :class:`WorkflowState`, also from its exact string value."""
    if isinstance(state, WorkflowState):
        return state
    if type(state) is str:
        try:
            return WorkflowState(state)
        except ValueError:
            pass
    raise ValidationError("state is not a workflow state")


def expect_version(params: dict[str, Any], expected_version: int | None) -> bool:
    """Add ``expected_version`` to ``params`` if given; return whether it was."""
    if expected_version is None:
        return False
    if type(expected_version) is not int or expected_version < 1:
        raise ValidationError("expected_version must be a positive integer")
    params["expected_version"] = expected_version
    return True


def expect_lease(params: dict[str, Any], lease: Lease | None, workflow_id: WorkflowId) -> bool:
    """Add the fence of ``lease`` (on ``workflow_id``) to ``params``; whether there is one."""
    if lease is None:
        return False
    params.update(lease_params(check_lease(lease, workflow_id)))
    return True
