"""What a claim costs with and without a concurrency key, side by side in one run.

``python -m benchmarks.claim_keys [--backend sqlite|postgresql|both] [--claims N]
[--rounds R] [--admin-url URL]``

For each backend, in a scratch database: N workflows without a key, N with
a key whose limit is never reached (so every claim admits), and N more of a
key at its limit behind them (so every pick skips past them). Each claim
takes one workflow and completes it, in its own unit of work, as a worker
would. Printed per kind: statements sent per claim (the unit's BEGIN and
COMMIT not counted), and the median of R rounds of the time per claim.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence

from sqlalchemy import event

from benchmarks.scratch import DEFAULT_POSTGRES_URL, scratch_database
from ecl_persistence import Database, Workflow, WorkflowState

__all__ = ["main"]

KINDS = ("no key", "key with room", "key at its limit queued ahead")


async def _round(url: str, kind: str, claims: int) -> tuple[float, float]:
    """Seconds and statements per claim of ``claims`` claims of ``kind``."""
    async with Database.from_url(url) as db:
        await db.migrate()
        async with db.session() as uow:
            await uow.workflows.set_concurrency_limit("room", claims * 2)
            await uow.workflows.set_concurrency_limit("full", 0)
            for n in range(claims):
                key = None if kind == "no key" else "room"
                await uow.workflows.create(Workflow.new("bench", {"n": n}, concurrency_key=key))
                if kind == KINDS[2]:
                    # Ahead in the queue (higher priority), never claimable.
                    blocked = Workflow.new("bench", {"n": n}, concurrency_key="full", priority=1)
                    await uow.workflows.create(blocked)
        sent: list[str] = []

        def count(conn: object, cursor: object, statement: str, *rest: object) -> None:
            if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT")):
                sent.append(statement)

        event.listen(db.engine.sync_engine, "before_cursor_execute", count)
        started = time.perf_counter()
        claim_statements = 0
        for _ in range(claims):
            before = len(sent)
            async with db.session() as uow:
                (workflow,) = await uow.workflows.claim("bench-worker")
            claim_statements += len(sent) - before
            async with db.session() as uow:
                await uow.workflows.update_state(
                    workflow.id, WorkflowState.COMPLETED, lease=workflow.lease
                )
        elapsed = time.perf_counter() - started
        event.remove(db.engine.sync_engine, "before_cursor_execute", count)
        async with db.session() as uow:
            for workflow in await uow.workflows.list_by_definition("bench", limit=1000):
                await uow.workflows.delete(workflow.id)
        return elapsed / claims, claim_statements / claims


async def _backend(dialect: str, admin_url: str, claims: int, rounds: int) -> None:
    print(f"\n{dialect}: {claims} claims per round, median of {rounds} rounds")
    print(f"{'kind':<32}{'statements/claim':>18}{'ms/claim+complete':>20}{'ratio':>8}")
    results: dict[str, tuple[float, float]] = {}
    async with scratch_database(dialect, admin_url) as url:
        times: dict[str, list[float]] = {kind: [] for kind in KINDS}
        statements: dict[str, float] = {}
        for _ in range(rounds):
            for kind in KINDS:  # interleaved: the kinds share the machine's noise
                seconds, per_claim = await _round(url, kind, claims)
                times[kind].append(seconds)
                statements[kind] = per_claim
        for kind in KINDS:
            results[kind] = (statistics.median(times[kind]), statements[kind])
    base = results[KINDS[0]][0]
    for kind, (seconds, per_claim) in results.items():
        print(f"{kind:<32}{per_claim:>18.1f}{seconds * 1000:>20.2f}{seconds / base:>8.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; print one table per backend."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.claim_keys")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--claims", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--admin-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args(argv)
    dialects = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for dialect in dialects:
        asyncio.run(_backend(dialect, args.admin_url, args.claims, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
