"""`ecl-db workflows cancel|retry|fork` and `ecl-db limits`, on both backends."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from tests.cli.helpers import Invoke, json_of, on_database
from tests.factories import StepExecutionFactory, WorkflowFactory

from ecl_persistence import Database, StepExecutionState, Workflow, WorkflowState
from ecl_persistence.cli.runtime import ExitCode
from ecl_persistence.domain import utc_now

W = WorkflowState


def _store(url: str, *workflows: Workflow, steps: tuple[Any, ...] = ()) -> None:
    async def store(db: Database) -> None:
        async with db.session() as uow:
            for workflow in workflows:
                await uow.workflows.create(workflow)
            if steps:
                await uow.step_executions.create_many(list(steps))

    on_database(url, store)


def _state(url: str, workflow: Workflow) -> Workflow:
    async def get(db: Database) -> Workflow:
        async with db.session(read_only=True) as uow:
            found = await uow.workflows.get(workflow.id)
        assert found is not None
        return found

    return on_database(url, get)


def _no_traceback(output: str) -> None:
    assert "Traceback" not in output


def test_cancel_a_pending_workflow_with_a_reason_as_json(ecl_db: Invoke, database_url: str) -> None:
    workflow = WorkflowFactory.build()
    _store(database_url, workflow)
    result = ecl_db("workflows", "cancel", str(workflow.id), "--reason", "wrong topic", "--json")
    document = json_of(result)
    assert (document["id"], document["state"]) == (str(workflow.id), "cancelled")

    async def trail(db: Database) -> tuple[object, ...]:
        async with db.session(read_only=True) as uow:
            last = (await uow.workflows.history(workflow.id))[-1]
        return (last.to_state, last.actor, last.reason)

    assert on_database(database_url, trail) == (W.CANCELLED, "ecl-db", "wrong topic")
    listed = json_of(ecl_db("workflows", "list", "--state", "cancelled", "--json"))
    assert [item["id"] for item in listed["items"]] == [str(workflow.id)]
    shown = ecl_db("workflows", "show", str(workflow.id))
    assert shown.exit_code == 0, shown.output
    assert "cancelled" in shown.output


def test_cancel_a_completed_workflow_exits_1_and_changes_nothing(
    ecl_db: Invoke, database_url: str
) -> None:
    workflow = WorkflowFactory.build(state=W.COMPLETED, completed_at=utc_now())
    _store(database_url, workflow)
    result = ecl_db("workflows", "cancel", str(workflow.id))
    assert result.exit_code == ExitCode.NO
    assert "completed" in result.stderr
    _no_traceback(result.output)
    assert _state(database_url, workflow).state is W.COMPLETED


def test_cancel_a_running_workflow_asks_its_worker(ecl_db: Invoke, database_url: str) -> None:
    workflow = WorkflowFactory.build(
        state=W.RUNNING, lease_owner="w1", lease_expires_at=utc_now().replace(year=2999)
    )
    _store(database_url, workflow)
    result = ecl_db("workflows", "cancel", str(workflow.id), "--actor", "ana")
    assert result.exit_code == 0, result.output
    assert "next heartbeat" in result.stdout
    stored = _state(database_url, workflow)
    assert (stored.state, stored.cancel_requested_at is not None) == (W.RUNNING, True)


@pytest.mark.parametrize("command", ["cancel", "retry"])
def test_bad_and_unknown_ids_exit_2_and_1_without_a_traceback(ecl_db: Invoke, command: str) -> None:
    bad = ecl_db("workflows", command, "not-a-uuid")
    assert bad.exit_code == ExitCode.USAGE
    _no_traceback(bad.output)
    unknown = ecl_db("workflows", command, str(uuid.uuid4()))
    assert unknown.exit_code == ExitCode.NO
    assert "not found" in unknown.stderr
    _no_traceback(unknown.output)


def test_retry_a_failed_workflow_and_refuse_a_pending_one(
    ecl_db: Invoke, database_url: str
) -> None:
    failed = WorkflowFactory.build(state=W.FAILED, error="boom", completed_at=utc_now())
    pending = WorkflowFactory.build()
    _store(database_url, failed, pending)
    document = json_of(ecl_db("workflows", "retry", str(failed.id), "--json"))
    assert (document["state"], document["error"]) == ("pending", None)
    refused = ecl_db("workflows", "retry", str(pending.id))
    assert refused.exit_code == ExitCode.NO
    _no_traceback(refused.output)


def test_fork_from_a_step_with_a_new_input(ecl_db: Invoke, database_url: str) -> None:
    original = WorkflowFactory.build(state=W.COMPLETED, completed_at=utc_now())
    search = StepExecutionFactory.build(
        workflow_id=original.id,
        step_id="search",
        state=StepExecutionState.SUCCEEDED,
        output={"hits": 3},
        completed_at=utc_now(),
    )
    answer = StepExecutionFactory.build(
        workflow_id=original.id,
        step_id="answer",
        state=StepExecutionState.SUCCEEDED,
        started_at=search.started_at.replace(year=search.started_at.year + 1),
        completed_at=utc_now(),
    )
    _store(database_url, original, steps=(search, answer))
    fork = ("workflows", "fork", str(original.id), "--from-step")
    result = ecl_db(*fork, "answer", "--input", '{"q": 1}', "--json")
    document = json_of(result)
    assert (document["forked_from"], document["state"]) == (str(original.id), "pending")
    shown = json_of(ecl_db("workflows", "show", document["id"], "--json"))
    assert [(e["step_id"], e["copied_from"]) for e in shown["step_executions"]] == [
        ("search", str(search.id))
    ]
    unknown_step = ecl_db(*fork, "nowhere")
    assert unknown_step.exit_code == ExitCode.USAGE
    assert "no step" in unknown_step.stderr
    _no_traceback(unknown_step.output)
    bad_json = ecl_db(*fork, "answer", "--input", "{")
    assert bad_json.exit_code == ExitCode.USAGE
    _no_traceback(bad_json.output)
    missing = ecl_db("workflows", "fork", str(original.id))
    assert missing.exit_code == ExitCode.USAGE


def test_limits_set_list_and_remove(ecl_db: Invoke) -> None:
    assert ecl_db("limits", "list").stdout.strip() == "No concurrency limits."
    document = json_of(ecl_db("limits", "set", "openai", "3", "--json"))
    assert (document["key"], document["max_running"], document["running"]) == ("openai", 3, 0)
    assert ecl_db("limits", "set", "tenant-a", "0").exit_code == 0
    listed = json_of(ecl_db("limits", "list", "--json"))
    assert [(x["key"], x["max_running"]) for x in listed] == [("openai", 3), ("tenant-a", 0)]
    assert "0/3 running" in ecl_db("limits", "list").stdout
    assert ecl_db("limits", "set", "openai", "none").exit_code == 0
    assert ecl_db("limits", "remove", "tenant-a").exit_code == 0
    assert json_of(ecl_db("limits", "list", "--json")) == []
    for bad in ("-1", "two", "1.5", str(2**31)):
        result = ecl_db("limits", "set", "openai", bad)
        assert result.exit_code == ExitCode.USAGE, bad
        _no_traceback(result.output)
    empty_key = ecl_db("limits", "set", "", "1")
    assert empty_key.exit_code == ExitCode.USAGE
    _no_traceback(empty_key.output)
