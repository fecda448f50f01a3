"""Bulk writes beyond any single-statement limit, read back exactly, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.factories import persist_workflow

from ecl_persistence import Database, StepExecution

ROWS = 40_000
"""With 13 columns, more parameters than SQLite accepts in one statement (32,766)."""


async def test_create_many_of_40000_executions_round_trips_exactly(db: Database) -> None:
    async with db.session() as uow:
        workflow = await persist_workflow(uow)
    start = datetime(2025, 3, 1, tzinfo=UTC)
    batch = [
        StepExecution.start(
            workflow.id,
            f"step-{number}",
            {"n": number, "text": "é" if number % 2 else "e"},
            metadata={"worker": number % 7},
            now=start + timedelta(microseconds=number),
        )
        for number in range(ROWS)
    ]
    async with db.session() as uow:
        assert await uow.step_executions.create_many(batch) == batch
    async with db.session(read_only=True) as uow:
        stats = await uow.step_executions.get_stats(workflow.id)
        history = await uow.step_executions.get_for_workflow(workflow.id)
    assert stats.total_executions == ROWS
    assert history == batch
