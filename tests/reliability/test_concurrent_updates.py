"""Concurrent units of work changing one workflow: no lost update, one winner per move."""

from __future__ import annotations

import asyncio

from tests.factories import persist_workflow

from ecl_persistence import Database, InvalidStateTransitionError, Workflow, WorkflowState

RACERS = 6


async def _racing(db: Database, workflow: Workflow, move: str) -> list[object]:
    async def one(n: int) -> object:
        try:
            async with db.session() as uow:
                if move == "state":
                    result: object = await uow.workflows.update_state(
                        workflow.id, WorkflowState.COMPLETED
                    )
                else:
                    result = await uow.workflows.update_output(workflow.id, {"by": n})
                # Hold the row (PostgreSQL) or the database (SQLite) while the others wait.
                await asyncio.sleep(0.01)
                return result
        except InvalidStateTransitionError as error:
            return error

    return list(await asyncio.gather(*(one(n) for n in range(RACERS))))


async def test_racing_moves_to_a_final_state_have_exactly_one_winner(database_url: str) -> None:
    async with Database.from_url(database_url, max_connections=RACERS, timeout_secs=30) as db:
        async with db.session() as uow:
            workflow = await persist_workflow(uow)
        outcomes = await _racing(db, workflow, "state")
        async with db.session(read_only=True) as uow:
            stored = await uow.workflows.get(workflow.id)
    winners = [o for o in outcomes if isinstance(o, Workflow)]
    losers = [o for o in outcomes if isinstance(o, InvalidStateTransitionError)]
    assert len(winners) == 1
    assert len(losers) == RACERS - 1
    assert all(loser.from_state == WorkflowState.COMPLETED for loser in losers)
    assert stored is not None
    assert (stored.state, stored.version) == (WorkflowState.COMPLETED, 2)


async def test_racing_output_updates_lose_no_version_increment(database_url: str) -> None:
    async with Database.from_url(database_url, max_connections=RACERS, timeout_secs=30) as db:
        async with db.session() as uow:
            workflow = await persist_workflow(uow)
        outcomes = await _racing(db, workflow, "output")
        async with db.session(read_only=True) as uow:
            stored = await uow.workflows.get(workflow.id)
    assert all(isinstance(outcome, Workflow) for outcome in outcomes)
    versions = sorted(outcome.version for outcome in outcomes if isinstance(outcome, Workflow))
    assert versions == list(range(2, RACERS + 2))
    assert stored is not None
    assert stored.version == RACERS + 1
    # The last committed write is the one stored.
    last = next(o for o in outcomes if isinstance(o, Workflow) and o.version == RACERS + 1)
    assert stored.output == last.output
