"""``python -m benchmarks.durable``: workload (g), a durable 3-step workflow run to completion.

Contenders: ecl-persistence through its public Worker path (create,
``worker.claim``, three ``run.step``, ``run.complete``), the raw driver doing
the same protocol with the same guarantees (audit rows, attempt rows, fenced
writes), the naive ORM repository doing it too, and DBOS Transact
(``@DBOS.workflow`` of three ``@DBOS.step``, its system database a second
scratch database on the same server, or a SQLite file in a temporary
directory). Each runs N workflows one at a time, then with 16 at a time.

As in ``python -m benchmarks``: every round times one batch per contender
in an order that rotates per round, batches are sized to last ``--seconds``
for the raw driver, and the report gives median rates and the median ratio
to the raw driver in the same round, and the CPU time of the process per
workflow. Every contender is checked first: what it stored after two
workflows must be two completed workflows with all their steps succeeded.
``--smoke`` runs each contender once at tiny scale (the default ``nox`` run
does, so the benchmark cannot rot unnoticed).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack

from benchmarks.contenders.flows import FlowContender, FlowTarget
from benchmarks.runner import RAW, Measurement
from benchmarks.scratch import DEFAULT_POSTGRES_URL, scratch_database
from ecl_persistence import Database

__all__ = ["flow_contenders", "main", "run_backend"]

_CALIBRATION = 20
_MIN_BATCH = 16


def flow_contenders() -> list[FlowContender]:
    """Every contender of (g): ecl, raw driver, naive ORM, DBOS, and ecl's older path."""
    from benchmarks.contenders.flow_peers import (
        DbosFlows,
        EclCreateThenClaim,
        EclFlows,
        NaiveFlows,
    )
    from benchmarks.contenders.flow_raw import RawFlows

    return [EclFlows(), RawFlows(), NaiveFlows(), DbosFlows(), EclCreateThenClaim()]


async def _batch(contender: FlowContender, first: int, count: int, concurrency: int) -> None:
    """Run workflows ``first .. first + count``, at most ``concurrency`` at a time."""
    numbers = iter(range(first, first + count))

    async def lane() -> None:
        for n in numbers:
            await contender.run_flow(n)

    if concurrency == 1:
        await lane()
        return
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(lane())


