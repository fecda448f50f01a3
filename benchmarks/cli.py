"""``python -m benchmarks``: run the workloads on one or both backends and print the tables.

Examples::

    python -m benchmarks --backend both
    python -m benchmarks --backend postgresql --rounds 9 --json bench.json
    python -m benchmarks --backend sqlite --scaling      # also reads at 1,000,000 rows
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy import text

from benchmarks.contenders import Contender, Target, all_contenders
from benchmarks.fixture import Fixture
from benchmarks.report import BackendResult, print_report, to_markdown, write_json
from benchmarks.runner import RAW, Measurement, Runner
from benchmarks.scratch import DEFAULT_POSTGRES_URL, scratch_database
from benchmarks.workloads import Workload, by_key
from ecl_persistence import Database

__all__ = ["main"]

POSTGRES_URL_VARIABLE = "ECL_TEST_POSTGRES_URL"
_BACKENDS = {"sqlite": ["sqlite"], "postgresql": ["postgresql"], "both": ["sqlite", "postgresql"]}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--backend", choices=sorted(_BACKENDS), default="both")
    parser.add_argument(
        "--scale", type=int, default=10_000, help="step executions seeded (default 10,000)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per workload (default 5)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=0.25,
        help="target length of the raw driver's timed batch (default 0.25)",
    )
    parser.add_argument(
        "--workloads", default="abcdef", help="workload letters to run (default abcdef)"
    )
    parser.add_argument(
        "--create-many-size",
        type=int,
        default=10_000,
        help="step executions per create_many in workload (b) (default 10,000)",
    )
    parser.add_argument(
        "--contenders",
        default=None,
        help="comma-separated contender names to run besides the raw driver (default all)",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="afterwards, grow to --scaling-rows and time the reads again",
    )
    parser.add_argument("--scaling-rows", type=int, default=1_000_000)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_URL_VARIABLE) or DEFAULT_POSTGRES_URL,
        help=f"admin database of the server (default ${POSTGRES_URL_VARIABLE} or "
        f"{DEFAULT_POSTGRES_URL}); a scratch database is created and dropped next to it",
    )
    parser.add_argument("--json", type=Path, help="write every measurement to this file")
    parser.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    parser.add_argument(
        "--cpu", action="store_true", help="also print this process's CPU time per operation"
    )
    return parser


class _Display:
    """The progress bar: one task for seeding, one for timed batches."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def start(self, description: str, total: int) -> Callable[[int], None]:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(description, total=total)
        task = self.task
        return lambda advance: self.progress.advance(task, advance)

    def timing(self, description: str, total: int) -> Callable[[str], None]:
        advance = self.start(description, total)

        def step(label: str) -> None:
            assert self.task is not None
            self.progress.update(self.task, description=f"{description} {label}")
            advance(1)

        return step


def _select(contenders: list[Contender], names: str | None) -> list[Contender]:
    if names is None:
        return contenders
    wanted = {name.strip() for name in names.split(",")} | {RAW}
    unknown = wanted - {contender.name for contender in contenders}
    if unknown:
        raise SystemExit(f"unknown contenders: {', '.join(sorted(unknown))}")
    return [contender for contender in contenders if contender.name in wanted]


async def _analyze(db: Database) -> None:
    # PostgreSQL plans from statistics, which autovacuum would gather only later.
    if db.dialect == "postgresql":
        async with db.engine.connect() as connection:
            await connection.execute(text("ANALYZE"))
            await connection.commit()


async def _run_all(
    runner: Runner, workloads: Sequence[Workload], display: _Display, label: str
) -> list[Measurement]:
    runner.advance = display.timing(label, len(workloads) * runner.rounds * len(runner.contenders))
    measurements: list[Measurement] = []
    for workload in workloads:
        measurements += await runner.run(workload)
    return measurements


async def _run_backend(dialect: str, args: argparse.Namespace, display: _Display) -> BackendResult:
    workloads = by_key(args.workloads, args.create_many_size)
    reads = [workload for workload in workloads if not workload.writes]
    writes = [workload for workload in workloads if workload.writes]
    async with scratch_database(dialect, args.postgres_url) as url:
        seeder = Database.from_url(url)
        contenders = _select(all_contenders(dialect), args.contenders)
        try:
            await seeder.migrate()
            fixture = Fixture()
            await fixture.grow(seeder, args.scale, display.start(f"{dialect}: seeding", args.scale))
            await _analyze(seeder)
            for contender in contenders:
                await contender.open(Target(url, dialect))
            runner = Runner(contenders, fixture, args.rounds, args.seconds, lambda label: None)
            # Reads first, on the data as seeded; the writes then add rows.
            measurements = await _run_all(runner, [*reads, *writes], display, dialect)
            scaled: list[Measurement] = []
            if args.scaling:
                grow = display.start(f"{dialect}: growing", args.scaling_rows - fixture.executions)
                await fixture.grow(seeder, args.scaling_rows, grow)
                await _analyze(seeder)
                scaled = await _run_all(runner, reads, display, f"{dialect} at scale")
        finally:
            for contender in contenders:
                await contender.close()
            await seeder.dispose()
    return BackendResult(
        backend=dialect,
        executions=args.scale,
        rounds=args.rounds,
        measurements=tuple(measurements),
        scaled_executions=args.scaling_rows if args.scaling else None,
        scaled=tuple(scaled),
    )


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    versions = {
        name: metadata.version(name)
        for name in ("sqlalchemy", "asyncpg", "aiosqlite", "advanced-alchemy", "attrs")
    }
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "sqlite": sqlite3.sqlite_version,
        "versions": versions,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "scale": args.scale,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; return the exit status."""
    args = _parser().parse_args(argv)
    # Wide enough for five columns when the output is not a terminal (a log, a pipe).
    console = Console(width=None if sys.stdout.isatty() else 132)
    results: list[BackendResult] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        display = _Display(progress)
        for dialect in _BACKENDS[args.backend]:
            results.append(asyncio.run(_run_backend(dialect, args, display)))
    print_report(results, console, cpu=args.cpu)
    if args.markdown:
        sys.stdout.write(to_markdown(results) + "\n")
    if args.json is not None:
        write_json(args.json, results, _meta(args))
    return 0
