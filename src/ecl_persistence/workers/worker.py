"""A worker: claims workflows from the shared queue, one run per workflow, and stops cleanly."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from collections import deque
from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING

from ecl_persistence.domain import (
    MAX_ID_LENGTH,
    PriceBook,
    ResumePoint,
    Workflow,
    WorkflowId,
    check_cost,
    check_text,
)
from ecl_persistence.errors import DbError, ValidationError
from ecl_persistence.workers.run import RunContext, WorkflowRun
from ecl_persistence.workers.wakeup import Listener, Wakeup

if TYPE_CHECKING:
    from decimal import Decimal

    from ecl_persistence.database import Database
    from ecl_persistence.unit_of_work import UnitOfWork

__all__ = ["DEFAULT_GRACE_SECONDS", "MAX_CONCURRENCY", "Worker"]

DEFAULT_GRACE_SECONDS = 10.0
"""How long :meth:`Worker.stop` lets running blocks finish before it releases their workflows."""
MAX_CONCURRENCY = 1000
"""The most runs one worker holds at a time."""
_MAX_LEASE_SECONDS = 24 * 60 * 60.0
_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_log = logging.getLogger("ecl_persistence.workers")


class Worker:
    """Claims workflows and hands out one :class:`WorkflowRun` per workflow claimed.

    ::

        worker = Worker(db, "worker-1", definitions=["research"])
        worker.install_signal_handlers()  # SIGTERM, SIGINT: stop cleanly
        async for run in worker.runs():
            async with run:
                hits = await run.step("search", {"q": "tides"}, search)
                await run.complete(output=hits)

    ``worker_id`` names the worker in leases and in the audit trail (unique
    among the workers sharing a database, as a host name and process id
    would be). ``definitions`` restricts claims to those definition ids.
    Each claim holds its workflow for ``lease_seconds``, renewed every third
    of that by the run's heartbeat. At most ``concurrency`` runs are held at
    a time; with nothing to claim the worker asks again every
    ``poll_seconds``, or as soon as one of its own runs ends. On PostgreSQL
    it also listens for notifications while it hands out runs (one
    connection of its own, to ``listen_url`` if configured): a workflow
    created or released is claimed at once, and polling only finds expired
    leases and ``run_after`` that came due (see ``docs/scaling.md``);
    ``listen=False`` polls only. A
    ``price_book`` fills in the cost of attempts that record usage and model
    but no cost; ``max_cost_per_workflow`` (a ``Decimal``) is the budget of
    each workflow's steps (see :meth:`WorkflowRun.step`). Invalid values
    raise ValidationError.
    """

    __slots__ = (
        "_active",
        "_concurrency",
        "_db",
        "_definitions",
        "_iterating",
        "_lease_seconds",
        "_listen",
        "_listener",
        "_max_cost",
        "_poll_seconds",
        "_price_book",
        "_stopper",
        "_stopping",
        "_wakeup",
        "_worker_id",
    )

    def __init__(
        self,
        db: Database,
        worker_id: str,
        *,
        definitions: Iterable[str] | None = None,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        concurrency: int = 1,
        listen: bool = True,
        price_book: PriceBook | None = None,
        max_cost_per_workflow: Decimal | None = None,
    ) -> None:
        self._db = db
        if price_book is not None and not isinstance(price_book, PriceBook):
            raise ValidationError("price_book must be a PriceBook")
        self._price_book = price_book
        self._max_cost = check_cost(max_cost_per_workflow, "max_cost_per_workflow", maximum=None)
        self._worker_id = check_text(worker_id, field="worker_id", max_length=MAX_ID_LENGTH)
        self._definitions = None if definitions is None else _definition_ids(definitions)
        self._lease_seconds = _seconds(lease_seconds, "lease_seconds", _MAX_LEASE_SECONDS)
        self._poll_seconds = _seconds(poll_seconds, "poll_seconds", _MAX_LEASE_SECONDS)
        if type(concurrency) is not int or not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValidationError(f"concurrency must be an integer from 1 to {MAX_CONCURRENCY}")
        self._concurrency = concurrency
        self._active: set[WorkflowRun] = set()
        self._wakeup = Wakeup()
        if not isinstance(listen, bool):
            raise ValidationError("listen must be a bool")
        self._listen = listen
        self._listener = Listener(db, self._wakeup, self._definitions, self._worker_id)
        self._stopping = False
        self._stopper: asyncio.Task[None] | None = None
        self._iterating = False

    def __repr__(self) -> str:
        return f"<Worker {self._worker_id!r} ({len(self._active)} of {self._concurrency} runs)>"

    @property
    def worker_id(self) -> str:
        """The name this worker claims under."""
        return self._worker_id

    @property
    def listening(self) -> bool:
        """Whether the worker's notification listener has its connection open now."""
        return self._listener.listening

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (or a signal received): no more claims."""
        return self._stopping

    async def runs(self, *, until_idle: bool = False) -> AsyncGenerator[WorkflowRun, None]:
        """Claim workflows and yield one run for each, at most ``concurrency`` held at a time.

        Claims take the highest priority first, then the oldest, never a
        workflow before its ``run_after``. A run holds its slot from its
        claim until it ends; enter every run yielded (``async with run:``),
        in this task or in one of its own (to run several at once). The
        iteration ends once :meth:`stop` is called, after the worker has
        stopped, or with ``until_idle`` as soon as there is nothing to claim
        and no run is held. A database error that may pass (a lost
        connection) is logged and the claim tried again after
        ``poll_seconds``; any other propagates.
        """
        if self._iterating:
            raise ValidationError(f"{self!r} is already handing out runs")
        self._iterating = True
        waiting: deque[WorkflowRun] = deque()
        if self._listen and not until_idle:
            self._listener.start()
        try:
            while not self._stopping:
                free = self._concurrency - len(self._active)
                if free <= 0:
                    await self._wakeup.wait(None)
                    continue
                try:
                    waiting.extend(await self._claim(free))
                except DbError as error:
                    if not error.retryable:
                        raise
                    _log.warning("worker %s could not claim: %s", self, type(error).__name__)
                    await self._wakeup.wait(self._poll_seconds)
                    continue
                if not waiting:
                    if until_idle and not self._active:
                        return
                    await self._wakeup.wait(self._poll_seconds)
                while waiting and not self._stopping:
                    yield waiting.popleft()
        finally:
            self._iterating = False
            await self._listener.stop()
            for run in waiting:
                await run._give_back("the worker stopped before running it")
            if self._stopper is not None and self._stopper is not asyncio.current_task():
                await asyncio.shield(self._stopper)

    async def claim(self, workflow_id: WorkflowId) -> WorkflowRun:
        """Claim this one workflow (see ``claim_by_id`` of the workflow repository); its run.

        For a caller that must work on a given workflow rather than on the
        first in the queue; it holds a slot like any other run. Raises what
        ``claim_by_id`` raises when the workflow is not claimable.
        """
        async with self._db.session() as uow:
            workflow = await uow.workflows.claim_by_id(
                workflow_id, self._worker_id, lease_seconds=self._lease_seconds
            )
            point = await _resume_point(uow, workflow)
        return self._adopt(point)

    async def start(self, workflow: Workflow) -> WorkflowRun:
        """Create ``workflow`` and claim it for this worker, in one transaction; its run.

        For a worker that runs what it creates: one transaction less than
        ``workflows.create`` followed by :meth:`claim`, with the same rows
        written (the workflow, its audit rows for the creation, by this
        worker, and the claim). A workflow with an idempotency key already used is the
        stored one: it is claimed, with its resume point, if it is
        claimable. If the claim fails (a ``run_after`` still to come, a
        finished or leased stored workflow) it raises what ``claim_by_id``
        raises and nothing is written.
        """
        async with self._db.session() as uow:
            stored, new = await uow.workflows.create_or_get(workflow, actor=self._worker_id)
            claimed = await uow.workflows.claim_by_id(
                stored.id, self._worker_id, lease_seconds=self._lease_seconds
            )
            if new:
                point = ResumePoint.of(claimed, {})  # no step ran yet
            else:
                point = await _resume_point(uow, claimed)
        return self._adopt(point)

    async def stop(self, *, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> None:
        """Stop claiming, let running blocks finish for ``grace_seconds``, release the rest.

        Runs claimed but not entered are released at once; blocks still
        running after the grace period are cancelled, and each releases its
        workflow (pending again, for any worker to claim at once). Returns
        when every run of the worker is over.
        """
        grace = _seconds(grace_seconds, "grace_seconds", _MAX_LEASE_SECONDS, zero=True)
        self._stopping = True
        self._wakeup.notify()
        for run in list(self._active):
            if not run.entered:
                await run._give_back("the worker stopped before running it")
        if await self._wait_for_runs(grace):
            return
        for run in list(self._active):
            run._shut_down()
        if not await self._wait_for_runs(self._lease_seconds):
            _log.warning("worker %s stopped with runs that ignore cancellation", self)

    def install_signal_handlers(self, *, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> None:
        """Stop on SIGTERM or SIGINT, as :meth:`stop` does; a second signal stops at once.

        Call it from inside the running event loop (Unix only). The
        iteration of :meth:`runs` ends once the worker has stopped, so a
        program whose main task iterates returns normally (exit code 0).
        Once stopped, the signals get their default handling back.
        """
        _seconds(grace_seconds, "grace_seconds", _MAX_LEASE_SECONDS, zero=True)
        loop = asyncio.get_running_loop()
        for signum in _SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, grace_seconds)

    # --- inside ----------------------------------------------------------------------

    def _on_signal(self, grace_seconds: float) -> None:
        if self._stopper is None:
            _log.info("worker %s stopping", self)
            self._stopper = asyncio.get_running_loop().create_task(
                self._stop_on_signal(grace_seconds), name=f"stop {self._worker_id}"
            )
            return
        for run in list(self._active):
            run._shut_down()

    async def _stop_on_signal(self, grace_seconds: float) -> None:
        try:
            await self.stop(grace_seconds=grace_seconds)
        finally:
            # Stopped: the signals mean again what they meant before.
            loop = asyncio.get_running_loop()
            for signum in _SIGNALS:
                loop.remove_signal_handler(signum)

    async def _claim(self, limit: int) -> list[WorkflowRun]:
        async with self._db.session() as uow:
            claimed = await uow.workflows.claim(
                self._worker_id,
                definition_ids=self._definitions,
                lease_seconds=self._lease_seconds,
                limit=limit,
            )
            points = [await _resume_point(uow, workflow) for workflow in claimed]
        return [self._adopt(point) for point in points]

    def _adopt(self, point: ResumePoint) -> WorkflowRun:
        context = RunContext(
            self._db,
            self._worker_id,
            self._lease_seconds,
            self._run_ended,
            self._price_book,
            self._max_cost,
        )
        run = WorkflowRun(context, point)
        self._active.add(run)
        return run

    def _run_ended(self, run: WorkflowRun) -> None:
        self._active.discard(run)
        self._wakeup.notify()

    async def _wait_for_runs(self, seconds: float) -> bool:
        """Wait until every run is over, at most ``seconds``; whether they all are."""
        runs = list(self._active)
        if not runs:
            return True
        waits = [asyncio.ensure_future(run.wait_ended()) for run in runs]
        _done, pending = await asyncio.wait(waits, timeout=seconds)
        for wait in pending:
            wait.cancel()
        return not self._active


async def _resume_point(uow: UnitOfWork, workflow: Workflow) -> ResumePoint:
    return ResumePoint.of(workflow, await uow.step_executions.latest_attempts(workflow.id))


def _definition_ids(definitions: Iterable[str]) -> tuple[str, ...]:
    if isinstance(definitions, str | bytes) or not isinstance(definitions, Iterable):
        raise ValidationError("definitions must be a collection of definition ids")
    return tuple(
        check_text(value, field="definition_id", max_length=MAX_ID_LENGTH) for value in definitions
    )


def _seconds(value: object, name: str, maximum: float, *, zero: bool = False) -> float:
    """``value`` as seconds above 0 (or from 0) and at most ``maximum``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= maximum
        or (value == 0 and not zero)
    ):
        above = "from 0" if zero else "above 0"
        raise ValidationError(f"{name} must be a number of seconds {above} and at most {maximum:g}")
    return float(value)
