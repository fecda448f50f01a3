"""``python -m benchmarks.rows``: what the entity path would cost where the package reads rows.

For each operation that stays on rows (``docs/concepts.md``), the same
operation through ORM entities (``select(Record)`` and the entity mappers,
or an ORM bulk INSERT), timed side by side in one process on one scratch
database per backend: CPU time of the process per operation, median of the
rounds, entity path over row path.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import insert, select

from benchmarks.scratch import DEFAULT_POSTGRES_URL, scratch_database
from ecl_persistence import (
    Database,
    ExecutionStats,
    StepExecution,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import stats_of
from ecl_persistence.orm import StepExecutionRecord, WorkflowRecord
from ecl_persistence.repositories._checks import check_payloads
from ecl_persistence.repositories.mappers import (
    step_execution_from_record,
    step_execution_values,
    workflow_from_record,
)

__all__ = ["main"]

Operation = Callable[[Database, int], Awaitable[object]]

_STEPS = 20
_WORKFLOWS = 200
_PAGE = 50
_BATCH = 2_000


def _attempts(workflow: Workflow, count: int, prefix: str = "step-") -> list[StepExecution]:
    return [
        StepExecution.start(workflow.id, f"{prefix}{n}", {"q": n, "text": "x" * 80}, attempt=1)
        for n in range(count)
    ]


async def _seed(db: Database) -> list[Workflow]:
    workflows = [Workflow.new("bench", {"topic": n}) for n in range(_WORKFLOWS)]
    async with db.session() as uow:
        for workflow in workflows:
            await uow.workflows.create(workflow)
        await uow.step_executions.create_many(
            execution for workflow in workflows for execution in _attempts(workflow, _STEPS)
        )
    return workflows


def _reads(workflows: Sequence[Workflow]) -> dict[str, tuple[Operation, Operation]]:
    def wid(n: int) -> Any:
        return workflows[n % len(workflows)].id

    async def history_rows(db: Database, n: int) -> object:
        async with db.session(read_only=True) as uow:
            return await uow.step_executions.get_for_workflow(wid(n))

    async def history_entities(db: Database, n: int) -> object:
        statement = (
            select(StepExecutionRecord)
            .where(StepExecutionRecord.workflow_id == wid(n))
            .order_by(StepExecutionRecord.started_at, StepExecutionRecord.attempt)
        )
        async with db.session(read_only=True) as uow:
            result = await uow.session.execute(statement)
            return [step_execution_from_record(record) for record in result.scalars()]

    async def page_rows(db: Database, n: int) -> object:
        async with db.session(read_only=True) as uow:
            return await uow.workflows.list(state=WorkflowState.PENDING, limit=_PAGE)

    async def page_entities(db: Database, n: int) -> object:
        statement = (
            select(WorkflowRecord)
            .where(WorkflowRecord.state == "pending")
            .order_by(WorkflowRecord.created_at.desc(), WorkflowRecord.id.desc())
            .limit(_PAGE + 1)
        )
        async with db.session(read_only=True) as uow:
            result = await uow.session.execute(statement)
            return [workflow_from_record(record) for record in result.scalars()]

    async def stats_sql(db: Database, n: int) -> ExecutionStats:
        async with db.session(read_only=True) as uow:
            return await uow.step_executions.get_stats(wid(n))

    async def stats_entities(db: Database, n: int) -> ExecutionStats:
        return stats_of(await history_entities(db, n))  # type: ignore[arg-type]

    return {
        "get_for_workflow (20 attempts)": (history_rows, history_entities),
        "list page (50 workflows)": (page_rows, page_entities),
        "get_stats (20 attempts)": (stats_sql, stats_entities),
    }


def _claims(queue: Sequence[Workflow]) -> dict[str, tuple[Operation, Operation]]:
    taken = iter(queue)

    async def claim_rows(db: Database, n: int) -> object:
        async with db.session() as uow:
            return await uow.workflows.claim("bench-worker", definition_ids=["queue-rows"], limit=1)

    async def claim_entity(db: Database, n: int) -> object:
        # The same pick, take and audit row, through the single-workflow entity path.
        async with db.session() as uow:
            return await uow.workflows.claim_by_id(next(taken).id, "bench-worker")

    return {"claim (1 workflow)": (claim_rows, claim_entity)}


def _writes(workflows: Sequence[Workflow]) -> dict[str, tuple[Operation, Operation]]:
    async def many_rows(db: Database, n: int) -> object:
        # Both paths build their batch alike: only the INSERT differs.
        batch = _attempts(workflows[n % len(workflows)], _BATCH, prefix=f"b{n}-")
        async with db.session() as uow:
            return await uow.step_executions.create_many(batch)

    async def many_entities(db: Database, n: int) -> object:
        batch = _attempts(workflows[n % len(workflows)], _BATCH, prefix=f"e{n}-")
        async with db.session() as uow:
            values = []
            for execution in batch:
                # The repository's checks too, so only the INSERT differs.
                check_payloads(uow, execution.input, execution.output, execution.metadata)
                values.append(step_execution_values(execution))
            await uow.session.execute(insert(StepExecutionRecord), values)
        return batch

    return {f"create_many ({_BATCH:,} attempts)": (many_rows, many_entities)}


async def _time(db: Database, operation: Operation, count: int, offset: int) -> float:
    started = time.process_time()
    for n in range(count):
        await operation(db, offset + n)
    return (time.process_time() - started) / count * 1e6


async def _compare(
    db: Database, operations: dict[str, tuple[Operation, Operation]], count: int, rounds: int
) -> dict[str, tuple[float, float]]:
    results: dict[str, tuple[float, float]] = {}
    for name, (rows, entities) in operations.items():
        row_times, entity_times = [], []
        # Warm-up on an offset no round uses (writes must not collide with a round's).
        await rows(db, -1)
        await entities(db, -1)
        for round_number in range(rounds):
            offset = 1000 * round_number
            # Interleaved, alternating which goes first.
            first, second = (rows, entities) if round_number % 2 == 0 else (entities, rows)
            a = await _time(db, first, count, offset)
            b = await _time(db, second, count, offset + 500)
            row_time, entity_time = (a, b) if first is rows else (b, a)
            row_times.append(row_time)
            entity_times.append(entity_time)
        results[name] = (statistics.median(row_times), statistics.median(entity_times))
    return results


async def _run(backend: str, postgres_url: str, rounds: int) -> None:
    async with scratch_database(backend, postgres_url) as url:
        db = Database.from_url(url)
        try:
            await db.migrate()
            workflows = await _seed(db)
            claims = 200 * rounds + 10
            queue = [Workflow.new("queue-entities", {"n": n}) for n in range(claims)]
            async with db.session() as uow:
                for workflow in [*queue, *(Workflow.new("queue-rows", {}) for _ in range(claims))]:
                    await uow.workflows.create(workflow)
            results = await _compare(db, _reads(workflows), 200, rounds)
            results |= await _compare(db, _claims(queue), 200, rounds)
            results |= await _compare(db, _writes(workflows), 3, rounds)
        finally:
            await db.dispose()
    print(f"\n{backend}: CPU time per operation, median of {rounds} rounds")
    print("| operation | rows | entities | entities / rows |")
    print("| --- | ---: | ---: | ---: |")
    for name, (rows, entities) in results.items():
        print(f"| {name} | {rows:,.0f} µs | {entities:,.0f} µs | {entities / rows:.2f} |")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the comparison on the backends asked for and print a Markdown table per backend."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rows", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args(argv)
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    for backend in backends:
        asyncio.run(_run(backend, args.postgres_url, args.rounds))


if __name__ == "__main__":
    main()
