"""Worker processes for the multi-process tests: ``python -m tests.worker_process MODE ...``.

``claim-loop URL NAME``: print ``ready``, wait for a line on stdin (so that
every process starts claiming at the same moment), then claim one workflow
at a time until none is left, completing each with its claimed version;
print the id of each claimed workflow on its own line, then ``done``.

``work URL NAME EFFECTS``: a :class:`Worker` running :data:`STEPS` on every
workflow it claims until SIGTERM (``ready``, then a line on stdin to start).
Each call of a step appends ``<workflow id> <step> <attempt>`` to the file
``EFFECTS``: the side effects the tests count. ``summarise`` fails on its
first attempt.

``hang URL NAME EFFECTS LEASE``: the same steps under a lease of ``LEASE``
seconds, but ``summarise`` prints ``in-step <workflow id> <execution id>``
and hangs. Killed there (SIGKILL), it leaves the attempt running. Paused
there (SIGSTOP) past its lease and woken up (SIGCONT) after another worker
took the workflow over, it prints ``lost``, then tries every write of a
worker with its old lease and prints ``<write> <outcome>`` for each
(``LeaseLostError`` when refused), then ``done``.

``stuck URL NAME LEASE``: a worker (lease ``LEASE`` seconds) whose one step
prints ``in-step <workflow id>`` and hangs; once a run ends it prints
``ended <workflow id> <state>``. ``limited URL NAME SECONDS``: a worker whose
one step takes ``SECONDS`` (``ready``, then a line on stdin to start).

``slow URL NAME SECONDS GRACE``: a worker whose one step prints ``in-step
<workflow id>`` and takes ``SECONDS``; SIGTERM stops it with ``GRACE``
seconds of grace. It prints ``stopped`` as it exits.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ecl_persistence import (
    Artifact,
    Database,
    DbError,
    JsonValue,
    Retry,
    StepExecution,
    StepExecutionState,
    StepRecording,
    Worker,
    WorkflowRun,
    WorkflowState,
)

FETCH_OUTPUT: JsonValue = {"pages": 3}
STEPS = ("fetch", "summarise", "publish")
QUICK_RETRY = Retry(max_attempts=3, delay_seconds=0.01)


def record_effect(path: str, run: WorkflowRun, recording: StepRecording) -> None:
    """Append one line for this call of a step: one ``write`` of a file opened to append."""
    line = f"{run.workflow.id} {recording.execution.step_id} {recording.attempt}\n"
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)


def read_effects(path: Path) -> list[tuple[str, str, int]]:
    """The lines :func:`record_effect` appended: ``(workflow id, step, attempt)``."""
    if not path.exists():
        return []
    return [
        (workflow, step, int(attempt))
        for workflow, step, attempt in (line.split() for line in path.read_text().splitlines())
    ]


StepCall = Callable[[StepRecording], Awaitable[JsonValue]]


def steps_of(run: WorkflowRun, effects: str, summarise: StepCall | None = None) -> list[StepCall]:
    """The three steps of a test workflow, each recording its calls in ``effects``."""

    async def fetch(recording: StepRecording) -> JsonValue:
        record_effect(effects, run, recording)
        return FETCH_OUTPUT

    async def flaky_summarise(recording: StepRecording) -> JsonValue:
        record_effect(effects, run, recording)
        if recording.attempt == 1:
            raise TimeoutError("the model timed out")
        return {"summary": "high and low"}

    async def publish(recording: StepRecording) -> JsonValue:
        record_effect(effects, run, recording)
        return {"published": True}

    return [fetch, summarise or flaky_summarise, publish]


async def run_steps(run: WorkflowRun, steps: list[StepCall]) -> None:
    outputs: dict[str, JsonValue] = {}
    for name, step in zip(STEPS, steps, strict=True):
        after: list[JsonValue] = list(sorted(outputs))
        outputs[name] = await run.step(name, {"after": after}, step, retry=QUICK_RETRY)
    await run.complete(output=outputs)


async def claim_loop(url: str, name: str) -> None:
    print("ready", flush=True)
    sys.stdin.readline()
    async with Database.from_url(url, timeout_secs=30.0) as db:
        while True:
            async with db.session() as uow:
                claimed = await uow.workflows.claim(name, lease_seconds=60.0)
            if not claimed:
                break
            (workflow,) = claimed
            print(workflow.id, flush=True)
            async with db.session() as uow:
                await uow.workflows.update_state(
                    workflow.id, WorkflowState.COMPLETED, expected_version=workflow.version
                )
    print("done", flush=True)


async def work(url: str, name: str, effects: str) -> None:
    async with Database.from_url(url, timeout_secs=30.0) as db:
        worker = Worker(db, name, lease_seconds=10.0, poll_seconds=0.05)
        worker.install_signal_handlers()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        async for run in worker.runs():
            async with run:
                await run_steps(run, steps_of(run, effects))
    print("stopped", flush=True)


async def hang(url: str, name: str, effects: str, lease_seconds: float) -> None:
    async with Database.from_url(url, timeout_secs=30.0) as db:
        worker = Worker(db, name, lease_seconds=lease_seconds, poll_seconds=0.05)
        in_flight: list[StepExecution] = []
        async for run in worker.runs(until_idle=True):

            async def stuck(recording: StepRecording, run: WorkflowRun = run) -> JsonValue:
                record_effect(effects, run, recording)
                in_flight.append(recording.execution)
                print("in-step", run.workflow.id, recording.execution.id, flush=True)
                await asyncio.sleep(3600)
                return None

            async with run:
                await run_steps(run, steps_of(run, effects, summarise=stuck))
            if run.lost:
                print("lost", flush=True)
                await try_every_write(db, run, in_flight[0])
            break
    print("done", flush=True)


async def try_every_write(db: Database, run: WorkflowRun, running: StepExecution) -> None:
    """Each write a worker makes, with the run's lease: print how each ended."""
    lease, workflow_id = run.lease, run.workflow.id
    writes: dict[str, Callable[[Any], Awaitable[object]]] = {
        "start": lambda uow: uow.step_executions.start(workflow_id, "publish", {}, lease=lease),
        "complete-step": lambda uow: uow.step_executions.update_completion(
            running.id, StepExecutionState.SUCCEEDED, output={"late": True}, lease=lease
        ),
        "artifact": lambda uow: uow.artifacts.create(
            Artifact.new(workflow_id, "summarise", "late.md", path="late.md", size_bytes=1),
            lease=lease,
        ),
        "output": lambda uow: uow.workflows.update_output(workflow_id, {"late": 1}, lease=lease),
        "complete": lambda uow: uow.workflows.update_state(
            workflow_id, WorkflowState.COMPLETED, lease=lease
        ),
        "fail": lambda uow: uow.workflows.update_state(
            workflow_id, WorkflowState.FAILED, "late", lease=lease
        ),
        "heartbeat": lambda uow: uow.workflows.heartbeat(workflow_id, lease.owner, lease=lease),
        "release": lambda uow: uow.workflows.release(workflow_id, lease.owner, lease=lease),
    }
    for name, write in writes.items():
        try:
            async with db.session() as uow:
                await write(uow)
            outcome = "written"
        except DbError as error:
            outcome = type(error).__name__
        print(name, outcome, flush=True)

    async def nothing(recording: StepRecording) -> JsonValue:
        return None

    through_the_run: dict[str, Callable[[], Awaitable[object]]] = {
        "run-step": lambda: run.step("publish", {}, nothing),
        "run-complete": lambda: run.complete(),
    }
    for name, through_run in through_the_run.items():
        try:
            await through_run()
            outcome = "written"
        except DbError as error:
            outcome = type(error).__name__
        print(name, outcome, flush=True)


