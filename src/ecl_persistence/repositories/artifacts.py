"""The artifact repository: records of files and objects that steps produced, as entities."""

from __future__ import annotations

import functools
from typing import cast

from sqlalchemy import Insert, Table, bindparam, delete, insert, select

from ecl_persistence.dialects import DialectStrategy, LockMode
from ecl_persistence.domain import (
    MAX_ID_LENGTH,
    Artifact,
    ArtifactId,
    Lease,
    StepId,
    WorkflowId,
    check_lease,
    check_text,
)
from ecl_persistence.errors import NotFoundError, ValidationError
from ecl_persistence.orm import ArtifactRecord, WorkflowRecord
from ecl_persistence.repositories import _fencing, _leases
from ecl_persistence.repositories._checks import check_id, check_payloads
from ecl_persistence.repositories._context import UnitContext
from ecl_persistence.repositories._leases import lease_params
from ecl_persistence.repositories.mappers import (
    artifact_from_record,
    artifact_values,
    row_binds,
    row_insert,
)

__all__ = ["ArtifactRepository"]

_R = ArtifactRecord
_ENTITY = "artifact"

_GET = select(_R).where(_R.id == bindparam("id"))
_FOR_WORKFLOW = (
    select(_R)
    .where(_R.workflow_id == bindparam("wid"))
    .order_by(_R.created_at, _R.step_id, _R.name)
)
_FOR_STEP = (
    select(_R)
    .where(_R.workflow_id == bindparam("wid"), _R.step_id == bindparam("sid"))
    .order_by(_R.created_at, _R.name)
)
_INSERT = row_insert(_R)
_TABLE = cast("Table", ArtifactRecord.__table__)


@functools.cache
def _insert_leased(strategy: DialectStrategy) -> Insert:
    """Insert an artifact selected from its workflow's row while the lease is current, locked."""
    values = row_binds(_R).values()
    source = select(*values).where(WorkflowRecord.id == bindparam("workflow_id"), *_leases.FENCE)
    columns = [column.name for column in _TABLE.c]
    locked = strategy.lock(source, LockMode.UPDATE)
    return insert(_TABLE).from_select(columns, locked).returning(_TABLE.c.id)


_DELETE = delete(_R).where(_R.id == bindparam("id")).execution_options(synchronize_session="fetch")


class ArtifactRepository:
    """Artifacts of one unit of work. The bytes live elsewhere; ``path`` says where."""

    __slots__ = ("_uow",)

    def __init__(self, uow: UnitContext) -> None:
        self._uow = uow

    async def create(self, artifact: Artifact, *, lease: Lease | None = None) -> Artifact:
        """Insert ``artifact``.

        An unknown workflow, or a name the step already used, raises
        ConstraintViolationError. With ``lease`` (a fencing token,
        :class:`~ecl_persistence.Lease`) the row is inserted only if that
        lease is still the workflow's, checked in the INSERT itself:
        LeaseLostError (NotFoundError for an unknown workflow) otherwise,
        with nothing written.
        """
        if not isinstance(artifact, Artifact):
            raise ValidationError("create expects an Artifact")
        action = f"create artifact {artifact.id}"
        self._uow.require_writable(action)
        check_payloads(self._uow, artifact.metadata)
        values = artifact_values(artifact)
        if lease is None:
            await self._uow.execute(_INSERT, values, action=action)
            return artifact
        values.update(lease_params(check_lease(lease, artifact.workflow_id)))
        inserted = await self._uow.execute(
            _insert_leased(self._uow.strategy), values, action=action
        )
        if inserted.first() is None:
            await _fencing.check_current(self._uow, lease, action)
            raise NotFoundError("workflow", artifact.workflow_id)  # pragma: no cover - just checked
        return artifact

    async def get(self, id: ArtifactId | str) -> Artifact | None:
        """The artifact with this id (a UUID or its text), or ``None``."""
        id = check_id(id, "artifact id")
        result = await self._uow.execute(_GET, {"id": id}, action=f"get artifact {id}")
        record = result.scalars().first()
        return None if record is None else artifact_from_record(record)

    async def list_for_workflow(self, workflow_id: WorkflowId | str) -> list[Artifact]:
        """Every artifact of the workflow, oldest first."""
        workflow_id = check_id(workflow_id, "workflow id")
        result = await self._uow.execute(
            _FOR_WORKFLOW, {"wid": workflow_id}, action=f"list artifacts of {workflow_id}"
        )
        return [artifact_from_record(record) for record in result.scalars()]

    async def list_for_step(
        self, workflow_id: WorkflowId | str, step_id: StepId | str
    ) -> list[Artifact]:
        """The artifacts one step of the workflow produced, oldest first."""
        workflow_id = check_id(workflow_id, "workflow id")
        step = check_text(step_id, field="step_id", max_length=MAX_ID_LENGTH)
        result = await self._uow.execute(
            _FOR_STEP, {"wid": workflow_id, "sid": step}, action=f"list artifacts of {workflow_id}"
        )
        return [artifact_from_record(record) for record in result.scalars()]

    async def delete(self, id: ArtifactId | str) -> None:
        """Delete the artifact's record (not the bytes it points to)."""
        id = check_id(id, "artifact id")
        action = f"delete artifact {id}"
        self._uow.require_writable(action)
        result = await self._uow.execute(_DELETE, {"id": id}, action=action)
        if int(getattr(result, "rowcount", 0)) == 0:
            raise NotFoundError(_ENTITY, id)
