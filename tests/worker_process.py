"""A worker process for the multi-process tests: ``python -m tests.worker_process ...``.

``claim-loop URL WORKER``: print ``ready``, wait for a line on stdin (so that
every process starts claiming at the same moment), then claim one workflow
at a time until none is left, completing each with its claimed version;
print the id of each claimed workflow on its own line, then ``done``.

``crash URL WORKER LEASE_SECONDS``: claim one workflow with a short lease,
run the step ``fetch`` through the recorder, start the step ``summarise`` and
kill this process with SIGKILL inside it, as a crashed worker would die.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from ecl_persistence import Database, JsonValue, StepRecorder, WorkflowState

FETCH_OUTPUT: JsonValue = {"pages": 3}


async def claim_loop(url: str, worker: str) -> None:
    print("ready", flush=True)
    sys.stdin.readline()
    async with Database.from_url(url, timeout_secs=30.0) as db:
        while True:
            async with db.session() as uow:
                claimed = await uow.workflows.claim(worker, lease_seconds=60.0)
            if not claimed:
                break
            (workflow,) = claimed
            print(workflow.id, flush=True)
            async with db.session() as uow:
                await uow.workflows.update_state(
                    workflow.id, WorkflowState.COMPLETED, expected_version=workflow.version
                )
    print("done", flush=True)


async def crash(url: str, worker: str, lease_seconds: float) -> None:
    async with Database.from_url(url) as db:
        async with db.session() as uow:
            (workflow,) = await uow.workflows.claim(worker, lease_seconds=lease_seconds)
        recorder = StepRecorder(db)
        async with recorder.step(workflow.id, "fetch", {"url": "https://example.org"}) as rec:
            rec.output = FETCH_OUTPUT
        async with recorder.step(workflow.id, "summarise", {"pages": 3}):
            print(workflow.id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> None:
    command, url, worker, *rest = argv
    if command == "claim-loop":
        asyncio.run(claim_loop(url, worker))
    elif command == "crash":
        asyncio.run(crash(url, worker, float(rest[0])))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