async def slow(url: str, name: str, seconds: float, grace: float) -> None:
    async with Database.from_url(url, timeout_secs=30.0) as db:
        worker = Worker(db, name, lease_seconds=10.0, poll_seconds=0.05)
        worker.install_signal_handlers(grace_seconds=grace)
        async for run in worker.runs():

            async def step(recording: StepRecording, run: WorkflowRun = run) -> JsonValue:
                print("in-step", run.workflow.id, flush=True)
                await asyncio.sleep(seconds)
                return {"slept": seconds}

            async with run:
                await run.step("work", {}, step)
    print("stopped", flush=True)


async def stuck(url: str, name: str, lease_seconds: float) -> None:
    """A worker whose one step prints ``in-step <workflow id>`` and hangs (to be cancelled)."""
    async with Database.from_url(url, timeout_secs=30.0) as db:
        worker = Worker(db, name, lease_seconds=lease_seconds, poll_seconds=0.05)
        worker.install_signal_handlers()
        async for run in worker.runs():

            async def step(recording: StepRecording, run: WorkflowRun = run) -> JsonValue:
                print("in-step", run.workflow.id, flush=True)
                await asyncio.sleep(3600)
                return None

            async with run:
                await run.step("hang", {}, step)
            print("ended", run.workflow.id, run.workflow.state.value, flush=True)
    print("stopped", flush=True)


async def limited(url: str, name: str, seconds: float) -> None:
    """A worker whose one step takes ``SECONDS`` (``ready``, then a line on stdin to start)."""
    async with Database.from_url(url, timeout_secs=30.0) as db:
        worker = Worker(db, name, lease_seconds=10.0, poll_seconds=0.1)
        worker.install_signal_handlers()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        async for run in worker.runs():

            async def step(recording: StepRecording) -> JsonValue:
                await asyncio.sleep(seconds)
                return None

            async with run:
                await run.step("work", {}, step)
    print("stopped", flush=True)


def main(argv: list[str]) -> None:
    mode, url, name, *rest = argv
    if mode == "claim-loop":
        asyncio.run(claim_loop(url, name))
    elif mode == "work":
        asyncio.run(work(url, name, rest[0]))
    elif mode == "hang":
        asyncio.run(hang(url, name, rest[0], float(rest[1])))
    elif mode == "stuck":
        asyncio.run(stuck(url, name, float(rest[0])))
    elif mode == "limited":
        asyncio.run(limited(url, name, float(rest[0])))
    elif mode == "slow":
        asyncio.run(slow(url, name, float(rest[0]), float(rest[1])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
