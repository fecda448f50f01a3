"""The mappers: the only code that knows both an entity and its domain object.

One mapper per entity, each two ways:

- ``<entity>_from_record(record)`` builds the frozen domain object from a
  loaded ORM entity (``WorkflowRecord`` -> :class:`Workflow`), and
  ``<entity>_from_row(row)`` from a Core row of the same columns, for the
  few reads that stay on rows (listed in ``docs/concepts.md``);
- ``<entity>_values(obj)`` gives the entity's attribute values for an
  ORM-enabled INSERT, keyed by attribute name.

A value read back goes through the domain's rules (see ``_values``): a
damaged row raises :class:`~ecl_persistence.SerializationError` or
:class:`~ecl_persistence.QueryFailedError` naming its table, column and id,
never the value.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import Insert, Table, bindparam, insert

from ecl_persistence.domain import (
    Artifact,
    StepExecution,
    StepExecutionState,
    TokenUsage,
    Workflow,
    WorkflowState,
    WorkflowTransition,
)
from ecl_persistence.orm import (
    ArtifactRecord,
    Base,
    StepExecutionRecord,
    WorkflowRecord,
    WorkflowTransitionRecord,
)
from ecl_persistence.repositories._values import (
    build,
    json_value,
    optional_json_value,
    state_value,
    step_execution_from_values,
    stored_value,
    workflow_from_values,
)

__all__ = [
    "artifact_from_record",
    "artifact_from_row",
    "artifact_values",
    "row_binds",
    "row_insert",
    "step_execution_from_record",
    "step_execution_from_row",
    "step_execution_values",
    "transition_from_record",
    "transition_from_row",
    "transition_values",
    "usage_values",
    "workflow_from_record",
    "workflow_from_row",
    "workflow_values",
]

# Attribute names in table column order: a Core row of the table and an
# entity's attributes read the same.
_WORKFLOW_KEYS = tuple(WorkflowRecord.__mapper__.column_attrs.keys())
_STEP_KEYS = tuple(StepExecutionRecord.__mapper__.column_attrs.keys())
_ARTIFACT_KEYS = tuple(ArtifactRecord.__mapper__.column_attrs.keys())
_TRANSITION_KEYS = tuple(WorkflowTransitionRecord.__mapper__.column_attrs.keys())
# Column names, in the same order, for errors that name a damaged column.
_ARTIFACT_COLUMNS = tuple(prop.columns[0].name for prop in ArtifactRecord.__mapper__.column_attrs)
_TRANSITION_COLUMNS = tuple(
    prop.columns[0].name for prop in WorkflowTransitionRecord.__mapper__.column_attrs
)


def _reader(keys: tuple[str, ...]) -> Callable[[object], tuple[Any, ...]]:
    """Read an entity's column attributes, in table order, straight from its ``__dict__``.

    Every column is loaded (none is deferred), and instrumented attribute
    access would cost more than the rest of the mapping.
    """
    pick = operator.itemgetter(*keys)
    return lambda record: pick(record.__dict__)


_READ_WORKFLOW = _reader(_WORKFLOW_KEYS)
_READ_STEP = _reader(_STEP_KEYS)
_READ_ARTIFACT = _reader(_ARTIFACT_KEYS)
_READ_TRANSITION = _reader(_TRANSITION_KEYS)


def row_binds(record_class: type[Base]) -> dict[Any, Any]:
    """Each column of the entity's table, bound by the entity's attribute name."""
    table = cast("Table", record_class.__table__)
    keys = {prop.columns[0].name: key for key, prop in record_class.__mapper__.column_attrs.items()}
    return {column: bindparam(keys[column.name], type_=column.type) for column in table.c}


def row_insert(record_class: type[Base]) -> Insert:
    """A Core INSERT into the entity's table of what ``*_values`` gives.

    An ORM-enabled INSERT of the same values (its bulk mode) puts no entity
    in the session either, and costs more (``docs/concepts.md``, "Entities
    and rows").
    """
    return insert(cast("Table", record_class.__table__)).values(row_binds(record_class))


# --- workflows -------------------------------------------------------------------------

_WORKFLOWS = "workflows"


def workflow_from_row(row: Sequence[Any]) -> Workflow:
    """Build a :class:`Workflow` from a ``workflows`` row (columns in table order)."""
    (id, definition_id, state, input, output, error, created_at, updated_at, completed_at,
     metadata, version, idempotency_key, lease_owner, lease_expires_at,
     claim_count, run_after, priority, cancel_requested_at, forked_from,
     concurrency_key, input_ref, output_ref) = row  # fmt: skip
    values = (
        id,
        definition_id,
        state_value(WorkflowState, state, table=_WORKFLOWS, id=id),
        stored_value(input_ref, table=_WORKFLOWS, column="input_ref", id=id)
        if input_ref is not None
        else json_value(input, table=_WORKFLOWS, column="input", id=id),
        stored_value(output_ref, table=_WORKFLOWS, column="output_ref", id=id)
        if output_ref is not None
        else optional_json_value(output, table=_WORKFLOWS, column="output", id=id),
        error,
        created_at,
        updated_at,
        completed_at,
        json_value(metadata, table=_WORKFLOWS, column="metadata", id=id),
        version,
        idempotency_key,
        lease_owner,
        lease_expires_at,
        claim_count,
        run_after,
        priority,
        cancel_requested_at,
        forked_from,
        concurrency_key,
    )
    return workflow_from_values(values, table=_WORKFLOWS, id=id)


def workflow_from_record(record: WorkflowRecord) -> Workflow:
    """Build a :class:`Workflow` from a loaded ``WorkflowRecord``."""
    return workflow_from_row(_READ_WORKFLOW(record))


def workflow_values(workflow: Workflow) -> dict[str, Any]:
    """The ``WorkflowRecord`` attribute values of ``workflow``."""
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
        "metadata_": workflow.metadata,
        "version": workflow.version,
        "idempotency_key": workflow.idempotency_key,
        "lease_owner": workflow.lease_owner,
        "lease_expires_at": workflow.lease_expires_at,
        "claim_count": workflow.claim_count,
        "run_after": workflow.run_after,
        "priority": workflow.priority,
        "cancel_requested_at": workflow.cancel_requested_at,
        "forked_from": workflow.forked_from,
        "concurrency_key": workflow.concurrency_key,
        "input_ref": None,
        "output_ref": None,
    }


# --- step executions -------------------------------------------------------------------

_STEPS = "step_executions"


def step_execution_from_row(row: Sequence[Any]) -> StepExecution:
    """Build a :class:`StepExecution` from a ``step_executions`` row (table order)."""
    (id, workflow_id, step_id, attempt, state, input, output, error, started_at, completed_at,
     duration_ms, tokens_used, metadata, copied_from, input_tokens, output_tokens,
     cached_tokens, reasoning_tokens, model, cost, input_ref, output_ref) = row  # fmt: skip
    values = (
        id,
        workflow_id,
        step_id,
        attempt,
        state_value(StepExecutionState, state, table=_STEPS, id=id),
        stored_value(input_ref, table=_STEPS, column="input_ref", id=id)
        if input_ref is not None
        else json_value(input, table=_STEPS, column="input", id=id),
        stored_value(output_ref, table=_STEPS, column="output_ref", id=id)
        if output_ref is not None
        else optional_json_value(output, table=_STEPS, column="output", id=id),
        error,
        started_at,
        completed_at,
        duration_ms,
        tokens_used,
        json_value(metadata, table=_STEPS, column="metadata", id=id),
        copied_from,
        _usage_of(id, input_tokens, output_tokens, cached_tokens, reasoning_tokens),
        model,
        cost,
    )
    return step_execution_from_values(values, table=_STEPS, id=id)


def _usage_of(id: object, *counts: object) -> TokenUsage | None:
    """The stored usage of an attempt: None when its four counts are NULL."""
    if all(count is None for count in counts):
        return None
    return build(lambda: TokenUsage(*counts), table=_STEPS, id=id)  # type: ignore[arg-type]


def step_execution_from_record(record: StepExecutionRecord) -> StepExecution:
    """Build a :class:`StepExecution` from a loaded ``StepExecutionRecord``."""
    return step_execution_from_row(_READ_STEP(record))


def step_execution_values(execution: StepExecution) -> dict[str, Any]:
    """The ``StepExecutionRecord`` attribute values of ``execution``."""
    return {
        "id": execution.id,
        "workflow_id": execution.workflow_id,
        "step_id": execution.step_id,
        "attempt": execution.attempt,
        "state": execution.state.value,
        "input": execution.input,
        "output": execution.output,
        "error": execution.error,
        "started_at": execution.started_at,
        "completed_at": execution.completed_at,
        "duration_ms": execution.duration_ms,
        "tokens_used": execution.tokens_used,
        "metadata_": execution.metadata,
        "copied_from": execution.copied_from,
        **usage_values(execution.usage),
        "model": execution.model,
        "cost": execution.cost,
        "input_ref": None,
        "output_ref": None,
    }


def usage_values(usage: TokenUsage | None) -> dict[str, int | None]:
    """The four token count columns of ``usage`` (all None without one)."""
    if usage is None:
        return dict.fromkeys(_USAGE_KEYS)
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_tokens": usage.cached_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


_USAGE_KEYS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")


# --- artifacts -------------------------------------------------------------------------

_ARTIFACTS = "artifacts"


def artifact_from_row(row: Sequence[Any]) -> Artifact:
    """Build an :class:`Artifact` from an ``artifacts`` row (table order)."""
    (id, workflow_id, step_id, name, content_type, path, size_bytes, created_at, metadata) = row
    document = json_value(metadata, table=_ARTIFACTS, column="metadata", id=id)
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
            metadata=document,  # type: ignore[arg-type]
        ),
        table=_ARTIFACTS,
        id=id,
        row=row,
        columns=_ARTIFACT_COLUMNS,
    )


def artifact_from_record(record: ArtifactRecord) -> Artifact:
    """Build an :class:`Artifact` from a loaded ``ArtifactRecord``."""
    return artifact_from_row(_READ_ARTIFACT(record))


def artifact_values(artifact: Artifact) -> dict[str, Any]:
    """The ``ArtifactRecord`` attribute values of ``artifact``."""
    return {
        "id": artifact.id,
        "workflow_id": artifact.workflow_id,
        "step_id": artifact.step_id,
        "name": artifact.name,
        "content_type": artifact.content_type,
        "path": artifact.path,
        "size_bytes": artifact.size_bytes,
        "created_at": artifact.created_at,
        "metadata_": artifact.metadata,
    }


# --- transitions -----------------------------------------------------------------------

_TRANSITIONS = "workflow_transitions"


def transition_from_row(row: Sequence[Any]) -> WorkflowTransition:
    """Build a :class:`WorkflowTransition` from a ``workflow_transitions`` row."""
    id, workflow_id, from_state, to_state, at, actor, reason, version = row
    before = (
        None
        if from_state is None
        else state_value(WorkflowState, from_state, table=_TRANSITIONS, id=id)
    )
    after = state_value(WorkflowState, to_state, table=_TRANSITIONS, id=id)
    return build(
        lambda: WorkflowTransition(
            id=id,
            workflow_id=workflow_id,
            from_state=before,
            to_state=after,
            at=at,
            actor=actor,
            reason=reason,
            version=version,
        ),
        table=_TRANSITIONS,
        id=id,
        row=row,
        columns=_TRANSITION_COLUMNS,
    )


def transition_from_record(record: WorkflowTransitionRecord) -> WorkflowTransition:
    """Build a :class:`WorkflowTransition` from a loaded ``WorkflowTransitionRecord``."""
    return transition_from_row(_READ_TRANSITION(record))


def transition_values(transition: WorkflowTransition) -> dict[str, Any]:
    """The ``WorkflowTransitionRecord`` attribute values of ``transition``."""
    return {
        "id": transition.id,
        "workflow_id": transition.workflow_id,
        "from_state": None if transition.from_state is None else transition.from_state.value,
        "to_state": transition.to_state.value,
        "at": transition.at,
        "actor": transition.actor,
        "reason": transition.reason,
        "version": transition.version,
    }
