"""Purge benchmark: how long each batch of ``Database.purge`` holds the write lock.

Seeds a scratch database with finished workflows older than the cutoff (each
with step executions, an artifact and the transitions that finished it),
plus recent and open workflows that must survive, then purges and reports,
per batch, the time from the batch's ``BEGIN`` (``BEGIN IMMEDIATE`` on
SQLite: the write lock is held from there) to its committed end, as max,
p50 and p99. A concurrent writer creates workflows throughout and reports
how long its own transactions took: what the purge costs everyone else.

Examples::

    python -m benchmarks.purge --rows 100000
    python -m benchmarks.purge --rows 100000 --backend postgresql --batch-size 5000
    python -m benchmarks.purge --rows 20000 --backend both --json purge.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, text

from benchmarks.scratch import DEFAULT_POSTGRES_URL, scratch_database
from ecl_persistence import (
    Artifact,
    Database,
    StepExecution,
    StepExecutionState,
    Workflow,
    WorkflowId,
    WorkflowState,
)
from ecl_persistence.domain import StepExecutionId, WorkflowTransition, new_uuid7, utc_now
from ecl_persistence.orm import ArtifactRecord, WorkflowRecord, WorkflowTransitionRecord
from ecl_persistence.repositories.mappers import (
    artifact_values,
    transition_values,
    workflow_values,
)
from ecl_persistence.retention import DEFAULT_PURGE_BATCH, MAX_PURGE_BATCH

POSTGRES_URL_VARIABLE = "ECL_TEST_POSTGRES_URL"
SEED_BATCH = 2000
KEPT = 1000
"""Recent finished workflows, and as many open ones: the purge must leave them."""
CUTOFF_DAYS = 30


# --- data -------------------------------------------------------------------------------


def _history(workflow: Workflow) -> list[dict[str, Any]]:
    """The transitions that took ``workflow`` from creation to its state."""
    states: list[WorkflowState | None] = [
        None,
        WorkflowState.PENDING,
        WorkflowState.RUNNING,
        workflow.state,
    ]
    return [
        transition_values(
            WorkflowTransition(
                id=new_uuid7(),
                workflow_id=workflow.id,
                from_state=before,
                to_state=after or workflow.state,
                at=workflow.created_at + timedelta(seconds=version),
                actor="worker-1",
                reason=workflow.error if after is WorkflowState.FAILED else None,
                version=version,
            )
        )
        for version, (before, after) in enumerate(itertools.pairwise(states), start=1)
    ]


def _finished(n: int, days_ago: float, steps: int) -> tuple[Workflow, list[StepExecution]]:
    failed = n % 10 == 0
    finished_at = utc_now() - timedelta(days=days_ago)
    created = finished_at - timedelta(minutes=2)
    workflow = Workflow(
        id=WorkflowId(new_uuid7()),
        definition_id=f"definition-{n % 5}",
        state=WorkflowState.FAILED if failed else WorkflowState.COMPLETED,
        input={"topic": f"topic {n}", "depth": 3},
        output={"pages": n} if not failed else None,
        error="model timed out" if failed else None,
        created_at=created,
        updated_at=finished_at,
        completed_at=finished_at,
        metadata={"tenant": "bench"},
        version=3,
    )
    executions = [
        StepExecution(
            id=StepExecutionId(new_uuid7()),
            workflow_id=workflow.id,
            step_id=f"step-{step}",
            attempt=1,
            state=StepExecutionState.SUCCEEDED,
            input={"q": f"query {n}"},
            output={"hits": step},
            error=None,
            started_at=created + timedelta(seconds=step),
            completed_at=created + timedelta(seconds=step + 1),
            duration_ms=1000,
            tokens_used=500,
            metadata={},
        )
        for step in range(steps)
    ]
    return workflow, executions


def _artifact(workflow: Workflow) -> dict[str, Any]:
    return artifact_values(
        Artifact.new(
            workflow.id,
            "step-0",
            "report.json",
            content_type="application/json",
            path=f"artifacts/{workflow.id}/report.json",
            size_bytes=4096,
            now=workflow.completed_at,
        )
    )


async def seed(db: Database, rows: int, steps: int) -> None:
    """Purgeable workflows (``rows`` of them) and ``KEPT`` recent and ``KEPT`` open ones."""
    plan: list[tuple[int, float]] = [(n, CUTOFF_DAYS + 1 + (n % 365)) for n in range(rows)]
    plan += [(rows + n, CUTOFF_DAYS / 3) for n in range(KEPT)]
    started = time.perf_counter()
    for first in range(0, len(plan), SEED_BATCH):
        chunk = [_finished(n, days, steps) for n, days in plan[first : first + SEED_BATCH]]
        async with db.session() as uow:
            workflows = [workflow for workflow, _ in chunk]
            history = [t for w in workflows for t in _history(w)]
            await uow.execute(insert(WorkflowRecord), [workflow_values(w) for w in workflows],
                              action="seed workflows")  # fmt: skip
            await uow.step_executions.create_many(e for _, executions in chunk for e in executions)
            await uow.execute(insert(ArtifactRecord), [_artifact(w) for w in workflows],
                              action="seed artifacts")  # fmt: skip
            await uow.execute(insert(WorkflowTransitionRecord), history,
                              action="seed transitions")  # fmt: skip
        done = min(first + SEED_BATCH, len(plan))
        print(f"\r  seeded {done:,} of {len(plan):,} finished workflows", end="", file=sys.stderr)
    async with db.session() as uow:
        for n in range(KEPT):
            await uow.workflows.create(Workflow.new("open", {"n": n}))
    print(f" ({time.perf_counter() - started:.1f} s)", file=sys.stderr)


TABLES = ("workflows", "step_executions", "artifacts", "workflow_transitions")


async def counts(db: Database) -> dict[str, int]:
    """Rows in each of ``TABLES``."""
    async with db.engine.connect() as connection:
        return {
            table: int(
                (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()  # noqa: S608 - our own table names
            )
            for table in TABLES
        }


# --- measurement ------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (``fraction`` from 0 to 1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    milliseconds = [value * 1000 for value in values]
    return {
        "count": len(milliseconds),
        "max_ms": round(max(milliseconds), 2),
        "p50_ms": round(percentile(milliseconds, 0.50), 2),
        "p99_ms": round(percentile(milliseconds, 0.99), 2),
    }


class BatchClock:
    """Timestamps of each purge batch, from the engine's events.

    ``lock``: from the moment ``BEGIN`` returned (``BEGIN IMMEDIATE`` on
    SQLite: the write lock is held from there) to the moment the batch's unit
    of work had committed and closed. Within it, ``delete``: the batch's one
    DELETE statement (with its cascades); ``commit``: the COMMIT (on SQLite
    in WAL mode, the commit that fills the WAL past its limit also copies it
    back into the database file, a checkpoint).
    """

    def __init__(self) -> None:
        self.lock: list[float] = []
        self.delete: list[float] = []
        self.commit: list[float] = []
        self._marks: dict[str, float] = {}
        # One object per handler, so that listen(on=False) removes the same.
        self._handlers: dict[str, Any] = {
            "begin": lambda *args: self._set("begin"),
            "commit": lambda *args: self._set("commit"),
            "before_cursor_execute": self._on_statement("delete_started"),
            "after_cursor_execute": self._on_statement("delete_ended"),
        }

    def listen(self, db: Database, *, on: bool = True) -> None:
        """Start (or, with ``on=False``, stop) listening to ``db``'s engine.

        Registered after the package's own "begin" hook, so the mark is set
        once BEGIN has returned.
        """
        toggle = event.listen if on else event.remove
        for name, handler in self._handlers.items():
            toggle(db.engine.sync_engine, name, handler)

    def _on_statement(self, name: str) -> Any:
        def handler(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            if statement.startswith("DELETE FROM workflows"):
                self._set(name)

        return handler

    def _set(self, name: str) -> None:
        self._marks[name] = time.perf_counter()

    def batch_done(self, count: int) -> None:
        """The ``on_batch`` callback: called once the batch committed."""
        now, marks = time.perf_counter(), self._marks
        self.lock.append(now - marks["begin"])
        self.delete.append(marks["delete_ended"] - marks["delete_started"])
        self.commit.append(now - marks["commit"])


async def measure_purge(db: Database, batch_size: int) -> dict[str, Any]:
    """Purge everything past the cutoff; time each batch and a concurrent writer.

    The writer has a ``Database`` (an engine) of its own, as another process
    would, so that every transaction begun on ``db``'s engine is a batch.
    """
    clock = BatchClock()
    writes: list[float] = []
    done = asyncio.Event()

    async def writer() -> None:
        async with Database(db.config) as other:
            n = 0
            while not done.is_set():
                started = time.perf_counter()
                async with other.session() as uow:
                    await uow.workflows.create(Workflow.new("during-purge", {"n": n}))
                writes.append(time.perf_counter() - started)
                n += 1
                await asyncio.sleep(0.005)

    cutoff = utc_now() - timedelta(days=CUTOFF_DAYS)
    due = await db.purge(finished_before=cutoff, dry_run=True)
    background = asyncio.create_task(writer())
    await asyncio.sleep(0.05)
    clock.listen(db)
    started = time.perf_counter()
    try:
        total = await db.purge(
            finished_before=cutoff, batch_size=batch_size, on_batch=clock.batch_done
        )
    finally:
        elapsed = time.perf_counter() - started
        clock.listen(db, on=False)
        done.set()
        await background
    return {
        "due": due,
        "purged": total,
        "batch_size": batch_size,
        "batches": len(clock.lock),
        "total_s": round(elapsed, 2),
        "rows_per_s": round(total / elapsed) if elapsed else None,
        "batch_lock": _summary(clock.lock),
        "batch_delete": _summary(clock.delete),
        "batch_commit": _summary(clock.commit),
        "concurrent_writer": _summary(writes),
    }


def _check(backend: str, rows: int, steps: int, before: dict[str, int], after: dict[str, int],
           figures: dict[str, Any]) -> None:  # fmt: skip
    """Fail unless exactly the purgeable workflows went, with all their children."""
    created = figures["concurrent_writer"]["count"]
    expected = {
        "workflows": before["workflows"] - rows + created,
        "step_executions": KEPT * steps,
        "artifacts": KEPT,
        # Three for each recent finished workflow, one for each open one.
        "workflow_transitions": KEPT * 3 + KEPT + created,
    }
    if figures["purged"] != rows or after != expected:
        raise SystemExit(f"{backend}: purged {figures['purged']} of {rows}; left {after}")


async def run(
    backend: str, admin_url: str, rows: int, steps: int, batch_size: int
) -> dict[str, Any]:
    """Seed, purge and check one backend; return its figures."""
    async with scratch_database(backend, admin_url) as url, Database.from_url(url) as db:
        print(f"{backend}: migrating and seeding", file=sys.stderr)
        await db.migrate()
        await seed(db, rows, steps)
        before = await counts(db)
        print(f"{backend}: purging {rows:,} workflows, batches of {batch_size:,}", file=sys.stderr)
        figures = await measure_purge(db, batch_size)
        after = await counts(db)
    _check(backend, rows, steps, before, after, figures)
    return {"backend": backend, "rows": before, "left": after, **figures}


def _print(result: dict[str, Any]) -> None:
    lock, writer = result["batch_lock"], result["concurrent_writer"]
    delete, commit = result["batch_delete"], result["batch_commit"]
    print(
        f"{result['backend']}: purged {result['purged']:,} workflows "
        f"({result['rows']['step_executions']:,} step executions, "
        f"{result['rows']['workflow_transitions']:,} transitions before) "
        f"in {result['batches']} batches of {result['batch_size']:,}, "
        f"{result['total_s']} s ({result['rows_per_s']:,} workflows/s)\n"
        f"  batch lock time: max {lock['max_ms']} ms, p50 {lock['p50_ms']} ms, "
        f"p99 {lock['p99_ms']} ms\n"
        f"    of which DELETE: max {delete['max_ms']} ms, p50 {delete['p50_ms']} ms; "
        f"COMMIT: max {commit['max_ms']} ms, p50 {commit['p50_ms']} ms\n"
        f"  concurrent writer ({writer['count']} creates): max {writer['max_ms']} ms, "
        f"p50 {writer['p50_ms']} ms, p99 {writer['p99_ms']} ms"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.purge", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000, help="workflows to purge")
    parser.add_argument("--steps", type=int, default=3, help="step executions per workflow")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_PURGE_BATCH,
        choices=range(1, MAX_PURGE_BATCH + 1),
        metavar=f"1..{MAX_PURGE_BATCH}",
        help=f"workflows per transaction (default {DEFAULT_PURGE_BATCH:,})",
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    admin_url = os.environ.get(POSTGRES_URL_VARIABLE) or DEFAULT_POSTGRES_URL
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = [
        asyncio.run(run(backend, admin_url, args.rows, args.steps, args.batch_size))
        for backend in backends
    ]
    for result in results:
        _print(result)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
