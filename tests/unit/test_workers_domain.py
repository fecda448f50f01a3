"""The domain side of workers: leases and keys on workflows, resume points, error texts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from tests.factories import T0

from ecl_persistence import (
    MISSING,
    ResumePoint,
    StepExecution,
    StepExecutionState,
    StepId,
    ValidationError,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import MAX_ERROR_LENGTH
from ecl_persistence.recorder import describe_exception


def running() -> Workflow:
    return attrs.evolve(Workflow.new("research", {}, now=T0), state=WorkflowState.RUNNING)


def test_workflow_new_takes_an_idempotency_key_and_starts_without_a_lease() -> None:
    workflow = Workflow.new("research", {}, idempotency_key="request-1")
    assert workflow.idempotency_key == "request-1"
    assert (workflow.lease_owner, workflow.lease_expires_at, workflow.claim_count) == (
        None,
        None,
        0,
    )
    assert Workflow.new("research", {}).idempotency_key is None


def test_a_running_workflow_holds_a_lease_of_owner_and_expiry_in_utc() -> None:
    expiry = datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    leased = attrs.evolve(running(), lease_owner="w1", lease_expires_at=expiry)
    assert leased.lease_expires_at == expiry
    assert leased.lease_expires_at is not None
    assert leased.lease_expires_at.tzinfo is UTC


@pytest.mark.parametrize(
    "fields",
    [{"lease_owner": "w1"}, {"lease_expires_at": T0}],
    ids=["owner-without-expiry", "expiry-without-owner"],
)
def test_half_a_lease_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="together"):
        attrs.evolve(running(), **fields)


@pytest.mark.parametrize("state", [s for s in WorkflowState if s is not WorkflowState.RUNNING])
def test_only_a_running_workflow_can_hold_a_lease(state: WorkflowState) -> None:
    with pytest.raises(ValidationError, match="running"):
        attrs.evolve(running(), state=state, lease_owner="w1", lease_expires_at=T0)


def execution(
    step: str, attempt: int, state: StepExecutionState, workflow: Workflow
) -> StepExecution:
    return attrs.evolve(
        StepExecution.start(workflow.id, step, {}, attempt=attempt, now=T0),
        state=state,
        output={"step": step} if state is StepExecutionState.SUCCEEDED else MISSING,
    )


def test_resume_point_answers_what_to_skip_and_what_to_run() -> None:
    workflow = running()
    fetched = execution("fetch", 2, StepExecutionState.SUCCEEDED, workflow)
    point = ResumePoint(
        workflow=workflow, succeeded={StepId("fetch"): fetched}, to_retry={StepId("parse"): 3}
    )
    assert point.is_done("fetch")
    assert not point.is_done("parse")
    assert point.next_attempt("parse") == 3
    assert point.next_attempt("publish") == 1
    assert point.output_of("fetch") == {"step": "fetch"}
    with pytest.raises(ValidationError, match="already succeeded"):
        point.next_attempt("fetch")
    with pytest.raises(ValidationError, match="not succeeded"):
        point.output_of("parse")


def test_resume_point_mappings_are_read_only_copies() -> None:
    retry = {StepId("parse"): 2}
    point = ResumePoint(workflow=running(), succeeded={}, to_retry=retry)
    retry[StepId("parse")] = 9
    assert point.to_retry == {"parse": 2}
    with pytest.raises(TypeError):
        point.to_retry["parse"] = 5  # type: ignore[index]


@pytest.mark.parametrize(
    "problem",
    ["not-a-workflow", "not-a-mapping", "not-an-execution", "wrong-step", "other-workflow",
     "not-succeeded", "attempt-1", "attempt-bool", "both"],
)  # fmt: skip
def test_resume_point_refuses_inconsistent_contents(problem: str) -> None:
    workflow = running()
    other = running()
    fields: dict[str, object] = {"workflow": workflow, "succeeded": {}, "to_retry": {}}
    done = execution("fetch", 1, StepExecutionState.SUCCEEDED, workflow)
    elsewhere = execution("fetch", 1, StepExecutionState.SUCCEEDED, other)
    failed = execution("fetch", 1, StepExecutionState.FAILED, workflow)
    changes: dict[str, dict[str, object]] = {
        "not-a-workflow": {"workflow": "w"},
        "not-a-mapping": {"to_retry": [("parse", 2)]},
        "not-an-execution": {"succeeded": {"fetch": "done"}},
        "wrong-step": {"succeeded": {"parse": done}},
        "other-workflow": {"succeeded": {"fetch": elsewhere}},
        "not-succeeded": {"succeeded": {"fetch": failed}},
        "attempt-1": {"to_retry": {"parse": 1}},
        "attempt-bool": {"to_retry": {"parse": True}},
        "both": {"succeeded": {"fetch": done}, "to_retry": {"fetch": 2}},
    }
    fields.update(changes[problem])
    with pytest.raises(ValidationError):
        ResumePoint(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (ValueError("bad input"), "ValueError: bad input"),
        (KeyError("k"), "KeyError: 'k'"),
        (RuntimeError(), "RuntimeError"),
        (asyncio.CancelledError(), "cancelled"),
        (ValueError("nul\x00 and \ud800 surrogate"), "ValueError: nul\ufffd and ? surrogate"),
    ],
    ids=["message", "key-error", "no-message", "cancelled", "unstorable-characters"],
)
def test_describe_exception_gives_a_storable_text(error: BaseException, text: str) -> None:
    assert describe_exception(error) == text


def test_describe_exception_cuts_a_long_message_to_the_error_limit() -> None:
    text = describe_exception(ValueError("x" * (MAX_ERROR_LENGTH * 2)))
    assert len(text) == MAX_ERROR_LENGTH
    assert text.startswith("ValueError: xxx")
