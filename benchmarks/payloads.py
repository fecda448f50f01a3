"""Workload (i): a chat agent's payloads, with and without the payload store.

Each workflow is a chat agent of 10 steps; every step's input is the whole
conversation so far (a 50 KB system prompt and 2 KB per turn) and its
output the next 2 KB turn, as an agent sends its history to every LLM
call. Both modes run side by side in one process, on a scratch database
each, in alternating rounds: ``payload_inline_bytes=8192`` (the default:
the store) and ``None`` (every payload inline). Reported per backend and
mode: bytes on disk (SQLite: the file after ``VACUUM``; PostgreSQL:
``pg_total_relation_size`` of every table of the package, ``payloads``
included, after ``VACUUM``), steps written per second (start and finish
of each attempt, one unit of work each, as a worker does) and workflows
read back per second (``load()``: the workflow with every attempt).

Examples::

    python -m benchmarks.payloads --backend both
    python -m benchmarks.payloads --backend sqlite --workflows 40 --rounds 3 --json i.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from benchmarks.scratch import DEFAULT_POSTGRES_URL, scratch_database
from ecl_persistence import Database, StepExecutionState, Workflow
from ecl_persistence.domain import JsonValue

__all__ = ["main"]

POSTGRES_URL_VARIABLE = "ECL_TEST_POSTGRES_URL"
STEPS = 10
TURN_BYTES = 2 * 1024
SYSTEM_BYTES = 50 * 1024
TABLES = ("workflows", "step_executions", "workflow_transitions", "artifacts", "payloads")
MODES: dict[str, int | None] = {"store": 8192, "inline": None}
"""The two modes: the payload store at its default limit, and every payload inline."""


def _text(rng: random.Random, words: list[str], size: int) -> str:
    """Prose-like text of about ``size`` bytes: words of a fixed vocabulary, at random."""
    out: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(words)
        out.append(word)
        length += len(word) + 1
    return " ".join(out)


def _vocabulary(rng: random.Random) -> list[str]:
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    weights = [12, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    return ["".join(rng.choices(letters, weights, k=rng.randint(2, 9))) for _ in range(3000)]


class Conversations:
    """The system prompt (the same for every workflow) and each workflow's turns."""

    def __init__(self, seed: int = 16) -> None:
        self._rng = random.Random(seed)
        self._words = _vocabulary(self._rng)
        self.system = _text(self._rng, self._words, SYSTEM_BYTES)

    def turn(self, role: str) -> dict[str, JsonValue]:
        """One message of about 2 KB."""
        return {"role": role, "content": _text(self._rng, self._words, TURN_BYTES - 40)}


async def _write(db: Database, chats: Conversations, workflows: int) -> tuple[list[Any], float]:
    """Run ``workflows`` chat agents of :data:`STEPS` steps; their ids and the seconds taken."""
    ids = []
    seconds = 0.0
    for _ in range(workflows):
        messages: list[JsonValue] = [chats.turn("user")]
        workflow = Workflow.new("chat", {"system": chats.system, "first": messages[0]})
        replies = [chats.turn("assistant") for _ in range(STEPS)]
        started = time.perf_counter()
        async with db.session() as uow:
            await uow.workflows.create(workflow)
        for step in range(STEPS):
            conversation: JsonValue = {"system": chats.system, "messages": list(messages)}
            async with db.session() as uow:
                attempt = await uow.step_executions.start(workflow.id, f"turn-{step}", conversation)
            async with db.session() as uow:
                await uow.step_executions.update_completion(
                    attempt.id, StepExecutionState.SUCCEEDED, output=replies[step]
                )
            messages.append(replies[step])
            messages.append({"role": "user", "content": "more"})
        seconds += time.perf_counter() - started
        ids.append(workflow.id)
    return ids, seconds


async def _read(db: Database, ids: list[Any]) -> float:
    started = time.perf_counter()
    async with db.session(read_only=True) as uow:
        for workflow_id in ids:
            aggregate = await uow.workflows.load(workflow_id)
            assert aggregate is not None
            assert len(aggregate.step_executions) == STEPS
    return time.perf_counter() - started


def _vacuumed_size(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("VACUUM")
    finally:
        connection.close()
    return path.stat().st_size


async def _bytes_on_disk(db: Database, url: str) -> int:
    if db.dialect == "sqlite":
        await db.dispose()
        return await asyncio.to_thread(_vacuumed_size, Path(url.removeprefix("sqlite:///")))
    async with db.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql("VACUUM")
        total = 0
        for table in TABLES:
            size = await autocommit.execute(text(f"SELECT pg_total_relation_size('{table}')"))
            total += int(size.scalar_one())
    return total


async def _one(dialect: str, admin_url: str, mode: str, workflows: int) -> dict[str, float]:
    chats = Conversations()
    async with scratch_database(dialect, admin_url) as url:
        db = Database.from_url(url, payload_inline_bytes=MODES[mode])
        try:
            await db.migrate()
            ids, write_seconds = await _write(db, chats, workflows)
            read_seconds = await _read(db, ids)
            size = await _bytes_on_disk(db, url)
        finally:
            await db.dispose()
    return {
        "bytes": float(size),
        "steps_per_s": workflows * STEPS / write_seconds,
        "workflows_read_per_s": workflows / read_seconds,
    }


async def run(dialects: list[str], admin_url: str, workflows: int, rounds: int) -> dict[str, Any]:
    """Every round runs both modes on each backend; the medians of the rounds, and ratios."""
    results: dict[str, Any] = {}
    for dialect in dialects:
        samples: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for round_ in range(rounds):
            order = list(MODES) if round_ % 2 == 0 else list(reversed(MODES))
            for mode in order:
                samples[mode].append(await _one(dialect, admin_url, mode, workflows))
        medians = {
            mode: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
            for mode, runs in samples.items()
        }
        store, inline = medians["store"], medians["inline"]
        results[dialect] = {
            **medians,
            "storage_ratio": inline["bytes"] / store["bytes"],
            "write_rate_ratio": store["steps_per_s"] / inline["steps_per_s"],
            "read_rate_ratio": store["workflows_read_per_s"] / inline["workflows_read_per_s"],
        }
    return results


def _print(results: dict[str, Any], workflows: int) -> None:
    print(f"workload (i): {workflows} chat workflows of {STEPS} steps, medians")
    print("| backend | mode | bytes on disk | steps written/s | workflows read/s |")
    print("|---|---|---:|---:|---:|")
    for dialect, result in results.items():
        for mode in MODES:
            m = result[mode]
            print(
                f"| {dialect} | {mode} | {m['bytes'] / 1e6:,.2f} MB | {m['steps_per_s']:,.0f} "
                f"| {m['workflows_read_per_s']:,.0f} |"
            )
    print("\n| backend | storage, inline / store | write rate, store / inline | read rate |")
    print("|---|---:|---:|---:|")
    for dialect, result in results.items():
        print(
            f"| {dialect} | {result['storage_ratio']:.1f}x | {result['write_rate_ratio']:.2f} "
            f"| {result['read_rate_ratio']:.2f} |"
        )


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run, print the tables (and write JSON when asked)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.payloads", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--workflows", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--postgres-url", default=os.environ.get(POSTGRES_URL_VARIABLE) or DEFAULT_POSTGRES_URL
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    dialects = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = asyncio.run(run(dialects, args.postgres_url, args.workflows, args.rounds))
    _print(results, args.workflows)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
