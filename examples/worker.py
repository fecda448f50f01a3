"""A worker: claims workflows, runs the steps they have not finished, completes them.

Run as many of these as you like, on one machine or many, against one
database: each workflow is worked on by one worker at a time, and a worker
that dies leaves its workflows to the others once its leases expire.

Usage: ``python examples/worker.py [WORKER_ID] [--seed N]`` (database from
``ECL_DATABASE_URL``, else ``sqlite:///./ecl.db``); ``--seed`` first adds N
workflows to work on. Stop it with Ctrl-C or SIGTERM: it finishes the step
in hand, gives its workflow back, and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from ecl_persistence import (
    MISSING,
    ConflictError,
    Database,
    JsonValue,
    StepRecorder,
    Workflow,
    WorkflowState,
)
from ecl_persistence.recorder import describe_exception

STEPS = ("search", "summarise")
LEASE_SECONDS = 30.0
MAX_CLAIMS = 5  # a workflow that killed this many workers is given up
IDLE_SECONDS = 1.0

log = logging.getLogger("worker")


async def run_step(step: str, workflow: Workflow, outputs: dict[str, JsonValue]) -> JsonValue:
    """Stand-in for the real work of a step (an LLM call, a tool)."""
    await asyncio.sleep(0.01)
    return {"step": step, "input": workflow.input, "after": ",".join(sorted(outputs))}


async def work_on(
    db: Database, recorder: StepRecorder, workflow: Workflow, worker_id: str, stop: asyncio.Event
) -> None:
    """Run the steps of a claimed workflow that have not succeeded yet, then complete it."""
    if workflow.claim_count > MAX_CLAIMS:
        async with db.session() as uow:
            await uow.workflows.update_state(
                workflow.id,
                WorkflowState.FAILED,
                f"given up after {workflow.claim_count - 1} workers stopped during it",
                expected_version=workflow.version,
                actor=worker_id,
            )
        return
    async with db.session(read_only=True) as uow:
        point = await uow.workflows.resume_point(workflow.id)
    # What the steps that already succeeded produced, for the steps after them.
    outputs: dict[str, JsonValue] = {
        step: execution.output
        for step, execution in point.succeeded.items()
        if execution.output is not MISSING
    }
    for step in STEPS:
        if point.is_done(step):
            continue  # succeeded before this worker (or its predecessor) died
        if stop.is_set():
            async with db.session() as uow:
                await uow.workflows.release(workflow.id, worker_id)
            return
        try:
            async with recorder.step(workflow.id, step, {"after": ",".join(outputs)}) as rec:
                result = await run_step(step, workflow, outputs)
                rec.output = result
                rec.tokens_used = 100
        except Exception as error:
            async with db.session() as uow:
                await uow.workflows.update_state(
                    workflow.id,
                    WorkflowState.FAILED,
                    describe_exception(error),
                    expected_version=workflow.version,
                    actor=worker_id,
                )
            return
        outputs[step] = result
        async with db.session() as uow:
            # Raises ConflictError if another worker took the workflow over.
            await uow.workflows.heartbeat(workflow.id, worker_id, lease_seconds=LEASE_SECONDS)
    async with db.session() as uow:
        # Both writes check the version of the claim (plus one for the output):
        # had the lease been lost and the workflow claimed again, nothing is written.
        stored = await uow.workflows.update_output(
            workflow.id, dict(outputs), expected_version=workflow.version
        )
        await uow.workflows.update_state(
            workflow.id, WorkflowState.COMPLETED, expected_version=stored.version, actor=worker_id
        )


async def run_worker(
    db: Database, worker_id: str, stop: asyncio.Event, *, exit_when_idle: bool = False
) -> int:
    """Work until ``stop`` is set (or, with ``exit_when_idle``, until nothing is left).

    Returns how many workflows this worker finished or gave back.
    """
    recorder = StepRecorder(db)
    handled = 0
    while not stop.is_set():
        async with db.session() as uow:
            claimed = await uow.workflows.claim(worker_id, lease_seconds=LEASE_SECONDS)
        if not claimed:
            if exit_when_idle:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), IDLE_SECONDS)
            continue
        for workflow in claimed:
            try:
                await work_on(db, recorder, workflow, worker_id, stop)
            except ConflictError:
                log.warning("lost workflow %s to another worker", workflow.id)
            handled += 1
    return handled


async def main(worker_id: str, seed: int) -> None:
    """Migrate, add ``seed`` workflows, then work until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Database.from_env() as db:
        await db.migrate()
        async with db.session() as uow:
            for n in range(seed):
                await uow.workflows.create(Workflow.new("research", {"topic": f"topic {n}"}))
        handled = await run_worker(db, worker_id, stop)
    print(f"{worker_id}: handled {handled} workflows")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    args = sys.argv[1:]
    seed = 0
    if "--seed" in args:
        at = args.index("--seed")
        seed = int(args[at + 1])
        del args[at : at + 2]
    name = args[0] if args else f"{socket.gethostname()}-{os.getpid()}"
    asyncio.run(main(name, seed))
