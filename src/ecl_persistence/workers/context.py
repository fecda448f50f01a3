"""What a run takes from its worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from decimal import Decimal

    from ecl_persistence.database import Database
    from ecl_persistence.domain import PriceBook
    from ecl_persistence.workers.run import WorkflowRun

__all__ = ["RunContext"]


@attrs.frozen
class RunContext:
    """What a run takes from its worker."""

    db: Database
    worker_id: str
    lease_seconds: float
    ended: Callable[[WorkflowRun], None]
    """Called once when the run is over, whatever the way."""
    price_book: PriceBook | None = None
    """The worker's prices, for the cost of attempts recorded without one."""
    max_cost_per_workflow: Decimal | None = None
    """The budget of each workflow the worker runs (None: no budget)."""
