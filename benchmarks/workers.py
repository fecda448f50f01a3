"""``python -m benchmarks.workers``: claim throughput of 1, 2 and 4 worker processes.

Each round seeds a scratch database (a SQLite file in WAL mode, or a
PostgreSQL database) with small pending workflows, starts the worker
processes, lets them all begin at one signal, and times them until every
workflow is completed. Each process is a :class:`~ecl_persistence.Worker`
whose block claims, optionally runs ``--steps`` one-line steps, and
completes: per workflow a claim (with its resume point), the steps' starts
and ends, and the fenced completion, each its own transaction, plus the
heartbeats. Prints workflows per second, the median of the rounds, next to
the same claim and fenced completion made with repository calls in a loop
of one process (no Worker, no heartbeat), as a baseline.

Usage: ``python -m benchmarks.workers [--backend sqlite|postgresql|both]
[--workflows N] [--processes 1 2 4] [--steps K] [--concurrency C]
[--rounds R] [--postgres-url URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from sqlalchemy import text

from benchmarks import worker_peers
from benchmarks.scratch import DEFAULT_POSTGRES_URL, scratch_database
from ecl_persistence import (
    Database,
    JsonValue,
    StepRecording,
    Worker,
    Workflow,
    WorkflowRun,
    WorkflowState,
)

__all__ = ["ECL", "PROCRASTINATE", "RAW", "contenders_of", "main", "run_backend", "table"]

_DEFINITION = "bench-worker"
ECL = "ecl-persistence"
RAW = "raw driver"
PROCRASTINATE = "procrastinate"


async def _step(recording: StepRecording) -> JsonValue:
    return {"n": recording.attempt}


async def _go() -> None:
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def ecl_child(url: str, name: str, steps: int, concurrency: int) -> int:
    """One ecl worker process: ready, wait for ``go``, work until idle; how many it did."""
    async with Database.from_url(url, timeout_secs=60.0, max_connections=concurrency + 2) as db:
        await db.ping()
        worker = Worker(db, name, lease_seconds=30.0, poll_seconds=0.01, concurrency=concurrency)
        await _go()
        done = 0

        async def handle(run: WorkflowRun) -> None:
            nonlocal done
            async with run:
                for n in range(steps):
                    await run.step(f"step-{n}", {"n": n}, _step)
                await run.complete()
            done += 1

        async with asyncio.TaskGroup() as group:
            async for run in worker.runs(until_idle=True):
                group.create_task(handle(run))
        return done


async def child(contender: str, url: str, name: str, steps: int, concurrency: int) -> None:
    """One worker process of ``contender``; prints ``ready``, then ``done N``."""
    if contender == ECL:
        done = await ecl_child(url, name, steps, concurrency)
    elif contender == RAW:
        done = await worker_peers.raw_child(url, name, _go)
    else:
        done = await worker_peers.procrastinate_child(url, name, _go)
    print("done", done, flush=True)


async def _seed(url: str, count: int) -> None:
    async with Database.from_url(url) as db:
        async with db.engine.begin() as connection:
            await connection.execute(text("DELETE FROM workflows"))
        async with db.session() as uow:
            for n in range(count):
                await uow.workflows.create(Workflow.new(_DEFINITION, {"n": n}))


async def _round(url: str, contender: str, processes: int, args: argparse.Namespace) -> float:
    if contender == PROCRASTINATE:
        await worker_peers.seed_procrastinate(url, args.workflows, schema=False)
    else:
        await _seed(url, args.workflows)
    command = [sys.executable, "-m", "benchmarks.workers", "--child", contender, url]
    options = [str(args.steps), str(args.concurrency)]
    pipe = asyncio.subprocess.PIPE
    children = [
        await asyncio.create_subprocess_exec(*command, f"w{n}", *options, stdin=pipe, stdout=pipe)
        for n in range(processes)
    ]
    try:
        for process in children:
            assert process.stdout is not None
            assert (await process.stdout.readline()).strip() == b"ready"
        started = time.perf_counter()
        for process in children:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        done = 0
        for process in children:
            assert process.stdout is not None
            words = (await process.stdout.readline()).split()
            assert words[0] == b"done", words
            done += int(words[1])
        elapsed = time.perf_counter() - started
    finally:
        for process in children:
            await process.wait()
    count: int = args.workflows
    assert done == count, f"{done} workflows completed, not {count}"
    return count / elapsed


async def _baseline(url: str, count: int) -> float:
    """One process, no Worker: a claim, then a fenced completion, per workflow."""
    await _seed(url, count)
    async with Database.from_url(url) as db:
        started = time.perf_counter()
        for _ in range(count):
            async with db.session() as uow:
                (workflow,) = await uow.workflows.claim("baseline")
            async with db.session() as uow:
                await uow.workflows.update_state(
                    workflow.id, WorkflowState.COMPLETED, lease=workflow.lease
                )
        return count / (time.perf_counter() - started)


def contenders_of(dialect: str, steps: int) -> list[str]:
    """The contenders of workload (h) on ``dialect``: procrastinate only on PostgreSQL, 0 steps."""
    names = [ECL, RAW]
    if dialect == "postgresql" and steps == 0:
        names.append(PROCRASTINATE)
    return names


async def run_backend(dialect: str, args: argparse.Namespace) -> dict[tuple[str, int], list[float]]:
    """Rates of every (contender, processes), per round, contenders interleaved in each round."""
    rates: dict[tuple[str, int], list[float]] = {}
    names = contenders_of(dialect, args.steps)
    if args.steps:
        names.remove(RAW)  # the raw worker does claim and complete only
    async with scratch_database(dialect, args.postgres_url) as url:
        async with Database.from_url(url) as db:
            await db.migrate()
        if PROCRASTINATE in names:
            await worker_peers.seed_procrastinate(url, 0, schema=True)
        if args.baseline:
            rates[("repository calls, 1 process", 0)] = [
                await _baseline(url, args.workflows) for _ in range(args.rounds)
            ]
        for number in range(args.rounds):
            for processes in args.processes:
                shift = number % len(names)
                for name in [*names[shift:], *names[:shift]]:
                    rate = await _round(url, name, processes, args)
                    rates.setdefault((name, processes), []).append(rate)
                    print(f"{dialect:<10} round {number + 1} {name} x{processes}: {rate:8.0f}/s",
                          flush=True)  # fmt: skip
    return rates


def table(dialect: str, rates: dict[tuple[str, int], list[float]], processes: list[int]) -> str:
    """Workload (h) as Markdown: workflows/s and the median ratio to the raw driver per round."""
    names = list(dict.fromkeys(name for name, count in rates if count))
    lines = [f"| {dialect}: worker processes | " + " | ".join(names) + " |",
             "| --- |" + " ---: |" * len(names)]  # fmt: skip
    for count in processes:
        cells = []
        for name in names:
            values = rates[(name, count)]
            if name == RAW or (RAW, count) not in rates:
                cells.append(f"{statistics.median(values):,.0f}")
                continue
            ratios = [v / r for v, r in zip(values, rates[(RAW, count)], strict=True)]
            cells.append(f"{statistics.median(values):,.0f} ({statistics.median(ratios):.2f})")
        lines.append(f"| {count} | " + " | ".join(cells) + " |")
    for (name, count), values in rates.items():
        if not count:
            lines.append(f"| {name} | {statistics.median(values):,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--child``, one of its worker processes)."""
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["--child"]:
        contender, url, name, steps, concurrency = arguments[1:6]
        asyncio.run(child(contender, url, name, int(steps), int(concurrency)))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--baseline", action="store_true", help="also repository calls alone")
    args = parser.parse_args(arguments)
    dialects = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for dialect in dialects:
        rates = asyncio.run(run_backend(dialect, args))
        print(f"\nworkflows/s, {args.workflows} workflows of {args.steps} steps, concurrency "
              f"{args.concurrency} per process (median of {args.rounds}; ratio to the raw "
              "driver in the same round)")  # fmt: skip
        print(table(dialect, rates, args.processes), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
