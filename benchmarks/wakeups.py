"""Wake-up benchmark (PostgreSQL): create-to-claim latency, and what idle workers cost the server.

Latency: one worker waits; a client creates a workflow at a random moment;
the time from just before the create's unit of work to the worker handing
out the run, for a worker that listens for notifications (polling every
second as its fallback) and for one that only polls every second. Reported
as p50, p99 and max over ``--samples`` creates each.

Idle load: ``--workers`` workers wait on an empty queue for ``--seconds``;
the server's transactions per second on the scratch database
(``xact_commit + xact_rollback`` of ``pg_stat_database``, the reading's own
transactions left out), polling every second without a listener, with a
listener and the same polling, and with a listener and polling every 30 s.

Examples::

    python -m benchmarks.wakeups
    python -m benchmarks.wakeups --samples 100 --workers 8 --seconds 20 --json wakeups.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from benchmarks.scratch import DEFAULT_POSTGRES_URL, scratch_database
from ecl_persistence import Database, Worker, Workflow

__all__ = ["idle_load", "latencies", "main"]


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def latencies(db: Database, *, listen: bool, samples: int) -> list[float]:
    """Seconds from a create to its claim, ``samples`` times, for one waiting worker."""
    worker = Worker(db, f"bench-{'listen' if listen else 'poll'}", poll_seconds=1.0, listen=listen)
    loop = asyncio.get_running_loop()
    claimed: asyncio.Queue[float] = asyncio.Queue()

    async def consume() -> None:
        async for run in worker.runs():
            claimed.put_nowait(loop.time())
            async with run:
                pass

    task = asyncio.ensure_future(consume())
    try:
        while listen and not worker.listening:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)
        results = []
        for _ in range(samples):
            # A random phase against the worker's polling.
            await asyncio.sleep(random.uniform(0.05, 1.0))
            started = loop.time()
            async with db.session() as uow:
                await uow.workflows.create(Workflow.new("bench", {}))
            results.append(await asyncio.wait_for(claimed.get(), 10) - started)
        return results
    finally:
        await worker.stop(grace_seconds=1)
        await task


async def idle_load(
    url: str, *, workers: int, seconds: float, listen: bool, poll_seconds: float
) -> float:
    """Transactions per second on the server while ``workers`` workers wait on nothing."""
    async with Database.from_url(url, max_connections=workers) as db:
        pool = [
            Worker(db, f"idle-{n}", poll_seconds=poll_seconds, listen=listen)
            for n in range(workers)
        ]

        async def wait(worker: Worker) -> None:
            async for run in worker.runs():  # pragma: no cover - the queue stays empty
                async with run:
                    pass

        tasks = [asyncio.ensure_future(wait(worker)) for worker in pool]
        try:
            await asyncio.sleep(5.0)  # connected, listening, first claims made
            before = await _transactions(url)
            await asyncio.sleep(seconds)
            after = await _transactions(url)
        finally:
            for worker in pool:
                await worker.stop(grace_seconds=0)
            await asyncio.gather(*tasks)
    # Each reading is one transaction of its own, counted by the next one.
    return (after - before - 1) / seconds


async def _transactions(url: str) -> int:
    connection = await asyncpg.connect(_plain(url), timeout=10)
    try:
        await connection.execute("SELECT pg_stat_clear_snapshot()")
        value = await connection.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
        return int(value)
    finally:
        await connection.close()


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": p99 * 1000,
        "max_ms": ordered[-1] * 1000,
    }


async def _main(args: argparse.Namespace) -> dict[str, object]:
    async with scratch_database("postgresql", args.url) as url:
        async with Database.from_url(url) as db:
            await db.migrate()
            latency = {
                "notify (+ poll 1 s)": _summary(
                    await latencies(db, listen=True, samples=args.samples)
                ),
                "poll 1 s": _summary(await latencies(db, listen=False, samples=args.samples)),
            }
        # The server's statistics lag by up to its stats interval: let them settle.
        load = {}
        for name, listen, poll in (
            ("poll 1 s, no listener", False, 1.0),
            ("listener + poll 1 s", True, 1.0),
            ("listener + poll 30 s", True, 30.0),
        ):
            load[name] = await idle_load(
                url, workers=args.workers, seconds=args.seconds, listen=listen, poll_seconds=poll
            )
    return {"latency": latency, "idle_transactions_per_second": load, "workers": args.workers}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its tables (and write JSON with ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wakeups", description=__doc__)
    parser.add_argument("--url", default=DEFAULT_POSTGRES_URL, help="the server's admin URL")
    parser.add_argument("--samples", type=int, default=40, help="creates per latency mode")
    parser.add_argument("--workers", type=int, default=8, help="idle workers")
    parser.add_argument("--seconds", type=float, default=10.0, help="idle measurement window")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    figures = asyncio.run(_main(args))
    print("| create to claim | p50 (ms) | p99 (ms) | max (ms) |")
    print("|---|---:|---:|---:|")
    for name, row in figures["latency"].items():  # type: ignore[attr-defined]
        print(f"| {name} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['max_ms']:.1f} |")
    print()
    print(f"| {args.workers} idle workers | transactions/s on the server |")
    print("|---|---:|")
    for name, rate in figures["idle_transactions_per_second"].items():  # type: ignore[attr-defined]
        print(f"| {name} | {rate:.2f} |")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
