"""What a run takes from its worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from ecl_persistence.database import Database
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
