"""The artifact repository: records of files and objects that steps produced."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, insert, select

from ecl_persistence.domain import (
    MAX_ID_LENGTH,
    Artifact,
    ArtifactId,
    StepId,
    WorkflowId,
    check_text,
)
from ecl_persistence.errors import NotFoundError, ValidationError
from ecl_persistence.orm import ARTIFACTS
from ecl_persistence.repositories._checks import check_id, check_payloads
from ecl_persistence.repositories._rows import build, json_column

if TYPE_CHECKING:
    from ecl_persistence.unit_of_work import UnitOfWork

__all__ = ["ArtifactRepository", "artifact_to_domain", "artifact_to_row"]

_T = ARTIFACTS.c
_TABLE = "artifacts"
_ENTITY = "artifact"

_SELECT = select(*ARTIFACTS.c)
_GET = _SELECT.where(_T.id == bindparam("id"))
_FOR_WORKFLOW = _SELECT.where(_T.workflow_id == bindparam("wid")).order_by(
    _T.created_at, _T.step_id, _T.name
)
_FOR_STEP = _SELECT.where(
    _T.workflow_id == bindparam("wid"), _T.step_id == bindparam("sid")
).order_by(_T.created_at, _T.name)
_INSERT = insert(ARTIFACTS)
_DELETE = delete(ARTIFACTS).where(_T.id == bindparam("id"))


def artifact_to_domain(row: Sequence[Any]) -> Artifact:
    """Build an :class:`Artifact` from an ``artifacts`` row (table order)."""
    (id, workflow_id, step_id, name, content_type, path, size_bytes, created_at, metadata) = row
    return build(
        lambda: Artifact(
            id=id,
            workflow_id=workflow_id,
            step_id=step_id,
            name=name,
            content_type=content_type,
            path=path,
            size_bytes=size_bytes,
            created_at=created_at,
            metadata=json_column(metadata, table=_TABLE, column="metadata", id=id),  # type: ignore[arg-type]
        ),
        table=_TABLE,
        id=id,
    )


def artifact_to_row(artifact: Artifact) -> dict[str, Any]:
    """The bind parameters of an ``artifacts`` row for ``artifact``."""
    return {
        "id": artifact.id,
        "workflow_id": artifact.workflow_id,
        "step_id": artifact.step_id,
        "name": artifact.name,
        "content_type": artifact.content_type,
        "path": artifact.path,
        "size_bytes": artifact.size_bytes,
        "created_at": artifact.created_at,
        "metadata": artifact.metadata,
    }


class ArtifactRepository:
    """Artifacts of one unit of work. The bytes live elsewhere; ``path`` says where."""

    __slots__ = ("_uow",)

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    async def create(self, artifact: Artifact) -> Artifact:
        """Insert ``artifact``.

        An unknown workflow, or a name the step already used, raises
        ConstraintViolationError.
        """
        if not isinstance(artifact, Artifact):
            raise ValidationError("create expects an Artifact")
        action = f"create artifact {artifact.id}"
        self._uow.require_writable(action)
        check_payloads(self._uow, artifact.metadata)
        await self._uow.execute(_INSERT, artifact_to_row(artifact), action=action)
        return artifact

    async def get(self, id: ArtifactId) -> Artifact | None:
        """The artifact with this id, or ``None``."""
        check_id(id, "artifact id")
        result = await self._uow.execute(_GET, {"id": id}, action=f"get artifact {id}")
        row = result.first()
        return None if row is None else artifact_to_domain(row)

    async def list_for_workflow(self, workflow_id: WorkflowId) -> list[Artifact]:
        """Every artifact of the workflow, oldest first."""
        check_id(workflow_id, "workflow id")
        result = await self._uow.execute(
            _FOR_WORKFLOW, {"wid": workflow_id}, action=f"list artifacts of {workflow_id}"
        )
        return [artifact_to_domain(row) for row in result]

    async def list_for_step(self, workflow_id: WorkflowId, step_id: StepId | str) -> list[Artifact]:
        """The artifacts one step of the workflow produced, oldest first."""
        check_id(workflow_id, "workflow id")
        step = check_text(step_id, field="step_id", max_length=MAX_ID_LENGTH)
        result = await self._uow.execute(
            _FOR_STEP, {"wid": workflow_id, "sid": step}, action=f"list artifacts of {workflow_id}"
        )
        return [artifact_to_domain(row) for row in result]

    async def delete(self, id: ArtifactId) -> None:
        """Delete the artifact's record (not the bytes it points to)."""
        action = f"delete artifact {id}"
        self._uow.require_writable(action)
        check_id(id, "artifact id")
        result = await self._uow.execute(_DELETE, {"id": id}, action=action)
        if int(getattr(result, "rowcount", 0)) == 0:
            raise NotFoundError(_ENTITY, id)
