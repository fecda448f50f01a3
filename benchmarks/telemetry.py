"""What tracing costs: units of work and step attempts without the API, without an SDK, with one.

Three modes, alternated round by round so that drift hits them alike:

- ``no API``: as if ``opentelemetry-api`` were not installed;
- ``API, no SDK``: installed, no provider configured (the default of an
  application that does not trace): the target is no measurable cost;
- ``SDK``: an SDK tracer provider (batch processor, an exporter that drops
  the spans) and meter provider (in-memory reader): what tracing costs.

Workloads: a read-only unit that gets a workflow by id; a unit that creates
a workflow; a step attempt recorded by ``StepRecorder`` (two units). The
figures are microseconds of this process's CPU time per operation (all its
threads: the SQLite driver's included, the PostgreSQL server's not), the
median of the rounds: what tracing adds is CPU work in the process, and CPU
time does not count the waits of a machine shared with other work. Wall
time per operation is printed beside it.

Examples::

    python -m benchmarks.telemetry
    python -m benchmarks.telemetry --backend both --ops 500 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from benchmarks.scratch import DEFAULT_POSTGRES_URL, scratch_database
from ecl_persistence import Database, StepRecorder, Workflow, telemetry
from ecl_persistence import _telemetry_spans as spans

POSTGRES_URL_VARIABLE = "ECL_TEST_POSTGRES_URL"
MODES = ("no API", "API, no SDK", "SDK")


class _Dropped(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _mode(name: str, providers: tuple[TracerProvider, MeterProvider]) -> None:
    if name == "no API":
        spans._STATE.api = False
        telemetry.instrument()
    elif name == "API, no SDK":
        spans._STATE.api = None
        telemetry.instrument()
    else:
        spans._STATE.api = None
        telemetry.instrument(tracer_provider=providers[0], meter_provider=providers[1])


async def _workloads(db: Database) -> dict[str, Callable[[], Awaitable[None]]]:
    async with db.session() as uow:
        known = await uow.workflows.create(Workflow.new("bench", {"n": 0}))
    recorder = StepRecorder(db)

    async def read() -> None:
        async with db.session(read_only=True) as uow:
            await uow.workflows.get(known.id)

    async def write() -> None:
        async with db.session() as uow:
            await uow.workflows.create(Workflow.new("bench", {"n": 1}))

    async def step() -> None:
        async with recorder.step(known.id, "search", {"q": "tides"}) as rec:
            rec.tokens_used = 10

    return {"read unit": read, "write unit": write, "step attempt": step}


async def _time(operation: Callable[[], Awaitable[None]], ops: int) -> tuple[float, float]:
    """CPU and wall microseconds per operation."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(ops):
        await operation()
    return (time.process_time() - cpu) / ops * 1e6, (time.perf_counter() - wall) / ops * 1e6


def _check_cost(rounds: int = 200_000) -> dict[str, float]:
    """Nanoseconds of the check a unit of work makes, per mode without an SDK."""
    figures = {}
    for name in ("no API", "API, no SDK"):
        _mode(name, (TracerProvider(), MeterProvider()))
        started = time.perf_counter()
        for _ in range(rounds):
            telemetry.unit_of_work_class()
        figures[name] = (time.perf_counter() - started) / rounds * 1e9
    return figures


async def run(backend: str, admin_url: str, ops: int, rounds: int) -> None:
    """Time every workload in every mode on a scratch database of ``backend``; print the table."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_Dropped()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    providers = (tracer_provider, meter_provider)
    async with scratch_database(backend, admin_url) as url, Database.from_url(url) as db:
        await db.migrate()
        workloads = await _workloads(db)
        figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(rounds):
            for mode in MODES:
                _mode(mode, providers)
                for name, operation in workloads.items():
                    await _time(operation, max(10, ops // 10))  # warm the mode up
                    figures.setdefault((name, mode), []).append(await _time(operation, ops))
    _mode("API, no SDK", providers)
    tracer_provider.shutdown()
    meter_provider.shutdown()
    print(f"\n{backend}: CPU µs per operation (wall µs), median of {rounds} rounds of {ops}")
    print(f"{'workload':<14}" + "".join(f"{mode:>22}" for mode in MODES) + f"{'SDK cost':>10}")
    for name in workloads:
        cpu = [statistics.median(c for c, _w in figures[(name, mode)]) for mode in MODES]
        wall = [statistics.median(w for _c, w in figures[(name, mode)]) for mode in MODES]
        cells = "".join(f"{c:>13.0f} ({w:>5.0f})" for c, w in zip(cpu, wall, strict=True))
        print(f"{name:<14}{cells}{cpu[2] / cpu[0] - 1:>+10.0%}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.telemetry", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--ops", type=int, default=300, help="operations per round and mode")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    admin_url = os.environ.get(POSTGRES_URL_VARIABLE) or DEFAULT_POSTGRES_URL
    checks = _check_cost()
    print("the check per unit of work: " + ", ".join(f"{k} {v:.0f} ns" for k, v in checks.items()))
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        asyncio.run(run(backend, admin_url, args.ops, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
