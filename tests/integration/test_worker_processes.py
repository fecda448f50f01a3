"""Separate worker processes on one database (a SQLite file, or PostgreSQL).

The workers are real processes (``tests/worker_process.py``): on SQLite they
share the file only through its locks, on PostgreSQL each has its own
connections, as workers on several machines would. Crashes are SIGKILL,
pauses SIGSTOP and SIGCONT, shutdowns SIGTERM. Side effects of the steps are
counted in a file that every process appends to.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from tests.factories import (
    WorkflowFactory,
    create_workflows,
    snapshot,
    start_python_module,
    terminate_when_completed,
)
from tests.reliability._support import our_sessions, sized, sqlite_write_lock_is_free
from tests.worker_process import FETCH_OUTPUT, STEPS, read_effects, run_steps, steps_of

from ecl_persistence import (
    Database,
    StepExecutionState,
    Worker,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import utc_now

S = StepExecutionState
TIMEOUT = 180  # only turns a hang into a failure
CLAIM_LOOP_WORKERS = 4
CLAIM_LOOP_WORKFLOWS = 40


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await start_python_module("tests.worker_process", *args)


async def line_of(process: asyncio.subprocess.Process) -> list[str]:
    """The words of the next line the process prints; fails, with its stderr, at its end."""
    assert process.stdout is not None
    async with asyncio.timeout(TIMEOUT):
        line = await process.stdout.readline()
    if not line:
        assert process.stderr is not None
        pytest.fail(f"the worker ended early; stderr:\n{(await process.stderr.read()).decode()}")
    return line.decode().split()


async def finish(process: asyncio.subprocess.Process) -> tuple[str, str]:
    try:
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return out.decode(), err.decode()


def kill_all(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.kill()


async def go(processes: list[asyncio.subprocess.Process]) -> None:
    """Wait until every process is ready, then start them together."""
    for process in processes:
        assert await line_of(process) == ["ready"]
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        await process.stdin.drain()


async def states(db: Database, definition: str = "research") -> Counter[WorkflowState]:
    async with db.session(read_only=True) as uow:
        return Counter(w.state for w in await uow.workflows.list_by_definition(definition))


async def test_worker_processes_claim_every_workflow_exactly_once(
    db: Database, database_url: str
) -> None:
    workflows = [Workflow.new("research", {"n": n}) for n in range(CLAIM_LOOP_WORKFLOWS)]
    await create_workflows(db, *workflows)
    processes = [
        await spawn("claim-loop", database_url, f"worker-{n}") for n in range(CLAIM_LOOP_WORKERS)
    ]
    try:
        await go(processes)
        outputs = await asyncio.gather(*(finish(process) for process in processes))
    finally:
        kill_all(processes)

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


async def test_four_workers_complete_every_workflow_once_and_never_rerun_a_succeeded_step(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    """4 processes, 100 workflows of 3 steps; the second step fails on its first attempt."""
    count = sized(100, 400)
    workflows = [Workflow.new("research", {"n": n}) for n in range(count)]
    await create_workflows(db, *workflows)
    effects = tmp_path / "effects.log"
    processes = [await spawn("work", database_url, f"w{n}", str(effects)) for n in range(4)]
    try:
        await go(processes)
        outputs = await terminate_when_completed(db, processes, count, seconds=TIMEOUT)
    finally:
        kill_all(processes)

    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        assert out.split()[-1] == "stopped"
        assert "locked" not in err
    calls = Counter((workflow, step) for workflow, step, _attempt in read_effects(effects))
    expected = {
        (str(w.id), step): 2 if step == "summarise" else 1 for w in workflows for step in STEPS
    }
    assert calls == expected  # no step called again after it succeeded
    async with db.session(read_only=True) as uow:
        for workflow in workflows:
            stored = await uow.workflows.get(workflow.id)
            assert stored is not None
            assert (stored.state, stored.claim_count) == (WorkflowState.COMPLETED, 1)
            history = await uow.workflows.history(workflow.id)
            assert [t.to_state for t in history].count(WorkflowState.COMPLETED) == 1
            attempts = await uow.step_executions.get_for_workflow(workflow.id)
            assert sorted((e.step_id, e.attempt, e.state) for e in attempts) == [
                ("fetch", 1, S.SUCCEEDED),
                ("publish", 1, S.SUCCEEDED),
                ("summarise", 1, S.FAILED),
                ("summarise", 2, S.SUCCEEDED),
            ]


async def test_a_worker_killed_mid_step_is_taken_over_and_its_succeeded_step_not_called_again(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    effects = tmp_path / "effects.log"
    process = await spawn("hang", database_url, "doomed", str(effects), "1.0")
    try:
        marker, workflow_id, _execution = await line_of(process)
        assert (marker, workflow_id) == ("in-step", str(workflow.id))
        process.send_signal(signal.SIGKILL)
        await finish(process)
    finally:
        kill_all([process])
    assert process.returncode == -signal.SIGKILL

    async with db.session(read_only=True) as uow:
        orphan = await uow.workflows.get(workflow.id)
    assert orphan is not None
    assert orphan.lease_expires_at is not None
    assert (orphan.state, orphan.lease_owner) == (WorkflowState.RUNNING, "doomed")
    rescuer = Worker(db, "rescuer", poll_seconds=0.05)
    async with db.session() as uow:
        too_early = orphan.lease_expires_at - timedelta(milliseconds=1)
        assert await uow.workflows.claim("rescuer", now=too_early) == []
    # Not a timing assertion: wait until the lease is over, whatever that takes.
    await asyncio.sleep((orphan.lease_expires_at - utc_now()).total_seconds() + 0.05)

    async for run in rescuer.runs(until_idle=True):
        assert run.resume_point.output_of("fetch") == FETCH_OUTPUT
        async with run:
            await run_steps(run, steps_of(run, str(effects)))

    calls = Counter((step, attempt) for _workflow, step, attempt in read_effects(effects))
    # fetch ran once, in the killed worker; summarise twice: interrupted, then its retry.
    assert calls == {("fetch", 1): 1, ("summarise", 1): 1, ("summarise", 2): 1, ("publish", 1): 1}
    async with db.session(read_only=True) as uow:
        done = await uow.workflows.get(workflow.id)
        attempts = await uow.step_executions.get_for_workflow(workflow.id)
    assert done is not None
    assert (done.state, done.claim_count, done.lease_owner) == (WorkflowState.COMPLETED, 2, None)
    assert sorted((e.step_id, e.attempt, e.state) for e in attempts) == [
        ("fetch", 1, S.SUCCEEDED),
        ("publish", 1, S.SUCCEEDED),
        ("summarise", 1, S.RUNNING),  # the interrupted attempt stays visible
        ("summarise", 2, S.SUCCEEDED),
    ]


async def pause_outside_a_transaction(
    process: asyncio.subprocess.Process, url: str, backend: str
) -> None:
    """SIGSTOP the worker where it holds no lock: not inside a heartbeat's transaction.

    A worker stopped mid-transaction would keep its locks (a row lock on
    PostgreSQL, the write lock of a SQLite file) and block the takeover.
    """
    for _ in range(200):
        process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(0.02)
        if backend == "sqlite":
            free = sqlite_write_lock_is_free(url)
        else:
            free = all(state == "idle" for _pid, state in await our_sessions(url))
        if free:
            return
        process.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.01)
    pytest.fail("the worker was inside a transaction at every try to pause it")


async def test_a_paused_worker_woken_after_a_takeover_has_every_write_refused(
    database_url: str, backend: str, tmp_path: Path
) -> None:
    """SIGSTOP past the lease, a takeover that finishes the workflow, SIGCONT: nothing lands."""
    effects = tmp_path / "effects.log"
    async with Database.from_url(database_url, timeout_secs=30) as db:
        workflow = WorkflowFactory.build()
        await create_workflows(db, workflow)
        process = await spawn("hang", database_url, "sleepy", str(effects), "1.0")
        try:
            marker, workflow_id, _execution = await line_of(process)
            assert (marker, workflow_id) == ("in-step", str(workflow.id))
            await pause_outside_a_transaction(process, database_url, backend)
            # The lease runs out while the worker is stopped; another takes over and finishes.
            async with db.session(read_only=True) as uow:
                paused = await uow.workflows.get(workflow.id)
            assert paused is not None
            assert paused.lease_expires_at is not None
            await asyncio.sleep((paused.lease_expires_at - utc_now()).total_seconds() + 0.05)
            rescuer = Worker(db, "rescuer", poll_seconds=0.05)
            async for run in rescuer.runs(until_idle=True):
                async with run:
                    await run_steps(run, steps_of(run, str(effects)))
            before = await snapshot(db)
            process.send_signal(signal.SIGCONT)
            out, err = await finish(process)
        finally:
            kill_all([process])
        after = await snapshot(db)

    assert process.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "lost"
    outcomes = dict(line.split() for line in lines[1:-1])
    assert outcomes == {
        write: "LeaseLostError"
        for write in (
            "start", "complete-step", "artifact", "output", "complete", "fail", "heartbeat",
            "release", "run-step", "run-complete",
        )
    }  # fmt: skip
    assert lines[-1] == "done"
    assert after == before  # nothing the paused worker wrote landed
    stored = {row[0]: row for row in after["workflows"]}
    assert len(stored) == 1


async def sigterm_in_a_step(database_url: str, first: Workflow, seconds: str, grace: str) -> None:
    """Start a worker whose step takes ``seconds``; SIGTERM it in its first step; it exits 0."""
    process = await spawn("slow", database_url, "w1", seconds, grace)
    try:
        assert await line_of(process) == ["in-step", str(first.id)]
        process.send_signal(signal.SIGTERM)
        out, err = await finish(process)
    finally:
        kill_all([process])
    assert process.returncode == 0, err
    assert out.split()[-1] == "stopped"


async def test_sigterm_lets_the_step_in_hand_finish_stops_claiming_and_exits_0(
    db: Database, database_url: str
) -> None:
    first, *others = [
        WorkflowFactory.build(created_at=utc_now() + timedelta(seconds=n)) for n in range(3)
    ]
    await create_workflows(db, first, *others)
    await sigterm_in_a_step(database_url, first, "0.5", "10")
    async with db.session(read_only=True) as uow:
        done = await uow.workflows.get(first.id)
        untouched = [await uow.workflows.get(w.id) for w in others]
    assert done is not None
    assert done.state is WorkflowState.COMPLETED
    assert [(w.state, w.claim_count) for w in untouched if w] == [(WorkflowState.PENDING, 0)] * 2


async def test_sigterm_past_the_grace_period_releases_the_workflow_and_exits_0(
    db: Database, database_url: str
) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    await sigterm_in_a_step(database_url, workflow, "3600", "0.2")
    async with db.session(read_only=True) as uow:
        released = await uow.workflows.get(workflow.id)
        (attempt,) = await uow.step_executions.get_for_step(workflow.id, "work")
    assert released is not None
    assert (released.state, released.lease_owner) == (WorkflowState.PENDING, None)
    assert (attempt.state, attempt.error) == (S.FAILED, "cancelled")
