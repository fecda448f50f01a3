"""Separate worker processes on one database (a SQLite file, or PostgreSQL).

The workers are real processes (``tests/worker_process.py``): on SQLite they
share the file only through its locks, on PostgreSQL each has its own
connections, as workers on several machines would.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta

from tests.factories import start_python_module
from tests.worker_process import FETCH_OUTPUT

from ecl_persistence import (
    Database,
    StepExecutionState,
    StepRecorder,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import utc_now

WORKERS = 4
WORKFLOWS = 40
TIMEOUT = 120


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await start_python_module("tests.worker_process", *args)


async def finish(process: asyncio.subprocess.Process) -> tuple[str, str]:
    try:
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return out.decode(), err.decode()


async def test_worker_processes_claim_every_workflow_exactly_once(
    db: Database, database_url: str
) -> None:
    workflows = [Workflow.new("research", {"n": n}) for n in range(WORKFLOWS)]
    async with db.session() as uow:
        for workflow in workflows:
            await uow.workflows.create(workflow)

    processes = [await spawn("claim-loop", database_url, f"worker-{n}") for n in range(WORKERS)]
    try:
        for process in processes:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
            assert line.strip() == b"ready"
        # Every worker is up before any starts, so their claims overlap.
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        outputs = await asyncio.gather(*(finish(process) for process in processes))
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()

    claimed: list[str] = []
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        assert "locked" not in err
        lines = out.split()
        assert lines[-1] == "done"
        claimed += lines[:-1]
    # None lost, none claimed twice.
    assert sorted(claimed) == sorted(str(workflow.id) for workflow in workflows)
    async with db.session(read_only=True) as uow:
        stored = await uow.workflows.list_by_definition("research")
    assert {workflow.state for workflow in stored} == {WorkflowState.COMPLETED}
    assert {workflow.claim_count for workflow in stored} == {1}
    assert {workflow.lease_owner for workflow in stored} == {None}


async def test_killed_worker_workflow_is_claimed_after_its_lease_and_resumed(
    db: Database, database_url: str
) -> None:
    workflow = Workflow.new("research", {"topic": "tides"})
    async with db.session() as uow:
        await uow.workflows.create(workflow)

    process = await spawn("crash", database_url, "doomed", "1.0")
    out, err = await finish(process)
    assert process.returncode == -signal.SIGKILL, err
    assert out.strip() == str(workflow.id)

    async with db.session(read_only=True) as uow:
        orphan = await uow.workflows.get(workflow.id)
    assert orphan is not None
    assert orphan.state is WorkflowState.RUNNING
    assert orphan.lease_owner == "doomed"
    assert orphan.lease_expires_at is not None
    async with db.session() as uow:
        too_early = orphan.lease_expires_at - timedelta(milliseconds=1)
        assert await uow.workflows.claim("rescuer", now=too_early) == []

    # Not a timing assertion: wait until the lease is over, whatever that takes.
    await asyncio.sleep((orphan.lease_expires_at - utc_now()).total_seconds() + 0.05)
    async with db.session() as uow:
        (reclaimed,) = await uow.workflows.claim("rescuer")
    assert reclaimed.id == workflow.id
    assert reclaimed.lease_owner == "rescuer"
    assert reclaimed.claim_count == 2

    async with db.session(read_only=True) as uow:
        point = await uow.workflows.resume_point(workflow.id)
    assert set(point.succeeded) == {"fetch"}
    assert point.output_of("fetch") == FETCH_OUTPUT
    assert dict(point.to_retry) == {"summarise": 2}

    recorder = StepRecorder(db)
    ran = []
    for step in ("fetch", "summarise"):
        if point.is_done(step):
            continue
        async with recorder.step(workflow.id, step, {"pages": 3}) as rec:
            ran.append(step)
            rec.output = {"summary": "high and low"}
    async with db.session() as uow:
        done = await uow.workflows.update_state(
            workflow.id, WorkflowState.COMPLETED, expected_version=reclaimed.version
        )
        fetches = await uow.step_executions.get_for_step(workflow.id, "fetch")
        summaries = await uow.step_executions.get_for_step(workflow.id, "summarise")

    assert ran == ["summarise"]
    assert done.lease_owner is None
    assert [(e.attempt, e.state) for e in fetches] == [(1, StepExecutionState.SUCCEEDED)]
    # The crashed attempt stays visible as running; the retry succeeded.
    assert [(e.attempt, e.state) for e in summaries] == [
        (1, StepExecutionState.RUNNING),
        (2, StepExecutionState.SUCCEEDED),
    ]
