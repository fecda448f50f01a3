"""``ecl-db demo --crash-after`` and ``--resume``: a real crash, a stale lease, a resume.

The crash is a real process that ends itself mid-workflow; the resume takes
the workflow over once the crashed process's lease has expired and runs only
the steps that had not succeeded. Both backends.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from tests.cli.helpers import Invoke, json_of, on_database
from tests.factories import WorkflowFactory, create_workflows, leased_workflow, stored_workflow

from ecl_persistence import (
    Artifact,
    Database,
    StepExecution,
    StepExecutionState,
    StepId,
    Workflow,
    WorkflowId,
    WorkflowState,
)
from ecl_persistence.cli import demo, demo_steps
from ecl_persistence.cli.demo import DEFINITION_ID, STEPS, CannotResumeError, run_demo
from ecl_persistence.cli.runtime import ExitCode
from ecl_persistence.domain import utc_now

FULL_HISTORY = [
    ("gather", 1, "succeeded"),
    ("summarise", 1, "failed"),
    ("summarise", 2, "succeeded"),
    ("publish", 1, "succeeded"),
]
RESUME_LINE = re.compile(r"ecl-db demo --resume ([0-9a-f-]{36})")


def _crashed_id(stderr: str) -> WorkflowId:
    match = RESUME_LINE.search(stderr)
    assert match, stderr
    return WorkflowId(uuid.UUID(match.group(1)))


async def _attempts(db: Database, workflow_id: WorkflowId) -> list[StepExecution]:
    async with db.session(read_only=True) as uow:
        return await uow.step_executions.get_for_workflow(workflow_id)


def _history(executions: list[StepExecution]) -> list[tuple[str, int, str]]:
    return [(e.step_id, e.attempt, e.state.value) for e in executions]


def _wait_until_the_lease_expires(url: str, workflow_id: WorkflowId) -> Workflow:
    """Sleep until the stored lease has expired, however long that takes; return the workflow."""
    workflow = on_database(url, lambda db: stored_workflow(db, workflow_id))
    assert workflow.lease_expires_at is not None
    while utc_now() <= workflow.lease_expires_at:
        time.sleep(0.05)
    return workflow


def test_a_crashed_demo_is_listed_stale_and_its_resume_skips_the_succeeded_step(
    ecl_db: Invoke, database_url: str, tmp_path: Path
) -> None:
    crashed = subprocess.run(
        [sys.executable, "-m", "ecl_persistence", "--database-url", database_url, "demo",
         "--crash-after", "gather", "--lease-seconds", "1"],
        capture_output=True, text=True, cwd=tmp_path, check=False, timeout=120,
    )  # fmt: skip
    assert crashed.returncode == ExitCode.CRASHED, crashed.stderr
    assert "Crashed on purpose after step gather" in crashed.stderr
    assert "Traceback" not in crashed.stderr
    workflow_id = _crashed_id(crashed.stderr)
    assert f"Claimed new workflow {workflow_id} as demo-" in crashed.stdout

    # What the crash left: the workflow running under the dead process's lease.
    orphan = _wait_until_the_lease_expires(database_url, workflow_id)
    assert orphan.state is WorkflowState.RUNNING
    assert orphan.lease_owner is not None
    assert orphan.lease_owner.startswith("demo-")
    assert orphan.lease_owner != f"demo-{os.getpid()}"
    before = on_database(database_url, lambda db: _attempts(db, workflow_id))
    assert _history(before) == [("gather", 1, "succeeded")]
    shown = ecl_db("workflows", "show", str(workflow_id))
    assert f"{orphan.lease_owner} until" in shown.stdout

    [stale] = json_of(ecl_db("workflows", "list", "--stale", "--json"))["items"]
    assert stale["id"] == str(workflow_id)
    assert (stale["state"], stale["lease_owner"]) == ("running", orphan.lease_owner)

    resumed = ecl_db("demo", "--resume", str(workflow_id), "--artifacts-dir", str(tmp_path))
    assert resumed.exit_code == 0, resumed.output
    assert "skipped gather (succeeded in attempt 1)" in resumed.stdout

    after = on_database(database_url, lambda db: _attempts(db, workflow_id))
    assert _history(after) == FULL_HISTORY
    # The step that succeeded before the crash was not run again: same attempt, same row.
    assert [e for e in after if e.step_id == "gather"] == [before[0]]
    done = on_database(database_url, lambda db: stored_workflow(db, workflow_id))
    assert done.state is WorkflowState.COMPLETED
    assert (done.lease_owner, done.claim_count) == (None, 2)
    assert json_of(ecl_db("workflows", "list", "--stale", "--json"))["items"] == []
    assert (tmp_path / f"artifacts/{workflow_id}/summary.md").is_file()


def _crash_in_process(monkeypatch: pytest.MonkeyPatch, ecl_db: Invoke, *args: str) -> Result:
    """Run a crashing demo in this process: os._exit becomes a SystemExit that click reports."""

    def exit_now(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", exit_now)
    return ecl_db("demo", *args)


@pytest.mark.parametrize("step", STEPS)
def test_resume_after_a_crash_after_each_step_runs_only_the_steps_left(
    ecl_db: Invoke, database_url: str, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    crashed = _crash_in_process(
        monkeypatch, ecl_db, "--crash-after", step, "--lease-seconds", "0.1"
    )
    assert crashed.exit_code == ExitCode.CRASHED, crashed.output
    workflow_id = _crashed_id(crashed.stderr)
    orphan = _wait_until_the_lease_expires(database_url, workflow_id)
    assert (orphan.state, orphan.lease_owner) == (WorkflowState.RUNNING, f"demo-{os.getpid()}")
    before = on_database(database_url, lambda db: _attempts(db, workflow_id))
    done_before = STEPS[: STEPS.index(step) + 1]
    assert {e.step_id for e in before} == set(done_before)
    assert before[-1].state is StepExecutionState.SUCCEEDED

    document = json_of(ecl_db("demo", "--resume", str(workflow_id), "--json"))

    assert document["workflow"]["state"] == "completed"
    assert document["workflow"]["output_bytes"] > 0
    assert [(e["step_id"], e["attempt"], e["state"]) for e in document["step_executions"]] == (
        FULL_HISTORY
    )
    after = on_database(database_url, lambda db: _attempts(db, workflow_id))
    assert after[: len(before)] == before, "what succeeded before the crash was not run again"
    assert len(document["artifacts"]) == 1


def test_resume_waits_for_a_live_lease_to_expire_then_takes_the_workflow_over(
    ecl_db: Invoke, database_url: str
) -> None:
    workflow = WorkflowFactory.build(definition_id=DEFINITION_ID, input={"topic": "tides"})

    async def claimed_elsewhere(db: Database) -> Workflow:
        await create_workflows(db, workflow)
        async with db.session() as uow:
            return await uow.workflows.claim_by_id(workflow.id, "demo-elsewhere", lease_seconds=2)

    held = on_database(database_url, claimed_elsewhere)

    result = ecl_db("demo", "--resume", str(workflow.id))

    assert result.exit_code == 0, result.output
    assert "for the lease of demo-elsewhere" in result.stdout
    assert f"Claimed workflow {workflow.id} as demo-{os.getpid()}" in result.stdout
    assert "skipped" not in result.stdout
    done = on_database(database_url, lambda db: stored_workflow(db, workflow.id))
    assert done.state is WorkflowState.COMPLETED
    assert done.claim_count == held.claim_count + 1
    assert _history(on_database(database_url, lambda db: _attempts(db, workflow.id))) == (
        FULL_HISTORY
    )


def test_resume_of_a_released_demo_workflow_claims_it_at_once(
    ecl_db: Invoke, database_url: str
) -> None:
    workflow = WorkflowFactory.build(definition_id=DEFINITION_ID, input={"topic": "tides"})
    on_database(database_url, lambda db: create_workflows(db, workflow))

    result = ecl_db("demo", "--resume", str(workflow.id), "--lease-seconds", "30")

    assert result.exit_code == 0, result.output
    assert "Waiting" not in result.stdout
    assert "(lease 30 s, claim 1); resuming it." in result.stdout
    done = on_database(database_url, lambda db: stored_workflow(db, workflow.id))
    assert done.state is WorkflowState.COMPLETED


def test_publish_interrupted_after_recording_its_artifact_is_rerun_without_a_second_one(
    ecl_db: Invoke, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    crashed = _crash_in_process(
        monkeypatch, ecl_db, "--crash-after", "summarise", "--lease-seconds", "0.1"
    )
    workflow_id = _crashed_id(crashed.stderr)
    orphan = _wait_until_the_lease_expires(database_url, workflow_id)
    relative = f"artifacts/{workflow_id}/summary.md"

    async def interrupted_publish(db: Database) -> Artifact:
        # What a worker dying inside publish leaves: a running attempt, the artifact recorded.
        async with db.session() as uow:
            await uow.step_executions.start(workflow_id, "publish", {"format": "markdown"})
            return await uow.artifacts.create(
                Artifact.new(
                    workflow_id, StepId("publish"), "summary.md", path=relative, size_bytes=10
                )
            )

    recorded = on_database(database_url, interrupted_publish)

    result = ecl_db("demo", "--resume", str(workflow_id), "--artifacts-dir", str(tmp_path))

    assert result.exit_code == 0, result.output
    assert "publish    attempt 2  succeeded" in result.stdout

    async def artifacts(db: Database) -> list[Artifact]:
        async with db.session(read_only=True) as uow:
            return await uow.artifacts.list_for_workflow(workflow_id)

    assert on_database(database_url, artifacts) == [recorded]
    assert (tmp_path / relative).is_file()
    history = _history(on_database(database_url, lambda db: _attempts(db, workflow_id)))
    assert history[-2:] == [("publish", 1, "running"), ("publish", 2, "succeeded")]
    assert orphan.claim_count == 1


def test_a_new_demo_claims_its_own_workflow_not_an_older_stale_one(
    ecl_db: Invoke, database_url: str
) -> None:
    stale = leased_workflow(
        "demo-dead", utc_now() - timedelta(minutes=5), definition_id=DEFINITION_ID
    )
    on_database(database_url, lambda db: create_workflows(db, stale))

    document = json_of(ecl_db("demo", "--json"))

    assert document["workflow"]["id"] != str(stale.id)
    assert document["workflow"]["state"] == "completed"
    assert on_database(database_url, lambda db: stored_workflow(db, stale.id)) == stale


def _seeded(database_url: str, **fields: Any) -> Workflow:
    fields.setdefault("definition_id", DEFINITION_ID)
    workflow = WorkflowFactory.build(**fields)
    on_database(database_url, lambda db: create_workflows(db, workflow))
    return workflow


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        ({"state": "completed"}, ExitCode.NO, "is already completed: nothing to resume"),
        ({"state": "failed", "error": "boom"}, ExitCode.NO, "failed (boom)"),
        ({"definition_id": "research"}, ExitCode.USAGE, "not a demo workflow"),
        (
            {
                "state": "running",
                "lease_owner": "w",
                "lease_expires_at": utc_now() + timedelta(hours=1),
            },
            ExitCode.NO,
            "is leased to w until",
        ),
    ],
    ids=["completed", "failed", "other-definition", "lease-too-long-to-wait"],
)
def test_resume_refuses_what_it_cannot_resume_and_changes_nothing(
    ecl_db: Invoke, database_url: str, fields: dict[str, Any], code: ExitCode, message: str
) -> None:
    workflow = _seeded(database_url, **fields)

    result = ecl_db("demo", "--resume", str(workflow.id))

    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert on_database(database_url, lambda db: stored_workflow(db, workflow.id)) == workflow
    assert on_database(database_url, lambda db: _attempts(db, workflow.id)) == []


def test_resume_of_an_unknown_workflow_exits_1(ecl_db: Invoke) -> None:
    unknown = "01a21685-0000-7000-8000-000000000000"
    result = ecl_db("demo", "--resume", unknown)
    assert result.exit_code == ExitCode.NO
    assert f"workflow {unknown} not found" in result.stderr


def test_resume_refuses_to_crash_after_a_step_that_already_succeeded(
    ecl_db: Invoke, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed = _crash_in_process(
        monkeypatch, ecl_db, "--crash-after", "summarise", "--lease-seconds", "0.1"
    )
    workflow_id = _crashed_id(crashed.stderr)
    orphan = _wait_until_the_lease_expires(database_url, workflow_id)

    result = ecl_db("demo", "--resume", str(workflow_id), "--crash-after", "gather")

    assert result.exit_code == ExitCode.USAGE
    assert "step gather of workflow" in result.stderr
    assert "already succeeded" in result.stderr
    assert on_database(database_url, lambda db: stored_workflow(db, workflow_id)) == orphan


@pytest.mark.parametrize(
    "args",
    [
        ["--crash-after", "search"],
        ["--lease-seconds", "0"],
        ["--lease-seconds", "61"],
        ["--resume", "not-an-id"],
    ],
    ids=["unknown-step", "no-lease", "lease-too-long", "bad-id"],
)
def test_demo_refuses_bad_crash_resume_and_lease_options(
    ecl_db: Invoke, database_url: str, args: list[str]
) -> None:
    result = ecl_db("demo", *args)
    assert result.exit_code == ExitCode.USAGE
    assert "Invalid value" in result.stderr
    assert json_of(ecl_db("workflows", "list", "--json"))["items"] == []


class _RenewingOwner:
    """A reporter whose wait lets the lease's owner heartbeat: it was alive after all."""

    def __init__(self, db: Database, workflow: Workflow) -> None:
        self.db = db
        self.workflow = workflow
        self.waited: list[float] = []

    def note(self, message: str) -> None:
        pass

    async def wait(self, seconds: float, message: str) -> None:
        self.waited.append(seconds)
        assert self.workflow.lease_owner is not None
        async with self.db.session() as uow:
            await uow.workflows.heartbeat(
                self.workflow.id, self.workflow.lease_owner, lease_seconds=30
            )


