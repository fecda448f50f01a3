"""``python -m benchmarks.smoke``: every contender of every workload once, at tiny scale.

Run by the default ``nox`` run (session ``bench-smoke``) so that the
benchmarks cannot rot unnoticed: workloads (a)-(f) through ``python -m
benchmarks`` on a small seed, one round, with every contender checked to
return what the others return; workload (g) with each contender verified
and timed once at concurrency 1 and 16; workload (h) with each worker
contender's processes over a small queue; the memory measurements on a
small queue. Any contender that breaks raises, and the session fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence

from benchmarks import cli, durable, memory, workers
from benchmarks.scratch import DEFAULT_POSTGRES_URL

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run every workload at tiny scale on both backends; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.smoke", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("ECL_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    common = ["--backend", args.backend, "--postgres-url", args.postgres_url]
    tiny = ["--scale", "6000", "--rounds", "1", "--seconds", "0.001", "--create-many-size", "200"]
    cli.main([*common, *tiny])
    durable.main([*common, "--smoke"])
    workers.main([*common, "--workflows", "20", "--rounds", "1", "--processes", "1", "2"])
    dialects = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for dialect in dialects:
        figures = asyncio.run(memory.measure(dialect, args.postgres_url, 20, 1000, 4))
        expected = {"rss 2", "rss 20", "before", "peak"}
        if set(figures) != expected:
            raise AssertionError(f"memory on {dialect}: {sorted(figures)}, not {sorted(expected)}")
    seconds = time.perf_counter() - started
    print(f"bench-smoke: every contender of every workload ran ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
