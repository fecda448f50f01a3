"""Workload (g): a durable 3-step workflow run to completion, by each contender.

A contender runs one workflow per call of :meth:`FlowContender.run_flow`:
start it (input ``{"n": n}``), run three steps whose outputs are recorded
before the next one starts, and end it with an output. What is stored must
let another process resume the workflow after a crash at any point.
"""

from __future__ import annotations

import abc

import attrs

from ecl_persistence.domain import JsonValue

__all__ = ["STEPS", "FlowContender", "FlowTarget", "step_output"]

STEPS = 3
"""Steps per workflow."""


@attrs.frozen
class FlowTarget:
    """Where a contender stores its workflows."""

    url: str
    """ecl's migrated scratch database (plain URL)."""
    dialect: str
    pool_size: int
    """Connections per contender: ecl's default pool size, or the concurrency if larger."""
    peer_url: str
    """A second, empty scratch database on the same server (a SQLite file in a temporary
    directory), for a peer that keeps its own schema (DBOS's system database)."""


async def step_output(n: int, k: int) -> JsonValue:
    """What step ``k`` of workflow ``n`` returns: the same for every contender."""
    return {"n": n, "step": k}


class FlowContender(abc.ABC):
    """A durable-workflow layer under test."""

    name: str = ""
    """The name in the report."""
    definition_id: str = ""
    """The definition id its workflows are stored under (ecl's schema)."""

    @abc.abstractmethod
    async def open(self, target: FlowTarget) -> None:
        """Connect to the scratch database(s)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every connection."""

    @abc.abstractmethod
    async def run_flow(self, n: int) -> None:
        """Start workflow ``n`` and run it to completion: three steps, then its output."""

    async def completed(self) -> int:
        """How many workflows it completed with every step succeeded (checked after a run)."""
        raise NotImplementedError
