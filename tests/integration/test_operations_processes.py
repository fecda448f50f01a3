"""Cancel and concurrency limits with real worker processes (``tests/worker_process.py``).

On SQLite the processes share the file only through its locks, on
PostgreSQL each has its own connections: as workers on several machines.
"""

from __future__ import annotations

import time
from datetime import datetime

from tests.factories import create_workflows, stored_workflow, terminate_when_completed
from tests.integration.test_worker_processes import finish, go, kill_all, line_of, spawn

from ecl_persistence import Database, StepExecutionState, Workflow, WorkflowState
from ecl_persistence.workers.heartbeat import CANCELLED_ON_REQUEST

W = WorkflowState
LEASE_SECONDS = 1.5  # a heartbeat every half second
RACE_PROCESSES = 6
RACE_WORKFLOWS = 60
RACE_LIMIT = 2


async def test_cancel_a_running_workflow_stops_its_worker_within_a_heartbeat(
    db: Database, database_url: str
) -> None:
    workflow = Workflow.new("research", {"topic": "tides"})
    await create_workflows(db, workflow)
    process = await spawn("stuck", database_url, "w1", str(LEASE_SECONDS))
    try:
        assert await line_of(process) == ["in-step", str(workflow.id)]
        async with db.session() as uow:
            asked = await uow.workflows.cancel(workflow.id, reason="runaway", actor="ana")
        started = time.monotonic()
        assert asked.state is W.RUNNING
        assert await line_of(process) == ["ended", str(workflow.id), "cancelled"]
        # Well before the lease would have run out: at the next heartbeat.
        assert time.monotonic() - started < LEASE_SECONDS
        process.terminate()
        out, err = await finish(process)
    finally:
        kill_all([process])
    assert out.split() == ["stopped"], err
    cancelled = await stored_workflow(db, workflow.id)
    assert (cancelled.state, cancelled.lease_owner) == (W.CANCELLED, None)
    async with db.session(read_only=True) as uow:
        (attempt,) = await uow.step_executions.get_for_workflow(workflow.id)
        history = await uow.workflows.history(workflow.id)
    assert (attempt.state, attempt.error) == (StepExecutionState.FAILED, "cancelled")
    assert [(t.from_state, t.to_state, t.actor, t.reason) for t in history[-2:]] == [
        (W.RUNNING, W.RUNNING, "ana", "runaway"),
        (W.RUNNING, W.CANCELLED, "w1", CANCELLED_ON_REQUEST),
    ]


async def test_six_processes_never_run_more_of_a_key_than_its_limit(
    db: Database, database_url: str
) -> None:
    workflows = [
        Workflow.new("research", {"n": n}, concurrency_key="k") for n in range(RACE_WORKFLOWS)
    ]
    await create_workflows(db, *workflows)
    async with db.session() as uow:
        await uow.workflows.set_concurrency_limit("k", RACE_LIMIT)
    processes = [
        await spawn("limited", database_url, f"w{n}", "0.05") for n in range(RACE_PROCESSES)
    ]
    try:
        await go(processes)
        outputs = await terminate_when_completed(db, processes, RACE_WORKFLOWS, seconds=120)
    finally:
        kill_all(processes)
    for out, err in outputs:
        assert out.split()[-1:] == ["stopped"], err

    # Sampled from the audit trail: +1 when a workflow starts running, -1 when
    # it stops; at each instant (ends first on a tie) at most the limit run.
    changes: list[tuple[datetime, int]] = []
    claimers: set[str | None] = set()
    async with db.session(read_only=True) as uow:
        for workflow in workflows:
            for t in await uow.workflows.history(workflow.id):
                if t.to_state is W.RUNNING and t.from_state is not W.RUNNING:
                    changes.append((t.at, 1))
                    claimers.add(t.actor)
                elif t.from_state is W.RUNNING and t.to_state is not W.RUNNING:
                    changes.append((t.at, -1))
    running, most = 0, 0
    for _at, delta in sorted(changes):
        running += delta
        most = max(most, running)
    assert running == 0
    assert most == RACE_LIMIT
    assert len(claimers) > 1  # the processes shared the work
    async with db.session(read_only=True) as uow:
        stored = await uow.workflows.list_by_state(W.COMPLETED, limit=RACE_WORKFLOWS)
    assert len(stored) == RACE_WORKFLOWS
