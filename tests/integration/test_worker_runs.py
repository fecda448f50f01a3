"""``Worker`` and ``WorkflowRun`` in one process: claims, leases kept and lost, endings, stops."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
from datetime import timedelta
from typing import Any

import pytest
from tests.factories import (
    WorkflowFactory,
    at,
    create_workflows,
    snapshot,
    stored_workflow,
)

from ecl_persistence import (
    Artifact,
    ConnectionFailedError,
    Database,
    JsonValue,
    LeaseLostError,
    QueryFailedError,
    StepExecutionState,
    StepRecorder,
    StepRecording,
    ValidationError,
    Worker,
    Workflow,
    WorkflowRepository,
    WorkflowRun,
    WorkflowState,
)
from ecl_persistence.domain import utc_now

S = StepExecutionState
W = WorkflowState
GUARD = 30.0  # only turns a hang into a failure


async def ok(recording: StepRecording) -> JsonValue:
    return {"step": str(recording.execution.step_id)}


async def next_run(worker: Worker) -> WorkflowRun:
    async for run in worker.runs(until_idle=True):
        return run
    pytest.fail("nothing to claim")


async def history(db: Database, workflow: Workflow) -> list[tuple[object, object, object]]:
    async with db.session(read_only=True) as uow:
        return [
            (t.from_state, t.to_state, t.actor) for t in await uow.workflows.history(workflow.id)
        ]


async def test_a_clean_block_completes_the_workflow_and_the_trail_names_the_worker(
    db: Database,
) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    worker = Worker(db, "w1")
    async for run in worker.runs(until_idle=True):
        async with run:
            assert run.workflow.id == workflow.id
            assert run.lease == run.workflow.lease
            await run.step("search", {}, ok)
    done = await stored_workflow(db, workflow.id)
    assert (done.state, done.lease_owner, done.output) == (W.COMPLETED, None, done.output)
    assert await history(db, workflow) == [
        (None, W.PENDING, None),
        (W.PENDING, W.RUNNING, "w1"),
        (W.RUNNING, W.COMPLETED, "w1"),
    ]


async def test_complete_fail_and_release_end_the_run_explicitly(db: Database) -> None:
    first, second, third = (WorkflowFactory.build(created_at=at(n)) for n in range(3))
    await create_workflows(db, first, second, third)
    worker = Worker(db, "w1")
    endings = iter(["complete", "fail", "release"])
    async for run in worker.runs(until_idle=True):
        async with run:
            ending = next(endings)
            if ending == "complete":
                finished = await run.complete(output={"summary": "tides"})
            elif ending == "fail":
                finished = await run.fail("no sources")
            else:
                finished = await run.release(run_after=utc_now() + timedelta(hours=1))
            assert run.ended
            assert not run.lost
            assert run.workflow == finished
            with pytest.raises(LeaseLostError, match="is over"):
                await run.complete()
    states = [(await stored_workflow(db, w.id)) for w in (first, second, third)]
    assert [(w.state, w.output, w.error) for w in states[:2]] == [
        (W.COMPLETED, {"summary": "tides"}, None),
        (W.FAILED, states[1].output, "no sources"),
    ]
    assert (states[2].state, states[2].lease_owner) == (W.PENDING, None)


async def test_an_exception_fails_the_workflow_and_the_worker_goes_on(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "api-key-123"
    broken, fine = WorkflowFactory.build(created_at=at(0)), WorkflowFactory.build(created_at=at(1))
    await create_workflows(db, broken, fine)
    worker = Worker(db, "w1")
    seen = []
    with caplog.at_level(logging.WARNING, "ecl_persistence"):
        async for run in worker.runs(until_idle=True):
            async with run:
                seen.append(run.workflow.id)
                if run.workflow.id == broken.id:
                    raise KeyError(secret)
    assert seen == [broken.id, fine.id]
    failed = await stored_workflow(db, broken.id)
    assert (failed.state, failed.error) == (W.FAILED, f"KeyError: '{secret}'")
    assert (await stored_workflow(db, fine.id)).state is W.COMPLETED
    assert "KeyError" in caplog.text
    assert secret not in caplog.text


async def test_a_retryable_database_error_releases_the_workflow_for_a_later_claim(
    db: Database,
) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    async with await next_run(Worker(db, "w1")):
        raise ConnectionFailedError("the network went away")
    released = await stored_workflow(db, workflow.id)
    assert (released.state, released.lease_owner, released.error) == (W.PENDING, None, None)
    assert (await history(db, workflow))[-1] == (W.RUNNING, W.PENDING, "w1")


async def test_a_cancelled_block_releases_its_workflow_and_the_cancellation_propagates(
    db: Database,
) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    run = await next_run(Worker(db, "w1"))
    entered = asyncio.Event()

    async def work() -> None:
        async with run:
            entered.set()
            await asyncio.sleep(GUARD)

    task = asyncio.create_task(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    released = await stored_workflow(db, workflow.id)
    assert (released.state, released.lease_owner) == (W.PENDING, None)


async def test_the_heartbeat_keeps_the_lease_through_a_long_block(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    async with await next_run(Worker(db, "w1", lease_seconds=0.6)) as run:
        claimed = run.workflow
        for _ in range(4):
            await asyncio.sleep(0.4)
            async with db.session() as uow:
                assert await uow.workflows.claim("w2") == []
        renewed = await stored_workflow(db, workflow.id)
    assert claimed.lease_expires_at is not None
    assert renewed.lease_expires_at is not None
    assert renewed.lease_expires_at > claimed.lease_expires_at + timedelta(seconds=1)
    assert renewed.version == claimed.version  # a heartbeat changes nothing else
    assert (await stored_workflow(db, workflow.id)).state is W.COMPLETED


async def test_a_lost_lease_cancels_the_block_and_nothing_more_is_written(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    reached: list[str] = []
    # A lease long enough for a loaded machine to renew it in time; the
    # takeover is dated past any renewal instead of waited for.
    worker = Worker(db, "w1", lease_seconds=1.5)
    async for run in worker.runs(until_idle=True):
        async with run:
            await run.step("search", {}, ok)
            async with db.session() as uow:
                # Meanwhile another worker claims it, as after a pause past the lease.
                (theirs,) = await uow.workflows.claim("w2", now=utc_now() + timedelta(seconds=30))
            before = await snapshot(db)
            await asyncio.sleep(GUARD)  # cancelled by the next heartbeat
            reached.append("never")
        assert run.lost
        for write in (
            run.step("summarise", {}, ok),
            run.complete(),
            run.fail("x"),
            run.release(),
            run.add_artifact(Artifact.new(workflow.id, "s", "n", path="p", size_bytes=1)),
        ):
            with pytest.raises(LeaseLostError, match="lost its lease"):
                await write
    assert reached == []
    assert await snapshot(db) == before
    assert await stored_workflow(db, workflow.id) == theirs


async def test_add_artifact_records_it_under_the_lease(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    async with await next_run(Worker(db, "w1")) as run:
        stored = await run.add_artifact(
            Artifact.new(workflow.id, "search", "hits.json", path="a/hits.json", size_bytes=2)
        )
        with pytest.raises(ValidationError, match="lease is on workflow"):
            await run.add_artifact(
                Artifact.new(WorkflowFactory.build().id, "s", "n", path="p", size_bytes=1)
            )
    async with db.session(read_only=True) as uow:
        assert await uow.artifacts.list_for_workflow(workflow.id) == [stored]


async def test_concurrency_bounds_the_runs_held_and_a_run_ending_wakes_the_claims(
    db: Database,
) -> None:
    workflows = [WorkflowFactory.build(created_at=at(n)) for n in range(7)]
    await create_workflows(db, *workflows)
    # A poll longer than the test: a free slot must wake the claim loop itself.
    worker = Worker(db, "w1", concurrency=3, poll_seconds=GUARD * 2)
    held = 0
    most = 0

    async def handle(run: WorkflowRun) -> None:
        nonlocal held, most
        async with run:
            held += 1
            most = max(most, held)
            await asyncio.sleep(0.05)
            held -= 1

    async with asyncio.timeout(GUARD), asyncio.TaskGroup() as group:
        async for run in worker.runs(until_idle=True):
            group.create_task(handle(run))
    assert most == 3
    for workflow in workflows:
        assert (await stored_workflow(db, workflow.id)).state is W.COMPLETED


async def test_stop_lets_a_block_finish_within_the_grace_period(db: Database) -> None:
    workflows = [WorkflowFactory.build(created_at=at(n)) for n in range(3)]
    await create_workflows(db, *workflows)
    worker = Worker(db, "w1")
    stopper: list[asyncio.Task[None]] = []
    async with asyncio.timeout(GUARD):
        async for run in worker.runs():
            async with run:
                stopper.append(asyncio.create_task(worker.stop(grace_seconds=5)))
                await asyncio.sleep(0.1)
                await run.step("search", {}, ok)
    await stopper[0]
    states = [(await stored_workflow(db, w.id)).state for w in workflows]
    assert states == [W.COMPLETED, W.PENDING, W.PENDING]
    assert worker.stopping


async def test_stop_releases_a_block_that_outlasts_the_grace_period(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    worker = Worker(db, "w1")
    started = asyncio.Event()

    async def slow(recording: StepRecording) -> JsonValue:
        started.set()
        await asyncio.sleep(GUARD)
        return None

    async def work() -> None:
        async for run in worker.runs():
            async with run:
                await run.step("search", {}, slow)

    async with asyncio.timeout(GUARD):
        task = asyncio.create_task(work())
        await started.wait()
        await worker.stop(grace_seconds=0.2)
        await task  # the iteration ended; the cancellation did not escape
    released = await stored_workflow(db, workflow.id)
    assert (released.state, released.lease_owner) == (W.PENDING, None)
    async with db.session(read_only=True) as uow:
        (interrupted,) = await uow.step_executions.get_for_step(workflow.id, "search")
        trail = await uow.workflows.history(workflow.id)
    assert (interrupted.state, interrupted.error) == (S.FAILED, "cancelled")
    assert trail[-1].reason == "the worker shut down"


async def test_stop_releases_runs_claimed_but_never_entered(db: Database) -> None:
    workflows = [WorkflowFactory.build(created_at=at(n)) for n in range(2)]
    await create_workflows(db, *workflows)
    worker = Worker(db, "w1", concurrency=2)
    async for run in worker.runs():
        assert not run.entered
        await worker.stop()
        break
    for workflow in workflows:
        released = await stored_workflow(db, workflow.id)
        assert (released.state, released.claim_count) == (W.PENDING, 1)


async def test_claim_of_a_given_workflow_gives_its_run(db: Database) -> None:
    older, wanted = WorkflowFactory.build(created_at=at(0)), WorkflowFactory.build(created_at=at(1))
    await create_workflows(db, older, wanted)
    worker = Worker(db, "w1")
    async with await worker.claim(wanted.id) as run:
        assert run.workflow.id == wanted.id
    assert (await stored_workflow(db, wanted.id)).state is W.COMPLETED
    assert (await stored_workflow(db, older.id)).state is W.PENDING


async def test_a_worker_claims_only_its_definitions(db: Database) -> None:
    research = WorkflowFactory.build(definition_id="research")
    other = WorkflowFactory.build(definition_id="translate")
    await create_workflows(db, research, other)
    seen = [run.workflow.id async for run in _entered(Worker(db, "w1", definitions=["research"]))]
    assert seen == [research.id]
    assert (await stored_workflow(db, other.id)).state is W.PENDING


async def _entered(worker: Worker) -> Any:
    async for run in worker.runs(until_idle=True):
        async with run:
            yield run


async def test_a_claim_that_fails_for_a_while_is_tried_again(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    worker = Worker(db, "w1", poll_seconds=0.01)
    real = Worker._claim
    failures = iter([ConnectionFailedError("server restarting")])

    async def flaky(self: Worker, limit: int) -> list[WorkflowRun]:
        for error in failures:
            raise error
        return await real(self, limit)

    monkeypatch.setattr(Worker, "_claim", flaky)
    with caplog.at_level(logging.WARNING, "ecl_persistence"):
        seen = [run.workflow.id async for run in _entered(worker)]
    assert seen == [workflow.id]
    assert "ConnectionFailedError" in caplog.text


async def test_runs_is_handed_out_once_at_a_time(db: Database) -> None:
    await create_workflows(db, WorkflowFactory.build())
    worker = Worker(db, "w1")
    first = worker.runs()
    run = await anext(first)
    with pytest.raises(ValidationError, match="already handing out runs"):
        await anext(worker.runs())
    async with run:
        pass
    await first.aclose()


async def test_a_run_is_entered_once(db: Database) -> None:
    await create_workflows(db, WorkflowFactory.build())
    run = await next_run(Worker(db, "w1"))
    async with run:
        with pytest.raises(ValidationError, match="entered once"):
            async with run:
                pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"worker_id": ""}, "worker_id"),
        ({"worker_id": None}, "worker_id"),
        ({"lease_seconds": 0}, "lease_seconds"),
        ({"lease_seconds": math.nan}, "lease_seconds"),
        ({"lease_seconds": 1e9}, "lease_seconds"),
        ({"poll_seconds": -1}, "poll_seconds"),
        ({"poll_seconds": True}, "poll_seconds"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 1.0}, "concurrency"),
        ({"definitions": "research"}, "definitions"),
        ({"definitions": [""]}, "definition_id"),
    ],
)
async def test_a_worker_refuses_bad_settings(
    db: Database, options: dict[str, Any], message: str
) -> None:
    options = dict(options)
    worker_id = options.pop("worker_id", "w1")
    with pytest.raises(ValidationError, match=message):
        Worker(db, worker_id, **options)


async def test_stop_refuses_a_bad_grace_period(db: Database) -> None:
    with pytest.raises(ValidationError, match="grace_seconds"):
        await Worker(db, "w1").stop(grace_seconds=-1)


async def test_keyboard_interrupt_in_a_block_writes_nothing_and_leaves_the_lease(
    db: Database,
) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    run = await next_run(Worker(db, "w1"))
    claimed = run.workflow
    with pytest.raises(KeyboardInterrupt):
        async with run:
            raise KeyboardInterrupt
    # As after a crash: still leased to w1, for another worker once it expires.
    assert await stored_workflow(db, workflow.id) == claimed
    assert run.ended


async def test_what_a_block_raises_after_ending_its_run_propagates(db: Database) -> None:
    await create_workflows(db, WorkflowFactory.build())
    run = await next_run(Worker(db, "w1"))
    with pytest.raises(ValueError, match="after the end"):
        async with run:
            await run.complete()
            raise ValueError("after the end")
    assert (await stored_workflow(db, run.workflow.id)).state is W.COMPLETED


async def test_a_second_signal_stops_without_waiting_for_the_grace_period(db: Database) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    worker = Worker(db, "w1")
    worker.install_signal_handlers(grace_seconds=GUARD * 2)
    entered = asyncio.Event()

    async def work() -> None:
        async for run in worker.runs():
            async with run:
                entered.set()
                await asyncio.sleep(GUARD * 2)

    async with asyncio.timeout(GUARD):
        task = asyncio.create_task(work())
        await entered.wait()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.2)
        assert worker.stopping
        assert not task.done()
        os.kill(os.getpid(), signal.SIGINT)
        await task
    released = await stored_workflow(db, workflow.id)
    assert (released.state, released.lease_owner) == (W.PENDING, None)
    async with db.session(read_only=True) as uow:
        assert (await uow.workflows.history(workflow.id))[-1].reason == "the worker shut down"
    # Stopped: SIGINT is a KeyboardInterrupt again.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


async def test_a_recorder_under_a_lost_lease_records_nothing(db: Database) -> None:
    await create_workflows(db, WorkflowFactory.build(created_at=at(0)))
    async with db.session() as uow:
        (mine,) = await uow.workflows.claim("w1", lease_seconds=1, now=at(1))
    recorder = StepRecorder(db)
    reached = []
    with pytest.raises(LeaseLostError):
        async with recorder.step(mine.id, "search", {}, lease=mine.lease) as recording:
            async with db.session() as uow:
                await uow.workflows.claim("w2", now=at(5))
            recording.output = {"late": True}
    # Its start was made under the lease; its end is refused: the attempt stays running.
    with pytest.raises(LeaseLostError):
        async with recorder.step(mine.id, "summarise", {}, lease=mine.lease):
            reached.append("never")
    assert reached == []
    async with db.session(read_only=True) as uow:
        attempts = await uow.step_executions.get_for_workflow(mine.id)
    assert [(a.step_id, a.state) for a in attempts] == [("search", S.RUNNING)]


async def test_a_write_through_the_run_that_finds_the_lease_taken_ends_the_run(
    db: Database,
) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    async with await next_run(Worker(db, "w1", lease_seconds=60)) as run:
        async with db.session() as uow:
            (theirs,) = await uow.workflows.claim("w2", now=utc_now() + timedelta(seconds=61))
        with pytest.raises(LeaseLostError, match="'w2' under claim 2"):
            await run.complete(output={"late": True})
        assert run.lost
    assert await stored_workflow(db, workflow.id) == theirs


async def test_the_heartbeat_goes_on_after_a_database_error(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    workflow = WorkflowFactory.build()
    await create_workflows(db, workflow)
    real = WorkflowRepository.heartbeat
    failures = iter([ConnectionFailedError("the server is restarting")])

    async def flaky(self: WorkflowRepository, *args: Any, **options: Any) -> Workflow:
        for error in failures:
            raise error
        return await real(self, *args, **options)

    monkeypatch.setattr(WorkflowRepository, "heartbeat", flaky)
    with caplog.at_level(logging.WARNING, "ecl_persistence"):
        async with await next_run(Worker(db, "w1", lease_seconds=0.6)) as run:
            claimed = run.workflow
            await asyncio.sleep(0.9)  # a failed beat, then one that renews
            assert not run.ended
    assert "heartbeat of workflow" in caplog.text
    assert "ConnectionFailedError" in caplog.text
    done = await stored_workflow(db, workflow.id)
    assert done.state is W.COMPLETED
    assert claimed.lease_expires_at is not None
    assert run.workflow.lease_expires_at is None  # completed: the lease ended with it


async def test_a_claim_error_that_will_not_pass_ends_the_iteration(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Worker, limit: int) -> list[WorkflowRun]:
        raise QueryFailedError("claim workflows failed: a column is missing")

    monkeypatch.setattr(Worker, "_claim", broken)
    with pytest.raises(QueryFailedError, match="column is missing"):
        async for _run in Worker(db, "w1").runs():
            pass