async def test_resume_gives_up_when_the_lease_is_renewed_while_it_waits(
    db: Database, tmp_path: Path
) -> None:
    workflow = WorkflowFactory.build(definition_id=DEFINITION_ID)
    await create_workflows(db, workflow)
    async with db.session() as uow:
        held = await uow.workflows.claim_by_id(workflow.id, "demo-alive", lease_seconds=30)
    reporter = _RenewingOwner(db, held)

    with pytest.raises(CannotResumeError) as refused:
        await run_demo(db, tmp_path, reporter, resume=workflow.id)

    assert len(reporter.waited) == 1
    assert "'demo-alive'" in str(refused.value)
    assert "someone else is working on it" in str(refused.value)
    stored = await stored_workflow(db, workflow.id)
    assert (stored.lease_owner, stored.claim_count) == ("demo-alive", 1)
    assert await _attempts(db, workflow.id) == []


class _Quiet:
    def note(self, message: str) -> None:
        pass

    async def wait(self, seconds: float, message: str) -> None:
        raise AssertionError("nothing to wait for")


async def test_a_demo_whose_workflow_is_taken_over_stops_and_writes_nothing_more(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work, input_of = demo_steps.WORK["summarise"]

    async def taken_over(context: Any, outputs: Any, rec: Any) -> Any:
        # Meanwhile another worker claimed the workflow, as after a pause past the lease.
        async with db.session() as uow:
            await uow.workflows.claim("thief", now=utc_now() + timedelta(seconds=61))
        return await work(context, outputs, rec)

    monkeypatch.setitem(demo_steps.WORK, "summarise", (taken_over, input_of))
    with pytest.raises(demo.WorkflowLostError, match="taken over by another worker"):
        await run_demo(db, tmp_path, _Quiet(), lease_seconds=60)
    async with db.session(read_only=True) as uow:
        (workflow,) = await uow.workflows.list_by_definition(DEFINITION_ID)
        attempts = await uow.step_executions.get_for_workflow(workflow.id)
    assert (workflow.state, workflow.lease_owner) == (WorkflowState.RUNNING, "thief")
    assert _history(attempts) == [("gather", 1, "succeeded"), ("summarise", 1, "running")]
