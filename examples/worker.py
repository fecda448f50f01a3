"""A worker: claims workflows, runs the steps they have not finished, completes them.

Run as many of these as you like, on one machine or many, against one
database: each workflow is worked on by one worker at a time, a worker that
dies leaves its workflows to the others once its leases expire, and a worker
that was paused past its lease cannot write anything once it wakes up.

Usage: ``python examples/worker.py [WORKER_ID] [--seed N] [--concurrency N]``
(database from ``ECL_DATABASE_URL``, else ``sqlite:///./ecl.db``); ``--seed``
first adds N workflows to work on. Stop it with Ctrl-C or SIGTERM: the
blocks in hand get ten seconds to finish, what is left is given back, and
the process exits with status 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys

from ecl_persistence import (
    Database,
    JsonValue,
    Retry,
    StepRecording,
    Worker,
    Workflow,
    WorkflowRun,
)

STEPS = ("search", "summarise")
LEASE_SECONDS = 30.0
MAX_CLAIMS = 5  # a workflow that killed this many workers is given up
RETRY = Retry(max_attempts=3, delay_seconds=1.0, backoff=2.0)

log = logging.getLogger("worker")


async def run_step(step: str, workflow: Workflow, outputs: dict[str, JsonValue]) -> JsonValue:
    """Stand-in for the real work of a step (an LLM call, a tool)."""
    await asyncio.sleep(0.01)
    return {"step": step, "input": workflow.input, "after": ",".join(sorted(outputs))}


async def work_on(run: WorkflowRun) -> None:
    """The work of one claimed workflow: its steps, each once, then its output."""
    if run.workflow.claim_count > MAX_CLAIMS:  # it keeps killing its workers
        await run.fail(f"given up after {run.workflow.claim_count - 1} workers stopped during it")
        return
    outputs: dict[str, JsonValue] = {}
    for step in STEPS:

        async def attempt(recording: StepRecording, step: str = step) -> JsonValue:
            recording.tokens_used = 100
            return await run_step(step, run.workflow, outputs)

        # Returns the stored output of a step that succeeded before (on any worker).
        outputs[step] = await run.step(step, {"after": ",".join(outputs)}, attempt, retry=RETRY)
    await run.complete(output=dict(outputs))


async def handle(run: WorkflowRun) -> None:
    """One run, start to end: a clean exit completes, an exception fails, a lost lease stops."""
    async with run:
        await work_on(run)
    if run.lost:
        log.warning("lost workflow %s to another worker", run.workflow.id)


async def run_worker(worker: Worker, *, until_idle: bool = False) -> int:
    """Hand each claimed workflow to its own task until the worker stops (or is idle).

    Returns how many workflows this worker claimed.
    """
    handled = 0
    async with asyncio.TaskGroup() as group:
        async for run in worker.runs(until_idle=until_idle):
            group.create_task(handle(run), name=f"workflow {run.workflow.id}")
            handled += 1
    return handled


async def main(worker_id: str, seed: int, concurrency: int) -> None:
    """Migrate, add ``seed`` workflows, then work until SIGINT or SIGTERM."""
    async with Database.from_env() as db:
        await db.migrate()
        async with db.session() as uow:
            for n in range(seed):
                await uow.workflows.create(Workflow.new("research", {"topic": f"topic {n}"}))
        worker = Worker(db, worker_id, lease_seconds=LEASE_SECONDS, concurrency=concurrency)
        worker.install_signal_handlers()
        handled = await run_worker(worker)
    print(f"{worker_id}: handled {handled} workflows")


def _option(args: list[str], name: str, default: int) -> int:
    if name not in args:
        return default
    at = args.index(name)
    value = int(args[at + 1])
    del args[at : at + 2]
    return value


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    arguments = sys.argv[1:]
    seed = _option(arguments, "--seed", 0)
    concurrency = _option(arguments, "--concurrency", 1)
    name = arguments[0] if arguments else f"{socket.gethostname()}-{os.getpid()}"
    asyncio.run(main(name, seed, concurrency))
