"""``python -m benchmarks.memory``: resident size of a worker, and the peak of a big create_many.

Each measurement runs in a fresh child process, so nothing else the
benchmark did is in its figures:

- a worker process (``Worker.runs``, 3-step workflows, ``--concurrency``
  runs at a time) over a queue seeded with ``--workflows`` workflows; its
  resident size (``VmRSS``) after the first 10 % of them and after all of
  them (1,000 and 10,000 by default). Nothing should grow per workflow:
  the target is at most 10 % more at the end.
- ``create_many`` of ``--attempts`` step executions (100,000 by default) in
  one unit of work, from domain objects built beforehand: the process's
  peak resident size (``VmHWM``), and its size before the objects were
  built. Target: a peak under 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
from collections.abc import Sequence

from benchmarks.scratch import DEFAULT_POSTGRES_URL, scratch_database
from ecl_persistence import Database, JsonValue, StepExecution, StepRecording, Worker, Workflow

__all__ = ["main", "measure"]

_DEFINITION = "bench-memory"


def _status(field: str) -> float:
    """A field of /proc/self/status in MB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


async def _step(recording: StepRecording) -> JsonValue:
    return {"attempt": recording.attempt}


async def _worker(url: str, workflows: int, concurrency: int) -> None:
    checkpoint = max(1, workflows // 10)
    async with Database.from_url(url, max_connections=concurrency + 2) as db:
        worker = Worker(db, "memory", poll_seconds=0.01, concurrency=concurrency)
        done = 0

        async def handle(run: object) -> None:
            nonlocal done
            from ecl_persistence import WorkflowRun

            assert isinstance(run, WorkflowRun)
            async with run:
                for k in range(3):
                    await run.step(f"step-{k}", {"k": k}, _step)
                await run.complete({"steps": 3})
            done += 1
            if done in (checkpoint, workflows):
                gc.collect()
                print(f"rss {done} {_status('VmRSS'):.1f}", flush=True)

        async with asyncio.TaskGroup() as group:
            async for run in worker.runs(until_idle=True):
                group.create_task(handle(run))


async def _create_many(url: str, attempts: int) -> None:
    per_workflow = 1000
    async with Database.from_url(url) as db:
        workflows = [Workflow.new(_DEFINITION, {"n": n}) for n in range(-(-attempts // 1000))]
        async with db.session() as uow:
            for workflow in workflows:
                await uow.workflows.create(workflow)
        gc.collect()
        print(f"before {_status('VmRSS'):.1f}", flush=True)
        executions = [
            StepExecution.start(
                workflows[n // per_workflow].id,
                f"step-{n % per_workflow}",
                {"q": "tides", "n": n},
            )
            for n in range(attempts)
        ]
        async with db.session() as uow:
            await uow.step_executions.create_many(executions)
        print(f"peak {_status('VmHWM'):.1f}", flush=True)


async def _seed(url: str, count: int) -> None:
    async with Database.from_url(url) as db:
        await db.migrate()
        async with db.session() as uow:
            for n in range(count):
                await uow.workflows.create(Workflow.new(_DEFINITION, {"n": n}))


def _child(*arguments: str) -> dict[str, float]:
    done = subprocess.run(  # noqa: S603 - this interpreter, this module
        [sys.executable, "-m", "benchmarks.memory", "--child", *arguments],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {arguments[0]} child failed:\n{done.stderr[-3000:]}")
    output = done.stdout
    figures: dict[str, float] = {}
    for line in output.splitlines():
        words = line.split()
        figures[" ".join(words[:-1])] = float(words[-1])
    return figures


async def measure(
    dialect: str, postgres_url: str, workflows: int, attempts: int, concurrency: int
) -> dict[str, float]:
    """The figures of one backend: ``rss N`` after N workflows, ``before`` and ``peak``."""
    figures: dict[str, float] = {}
    async with scratch_database(dialect, postgres_url) as url:
        await _seed(url, workflows)
        figures |= _child("worker", url, str(workflows), str(concurrency))
    async with scratch_database(dialect, postgres_url) as url:
        async with Database.from_url(url) as db:
            await db.migrate()
        figures |= _child("create_many", url, str(attempts))
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the figures; return the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--child"]:
        if arguments[1] == "worker":
            asyncio.run(_worker(arguments[2], int(arguments[3]), int(arguments[4])))
        else:
            asyncio.run(_create_many(arguments[2], int(arguments[3])))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--attempts", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--postgres-url", default=os.environ.get("ECL_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    )
    args = parser.parse_args(arguments)
    dialects = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print("| backend | worker RSS after 10 % | after 100 % | growth | create_many: "
          "RSS before | peak RSS |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for dialect in dialects:
        f = asyncio.run(
            measure(dialect, args.postgres_url, args.workflows, args.attempts, args.concurrency)
        )
        first = f[f"rss {max(1, args.workflows // 10)}"]
        last = f[f"rss {args.workflows}"]
        print(f"| {dialect} | {first:.1f} MB | {last:.1f} MB | {(last / first - 1) * 100:+.1f} % "
              f"| {f['before']:.1f} MB | {f['peak']:.1f} MB |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