class _Counter:
    """Workflow numbers, unique over the run (DBOS's ids are not ours to reuse)."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, count: int) -> int:
        first, self.next = self.next, self.next + count
        return first


async def _time(
    contender: FlowContender, counter: _Counter, count: int, concurrency: int
) -> tuple[float, float]:
    first = counter.take(count)
    gc.collect()
    start, start_cpu = time.perf_counter(), time.process_time()
    await _batch(contender, first, count, concurrency)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return count / elapsed, cpu / count * 1e6


async def _measure(
    contenders: Sequence[FlowContender],
    concurrency: int,
    rounds: int,
    seconds: float,
    counter: _Counter,
    fixed: int | None,
) -> list[Measurement]:
    key = f"g{concurrency}"
    batch = fixed
    if batch is None:
        raw_rate = 0.0
        for contender in contenders:  # warm-up, and the raw driver's rate
            rate, _ = await _time(contender, counter, _CALIBRATION, concurrency)
            if contender.name == RAW:
                raw_rate = rate
        batch = max(_MIN_BATCH, int(seconds * raw_rate))
    rates: dict[str, list[float]] = {contender.name: [] for contender in contenders}
    cpu: dict[str, list[float]] = {contender.name: [] for contender in contenders}
    for number in range(rounds):
        shift = number % len(contenders)
        for contender in [*contenders[shift:], *contenders[:shift]]:
            rate, cpu_time = await _time(contender, counter, batch, concurrency)
            rates[contender.name].append(rate)
            cpu[contender.name].append(cpu_time)
    raw = rates[RAW]
    return [
        Measurement(
            workload=key,
            contender=name,
            batch=batch,
            rates=tuple(values),
            ratios=tuple(value / base for value, base in zip(values, raw, strict=True)),
            cpu=tuple(cpu[name]),
        )
        for name, values in rates.items()
    ]


async def _verify(contenders: Sequence[FlowContender], counter: _Counter) -> None:
    """Two workflows each, one at a time and then side by side; all must be stored complete."""
    for contender in contenders:
        before = await contender.completed()
        await _batch(contender, counter.take(1), 1, 1)
        await _batch(contender, counter.take(2), 2, 2)
        after = await contender.completed()
        if after - before != 3:
            raise AssertionError(f"{contender.name}: {after - before} workflows completed, not 3")


async def run_backend(
    dialect: str,
    postgres_url: str,
    *,
    concurrencies: Sequence[int] = (1, 16),
    rounds: int = 3,
    seconds: float = 1.0,
    smoke: bool = False,
    names: Sequence[str] | None = None,
) -> list[Measurement]:
    """Measure workload (g) on ``dialect``: one list of measurements per concurrency, flattened."""
    contenders = [c for c in flow_contenders() if names is None or c.name in {*names, RAW}]
    counter = _Counter()
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(scratch_database(dialect, postgres_url))
        peer = await stack.enter_async_context(scratch_database(dialect, postgres_url))
        async with Database.from_url(url) as db:
            await db.migrate()
        pool = max(5, *concurrencies)
        target = FlowTarget(url, dialect, pool, peer)
        opened: list[FlowContender] = []
        try:
            for contender in contenders:
                await contender.open(target)
                opened.append(contender)
            await _verify(contenders, counter)
            measurements: list[Measurement] = []
            for concurrency in concurrencies:
                measurements += await _measure(
                    contenders,
                    concurrency,
                    1 if smoke else rounds,
                    seconds,
                    counter,
                    concurrency if smoke else None,
                )
        finally:
            for contender in reversed(opened):
                await contender.close()
    return measurements


def _table(dialect: str, measurements: Sequence[Measurement], cpu: bool) -> str:
    names = list(dict.fromkeys(m.contender for m in measurements))
    keys = list(dict.fromkeys(m.workload for m in measurements))
    cells = {(m.workload, m.contender): m for m in measurements}
    lines = [
        f"**{dialect}**, workflows/s (median of {len(measurements[0].rates)} rounds; "
        "ratio to the raw driver in the same round)",
        "",
        "| (g) 3-step workflow | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    for key in keys:
        label = "one at a time" if key == "g1" else f"{key[1:]} at a time"
        row = []
        for name in names:
            m = cells[(key, name)]
            row.append(f"{m.rate:,.0f}" if name == RAW else f"{m.rate:,.0f} ({m.ratio:.2f})")
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    if cpu:
        lines += ["", "| CPU µs per workflow | " + " | ".join(names) + " |"]
        lines.append("| --- |" + " ---: |" * len(names))
        for key in keys:
            label = "one at a time" if key == "g1" else f"{key[1:]} at a time"
            values = [f"{cells[(key, name)].cpu_per_operation:,.0f}" for name in names]
            lines.append(f"| {label} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run workload (g) and print its tables; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.durable", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--contenders", default=None, help="comma-separated names besides raw")
    parser.add_argument("--smoke", action="store_true", help="each contender once, tiny scale")
    parser.add_argument("--cpu", action="store_true", help="also the CPU time per workflow")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("ECL_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    )
    args = parser.parse_args(argv)
    names = None if args.contenders is None else [n.strip() for n in args.contenders.split(",")]
    dialects = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for dialect in dialects:
        measurements = asyncio.run(
            run_backend(
                dialect,
                args.postgres_url,
                concurrencies=args.concurrency,
                rounds=args.rounds,
                seconds=args.seconds,
                smoke=args.smoke,
                names=names,
            )
        )
        print(_table(dialect, measurements, args.cpu), end="\n\n", flush=True)
        if not args.smoke:
            for m in measurements:
                rounds = ", ".join(f"{rate:.0f}" for rate in m.rates)
                median = statistics.median(m.rates)
                print(f"  {m.workload} {m.contender}: {rounds} (median {median:.0f})")
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
