"""WorkflowTransition: a validated, frozen record of one state change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from tests.factories import T0

from ecl_persistence import ValidationError, Workflow, WorkflowState, WorkflowTransition
from ecl_persistence.domain import new_uuid7


def fields(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": new_uuid7(),
        "workflow_id": new_uuid7(),
        "from_state": WorkflowState.PENDING,
        "to_state": WorkflowState.RUNNING,
        "at": T0,
        "actor": "worker-1",
        "reason": None,
        "version": 2,
    }
    return {**base, **changes}


def test_of_records_the_workflow_as_it_is_after_the_change() -> None:
    workflow = attrs.evolve(
        Workflow.new("research", {"q": 1}, now=T0),
        state=WorkflowState.FAILED,
        updated_at=T0 + timedelta(seconds=5),
        version=4,
    )
    transition = WorkflowTransition.of(
        workflow, WorkflowState.RUNNING, actor="w-1", reason="timeout"
    )
    assert (transition.workflow_id, transition.from_state, transition.to_state) == (
        workflow.id,
        WorkflowState.RUNNING,
        WorkflowState.FAILED,
    )
    assert (transition.at, transition.version) == (T0 + timedelta(seconds=5), 4)
    assert (transition.actor, transition.reason) == ("w-1", "timeout")
    assert transition.id != WorkflowTransition.of(workflow, None).id


def test_states_given_as_their_values_become_states_and_times_utc() -> None:
    east = timezone(timedelta(hours=2))
    transition = WorkflowTransition(
        **fields(from_state=None, to_state="completed", at=datetime(2024, 1, 1, 2, tzinfo=east))
    )
    assert transition.from_state is None
    assert transition.to_state is WorkflowState.COMPLETED
    assert transition.at == T0
    assert transition.at.tzinfo is UTC


@pytest.mark.parametrize(
    "bad",
    [
        {"id": "not-a-uuid"},
        {"workflow_id": None},
        {"from_state": "paused"},
        {"to_state": None},
        {"to_state": "succeeded"},
        {"at": datetime(2024, 1, 1)},
        {"actor": ""},
        {"actor": "x" * 256},
        {"reason": "nul \x00"},
        {"reason": "x" * 65537},
        {"version": 0},
        {"version": True},
    ],
    ids=lambda bad: next(iter(bad)),
)
def test_invalid_fields_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        WorkflowTransition(**fields(**bad))


def test_a_transition_is_frozen() -> None:
    transition = WorkflowTransition(**fields())
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        transition.reason = "rewritten"  # type: ignore[misc]
