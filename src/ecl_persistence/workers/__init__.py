"""The worker layer: claims, runs that keep and fence their leases, memoized and retried steps.

It sits above the repositories and uses only their public methods
(``docs/workers.md``): :class:`Worker` claims workflows and hands out one
:class:`WorkflowRun` per workflow; a run's :meth:`~WorkflowRun.step` runs a
step once, retried as its :class:`Retry` says.
"""

from ecl_persistence.workers.retry import Retry
from ecl_persistence.workers.run import WorkflowRun
from ecl_persistence.workers.steps import StepFunction
from ecl_persistence.workers.worker import DEFAULT_GRACE_SECONDS, Worker

__all__ = ["DEFAULT_GRACE_SECONDS", "Retry", "StepFunction", "Worker", "WorkflowRun"]
