"""The worker layer's values: retry policies, leases as fencing tokens, due times and priorities."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from tests.factories import T0

from ecl_persistence import Lease, Retry, ValidationError, Workflow, WorkflowState
from ecl_persistence.domain import MAX_ATTEMPT, MAX_PRIORITY, MIN_PRIORITY, WorkflowId, new_uuid7


def test_retry_defaults_to_three_attempts_doubling_from_one_second() -> None:
    policy = Retry()
    assert (policy.max_attempts, policy.delay_seconds, policy.backoff) == (3, 1.0, 2.0)
    assert [policy.delay_after(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_retry_delays_grow_by_the_backoff_up_to_the_cap() -> None:
    policy = Retry(max_attempts=20, delay_seconds=10, backoff=3, max_delay_seconds=100)
    assert [policy.delay_after(n) for n in (1, 2, 3, 4)] == [10.0, 30.0, 90.0, 100.0]
    # No overflow for a failure count the exponent cannot take.
    assert Retry(max_attempts=MAX_ATTEMPT, backoff=10.0).delay_after(MAX_ATTEMPT) == 300.0
    assert Retry(backoff=1, delay_seconds=0.5).delay_after(7) == 0.5


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": MAX_ATTEMPT + 1}, "max_attempts"),
        ({"max_attempts": 2.0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"delay_seconds": -1}, "delay_seconds"),
        ({"delay_seconds": math.nan}, "delay_seconds"),
        ({"delay_seconds": math.inf}, "delay_seconds"),
        ({"delay_seconds": "1"}, "delay_seconds"),
        ({"backoff": 0.5}, "backoff"),
        ({"backoff": False}, "backoff"),
        ({"max_delay_seconds": -0.1}, "max_delay_seconds"),
    ],
)
def test_retry_refuses_bad_values(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Retry(**fields)


@pytest.mark.parametrize("failures", [0, -1, 1.0, None])
def test_retry_delay_after_needs_a_positive_failure_count(failures: Any) -> None:
    with pytest.raises(ValidationError, match="failures"):
        Retry().delay_after(failures)


def test_a_lease_is_frozen_and_validated() -> None:
    lease = Lease(WorkflowId(new_uuid7()), "w1", 3)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        lease.owner = "w2"  # type: ignore[misc]
    bad: list[tuple[dict[str, Any], str]] = [
        ({"workflow_id": "not-a-uuid"}, "workflow_id"),
        ({"owner": ""}, "owner"),
        ({"owner": "w" * 256}, "owner"),
        ({"claim_count": 0}, "claim_count"),
    ]
    for fields, message in bad:
        with pytest.raises(ValidationError, match=message):
            attrs.evolve(lease, **fields)


def test_workflow_lease_names_the_claim_it_was_read_under() -> None:
    running = attrs.evolve(
        Workflow.new("research", {}, now=T0),
        state=WorkflowState.RUNNING,
        lease_owner="w1",
        lease_expires_at=T0,
        claim_count=4,
    )
    assert running.lease == Lease(running.id, "w1", 4)
    assert Workflow.new("research", {}).lease is None


def test_workflow_new_takes_a_due_time_and_a_priority() -> None:
    east = timezone(timedelta(hours=2))
    workflow = Workflow.new(
        "research", {}, run_after=datetime(2024, 1, 1, 2, tzinfo=east), priority=7
    )
    assert (workflow.run_after, workflow.priority) == (T0, 7)
    assert (Workflow.new("research", {}).run_after, Workflow.new("research", {}).priority) == (
        None,
        0,
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"run_after": datetime(2024, 1, 1)}, "run_after"),
        ({"run_after": "2024-01-01"}, "run_after"),
        ({"priority": MAX_PRIORITY + 1}, "priority"),
        ({"priority": MIN_PRIORITY - 1}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"priority": True}, "priority"),
    ],
)
def test_workflow_new_refuses_a_bad_due_time_or_priority(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Workflow.new("research", {}, **fields)
