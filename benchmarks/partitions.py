"""Partitioning prototype (PostgreSQL): purge by DELETE vs by dropping a partition, at 1M rows.

On a scratch database migrated to the package's schema: ``--rows`` step
executions (default 1,000,000) of finished workflows, spread evenly over
``--days`` days. The prototype migration copies them into
``step_executions_by_day``, a table partitioned by range of ``started_at``
with one partition a day, whose keys carry the partition key (primary key
``(id, started_at)``, unique ``(workflow_id, step_id, attempt, started_at)``).
Then the oldest day is purged from each: ``DELETE ... WHERE started_at <
cutoff`` on the plain table, ``DETACH PARTITION`` and ``DROP TABLE`` on the
partitioned one; time and WAL written for each. Not in the default nox run.

Example::

    python -m benchmarks.partitions --rows 1000000 --days 10 --json partitions.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from benchmarks.scratch import DEFAULT_POSTGRES_URL, scratch_database
from ecl_persistence import Database

__all__ = ["main"]

_SEED_WORKFLOWS = """
INSERT INTO workflows (id, definition_id, state, input, metadata, created_at, updated_at,
                       completed_at, version, claim_count, priority)
SELECT gen_random_uuid(), 'bench', 'completed', '{}'::jsonb, '{}'::jsonb,
       $1::timestamptz + (n * $2::float8 / $3) * interval '1 day',
       $1::timestamptz + (n * $2::float8 / $3) * interval '1 day',
       $1::timestamptz + (n * $2::float8 / $3) * interval '1 day', 2, 1, 0
FROM generate_series(0, $3 - 1) AS n
"""
_SEED_STEPS = """
INSERT INTO step_executions (id, workflow_id, step_id, attempt, state, input, output,
                             started_at, completed_at, duration_ms, metadata)
SELECT gen_random_uuid(), w.id, 'step-' || s, 1, 'succeeded', '{"q": "tides"}'::jsonb,
       '{"pages": 3}'::jsonb, w.created_at + s * interval '1 second',
       w.created_at + s * interval '1 second', 1000, '{}'::jsonb
FROM workflows AS w CROSS JOIN generate_series(1, $1) AS s
"""
_PARTITIONED = """
CREATE TABLE step_executions_by_day (
    LIKE step_executions INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    PRIMARY KEY (id, started_at),
    UNIQUE (workflow_id, step_id, attempt, started_at),
    FOREIGN KEY (workflow_id) REFERENCES workflows (id) ON DELETE CASCADE
) PARTITION BY RANGE (started_at)
"""


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _timed(connection: asyncpg.Connection, *statements: str) -> tuple[float, int]:
    """Seconds and WAL bytes to run ``statements`` in one transaction."""
    before = await connection.fetchval("SELECT pg_current_wal_lsn()")
    started = time.perf_counter()
    async with connection.transaction():
        for statement in statements:
            await connection.execute(statement)
    seconds = time.perf_counter() - started
    wal = await connection.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)", before)
    return seconds, int(wal)


async def _main(args: argparse.Namespace) -> dict[str, object]:
    steps_per_workflow = 100
    workflows = args.rows // steps_per_workflow
    async with scratch_database("postgresql", args.url) as url:
        async with Database.from_url(url) as db:
            await db.migrate()
        connection = await asyncpg.connect(_plain(url), timeout=30, command_timeout=3600)
        try:
            start = await connection.fetchval(
                "SELECT date_trunc('day', now()) - interval '30 days'"
            )
            await connection.execute(_SEED_WORKFLOWS, start, float(args.days), workflows)
            await connection.execute(_SEED_STEPS, steps_per_workflow)
            await connection.execute("VACUUM ANALYZE step_executions")
            rows = await connection.fetchval("SELECT count(*) FROM step_executions")
            days = [
                await connection.fetchval(
                    "SELECT $1::timestamptz + $2 * interval '1 day'", start, d
                )
                for d in range(args.days + 2)
            ]
            partitions = [_PARTITIONED] + [
                f"CREATE TABLE step_executions_day_{d} PARTITION OF step_executions_by_day "
                f"FOR VALUES FROM ('{days[d].isoformat()}') TO ('{days[d + 1].isoformat()}')"
                # One more day: the last workflows' steps start after the last midnight.
                for d in range(args.days + 1)
            ]
            migrate_seconds, migrate_wal = await _timed(
                connection,
                *partitions,
                "INSERT INTO step_executions_by_day SELECT * FROM step_executions",
                "CREATE INDEX ON step_executions_by_day (workflow_id, started_at)",
            )
            await connection.execute("VACUUM ANALYZE step_executions_by_day")
            oldest = await connection.fetchval(
                "SELECT count(*) FROM step_executions WHERE started_at < $1", days[1]
            )
            delete_seconds, delete_wal = await _timed(
                connection,
                f"DELETE FROM step_executions WHERE started_at < '{days[1].isoformat()}'",  # noqa: S608
            )
            drop_seconds, drop_wal = await _timed(
                connection,
                "ALTER TABLE step_executions_by_day DETACH PARTITION step_executions_day_0",
                "DROP TABLE step_executions_day_0",
            )
        finally:
            await connection.close()
    return {
        "rows": int(rows),
        "days": args.days,
        "purged_rows": int(oldest),
        "migration_copy": {"seconds": migrate_seconds, "wal_bytes": migrate_wal},
        "delete": {"seconds": delete_seconds, "wal_bytes": delete_wal},
        "partition_drop": {"seconds": drop_seconds, "wal_bytes": drop_wal},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the prototype and print its table (and write JSON with ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.partitions", description=__doc__)
    parser.add_argument("--url", default=DEFAULT_POSTGRES_URL, help="the server's admin URL")
    parser.add_argument("--rows", type=int, default=1_000_000, help="step executions")
    parser.add_argument("--days", type=int, default=10, help="days (partitions) they span")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    figures = asyncio.run(_main(args))
    print(f"{figures['rows']:,} step executions over {figures['days']} days; "
          f"the oldest day holds {figures['purged_rows']:,}")  # fmt: skip
    print("| purge of the oldest day | seconds | WAL (MB) |")
    print("|---|---:|---:|")
    for name in ("delete", "partition_drop", "migration_copy"):
        row = figures[name]
        assert isinstance(row, dict)
        print(f"| {name} | {row['seconds']:.3f} | {row['wal_bytes'] / 1e6:.1f} |")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
