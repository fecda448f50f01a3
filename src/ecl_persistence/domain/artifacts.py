"""Artifacts: records of files and objects that steps produced, stored elsewhere."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import attrs

from ecl_persistence.domain import _fields
from ecl_persistence.domain.clock import utc_now
from ecl_persistence.domain.ids import MAX_ID_LENGTH, ArtifactId, StepId, WorkflowId, new_uuid7
from ecl_persistence.domain.paths import check_artifact_path
from ecl_persistence.domain.payload import JsonValue, check_text
from ecl_persistence.errors import ValidationError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

__all__ = ["Artifact"]

_CONTENT_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*"
    # Parameters may not hold control characters: content types end up in
    # HTTP headers, where a CR or LF would start a new header.
    r"(?:[ \t]*;[^\x00-\x1f\x7f]*)?"
)


def _name(value: str) -> str:
    return check_text(value, field="name", max_length=MAX_ID_LENGTH)


def _step_id(value: StepId | str) -> StepId:
    return StepId(check_text(value, field="step_id", max_length=MAX_ID_LENGTH))


def _content_type(value: str) -> str:
    text = check_text(value, field="content_type", max_length=MAX_ID_LENGTH)
    if _CONTENT_TYPE.fullmatch(text) is None:
        raise ValidationError("content_type must look like type/subtype")
    return text


def _path(value: str) -> str:
    return check_artifact_path(value)


@attrs.frozen
class Artifact:
    """A file or object produced by a step, stored outside the database.

    Instances are frozen and validated on construction: ``path`` passes
    :func:`~ecl_persistence.domain.check_artifact_path` (a relative path or a
    non-``file`` URI that cannot escape its root), ``content_type`` looks like
    ``type/subtype``, ``size_bytes`` is a non-negative 64-bit integer and
    ``created_at`` is aware and in UTC. Build new artifacts with :meth:`new`.
    """

    id: ArtifactId = attrs.field(converter=_fields.uuid_from_text, validator=_fields.uuid_value)
    workflow_id: WorkflowId = attrs.field(
        converter=_fields.uuid_from_text, validator=_fields.uuid_value
    )
    step_id: StepId = attrs.field(converter=_step_id)
    name: str = attrs.field(converter=_name)
    content_type: str = attrs.field(converter=_content_type)
    path: str = attrs.field(converter=_path)
    size_bytes: int = attrs.field(validator=_fields.integer(minimum=0))
    created_at: datetime = attrs.field(
        converter=_fields.utc_datetime, validator=_fields.aware_utc()
    )
    metadata: dict[str, JsonValue] = attrs.field(
        validator=_fields.json_object, repr=_fields.redacted
    )

    @classmethod
    def new(
        cls,
        workflow_id: WorkflowId | str,
        step_id: StepId | str,
        name: str,
        *,
        content_type: str = "application/octet-stream",
        path: str,
        size_bytes: int,
        metadata: Mapping[str, JsonValue] | None = None,
        id: ArtifactId | str | None = None,
        now: datetime | None = None,
    ) -> Artifact:
        """Return an artifact created ``now`` (default: the current time)."""
        return cls(
            id=ArtifactId(new_uuid7()) if id is None else id,
            workflow_id=workflow_id,
            step_id=StepId(step_id),
            name=name,
            content_type=content_type,
            path=path,
            size_bytes=size_bytes,
            created_at=utc_now() if now is None else now,
            metadata=_fields.copy_metadata(metadata),
        )
