"""A claimed workflow, worked on under its lease: ``async with run:``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

from ecl_persistence.domain import (
    MISSING,
    Artifact,
    JsonValue,
    Lease,
    Missing,
    ResumePoint,
    StepId,
    Workflow,
    WorkflowState,
    utc_now,
)
from ecl_persistence.errors import DbError, LeaseLostError, ValidationError
from ecl_persistence.recorder import describe_exception
from ecl_persistence.workers.context import RunContext
from ecl_persistence.workers.endings import RetryLater, retryable, why_released
from ecl_persistence.workers.heartbeat import cancel_on_request, keep_lease
from ecl_persistence.workers.retry import Retry
from ecl_persistence.workers.steps import DEFAULT_RETRY, StepFunction, Steps

if TYPE_CHECKING:
    from decimal import Decimal

    from ecl_persistence.unit_of_work import UnitOfWork

__all__ = ["RunContext", "WorkflowRun"]

_log = logging.getLogger("ecl_persistence.workers")


class WorkflowRun:
    """One claimed workflow, worked on under its lease; use it with ``async with run:``.

    From its claim until it ends the run keeps the lease: a heartbeat every
    third of ``lease_seconds``. Every write through the run (its steps, their
    artifacts, the workflow's output and state) is fenced with :attr:`lease`.
    If a heartbeat or a write finds the lease lost (another worker claimed
    the workflow after it expired), the run is over: the task running its
    block is cancelled, and every later write raises LeaseLostError.

    The block ends the run: a clean exit completes the workflow (unless an
    explicit :meth:`complete`, :meth:`fail` or :meth:`release` ended it
    first); an exception fails it with
    :func:`~ecl_persistence.recorder.describe_exception` (a retryable
    database error releases it instead, for a later claim); a cancellation,
    or a worker's shutdown, releases it; KeyboardInterrupt and SystemExit
    write nothing and leave the lease to expire, as a crash would. An
    exception that failed or released the workflow is logged by its type and
    not propagated, so one workflow's failure does not end the worker; so is
    LeaseLostError. A cancellation from outside propagates, and so does what
    the block raises after it ended the run itself. A heartbeat that finds a
    cancel asked of the workflow cancels the block too: the attempt in flight
    is recorded as failed (``cancelled``) and the workflow is cancelled. Get runs from
    :meth:`Worker.runs <ecl_persistence.Worker.runs>`.
    """

    __slots__ = (
        "_cancelled",
        "_context",
        "_done",
        "_ended",
        "_heartbeat",
        "_in_block",
        "_point",
        "_shutdown",
        "_steps",
        "_task",
        "_workflow",
    )

    def __init__(self, context: RunContext, point: ResumePoint) -> None:
        workflow = point.workflow
        if workflow.lease is None:
            raise ValidationError(f"workflow {workflow.id} is not leased: claim it first")
        self._context = context
        self._point = point
        self._workflow = workflow
        self._steps = Steps(context.db, point, self, context)
        self._ended: str | None = None
        self._task: asyncio.Task[Any] | None = None
        self._in_block = False
        self._cancelled = False
        self._shutdown = False
        self._done = asyncio.Event()
        heartbeat = keep_lease(
            context.db, self.lease, context.lease_seconds, self._beaten, self._lost_lease
        )
        self._heartbeat = asyncio.get_running_loop().create_task(
            heartbeat, name=f"heartbeat of workflow {workflow.id}"
        )

    def __repr__(self) -> str:
        return f"<WorkflowRun of workflow {self._workflow.id} ({self._ended or 'live'})>"

    @property
    def workflow(self) -> Workflow:
        """The claimed workflow, as of the run's last write or heartbeat."""
        return self._workflow

    @property
    def lease(self) -> Lease:
        """The run's fencing token: pass it as ``lease=`` to fence writes of your own."""
        lease = self._point.workflow.lease
        assert lease is not None  # checked when the run was made
        return lease

    @property
    def lease_seconds(self) -> float:
        """How long each heartbeat extends the lease."""
        return self._context.lease_seconds

    @property
    def resume_point(self) -> ResumePoint:
        """What already happened to the workflow when it was claimed (see :class:`ResumePoint`)."""
        return self._point

    @property
    def lost(self) -> bool:
        """Whether the run lost its lease to another worker (or the workflow went away)."""
        return self._ended == "lost"

    @property
    def ended(self) -> bool:
        """Whether the run is over: completed, failed, released or lost."""
        return self._ended is not None

    async def __aenter__(self) -> WorkflowRun:
        if self._task is not None:
            raise ValidationError(f"{self!r} is entered once")
        self._task = asyncio.current_task()
        self._in_block = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._in_block = False
        try:
            return await self._exit(exc)
        finally:
            await self._end(self._ended or "abandoned")

    async def step(
        self,
        step_id: StepId | str,
        input: JsonValue,
        fn: StepFunction,
        *,
        retry: Retry | None = DEFAULT_RETRY,
        max_cost: Decimal | None = None,
    ) -> JsonValue:
        """Run a step once: return its output, stored if it already succeeded.

        If the step has a succeeded attempt (from an earlier run of this
        workflow, on any worker), its stored output is returned and ``fn`` is
        not called. Otherwise ``fn(recording)`` runs as the step's next
        attempt (numbered after the stored ones), recorded as running before
        it starts and as succeeded, with what it returns as the output, or
        failed, with its duration. On an exception it is tried again as
        ``retry`` says (``None``: once), waiting between attempts while the
        heartbeat keeps the lease; a wait longer than ``lease_seconds``
        releases the workflow until then (``run_after``) and ends the run
        instead. The last exception propagates; AttemptsExhaustedError if the
        stored history already used every attempt. LeaseLostError if the
        run is over. With ``max_cost`` (else the worker's ``max_cost_per_workflow``) no attempt
        starts once the workflow's cost reached it: BudgetExceededError (the failure's reason).
        """
        return await self._steps.run(step_id, input, fn, retry, max_cost)

    async def add_artifact(self, artifact: Artifact) -> Artifact:
        """Record an artifact of the workflow under the run's lease."""
        self.check_live()
        async with self._writing() as uow:
            return await uow.artifacts.create(artifact, lease=self.lease)

    async def complete(self, output: JsonValue | Missing = MISSING) -> Workflow:
        """Complete the workflow, with ``output`` if given; the run is over."""
        self.check_live()
        async with self._writing() as uow:
            # The output and the end in one fenced UPDATE (and its audit row).
            done = await uow.workflows.update_state(
                self._workflow.id,
                WorkflowState.COMPLETED,
                actor=self._worker,
                lease=self.lease,
                output=output,
            )
        return await self._finished(done, "completed")

    async def fail(self, error: BaseException | str) -> Workflow:
        """Fail the workflow with ``error`` (an exception is described by its type and message)."""
        self.check_live()
        text = error if isinstance(error, str) else describe_exception(error)
        async with self._writing() as uow:
            failed = await uow.workflows.update_state(
                self._workflow.id, WorkflowState.FAILED, text, actor=self._worker, lease=self.lease
            )
        return await self._finished(failed, "failed")

    async def release(
        self, *, run_after: datetime | None = None, reason: str | None = None
    ) -> Workflow:
        """Give the workflow back to the queue (not before ``run_after``); the run is over."""
        self.check_live()
        async with self._writing() as uow:
            released = await uow.workflows.release(
                self._workflow.id,
                self._worker,
                lease=self.lease,
                run_after=run_after,
                reason=reason,
            )
        return await self._finished(released, "released")

    def check_live(self) -> None:
        """Raise LeaseLostError if the run is over: it holds no lease to write with."""
        if self._ended is not None:
            how = "lost its lease" if self._ended == "lost" else f"is over ({self._ended})"
            raise LeaseLostError(
                f"the run of workflow {self._workflow.id} {how}: it writes nothing more",
                workflow_id=self._workflow.id,
            )

    def _lost_lease(self, error: LeaseLostError) -> None:
        """A write found the lease lost: the run is over and its block is cancelled."""
        if self._ended is None:
            self._ended = "lost"
            _log.warning("worker %s lost workflow %s", self._worker, self._workflow.id)
            self._cancel_block()

    async def _retry_later(self, step_id: StepId, delay_seconds: float) -> NoReturn:
        """Release the workflow until ``delay_seconds`` from now, then leave the block."""
        due = utc_now() + timedelta(seconds=delay_seconds)
        await self.release(
            run_after=due, reason=f"step {step_id} retries after {delay_seconds:g} s"
        )
        raise RetryLater

    # --- the worker's side (and the steps') -----------------------------------------

    @property
    def entered(self) -> bool:
        """Whether the block was entered (a run that never was is released on shutdown)."""
        return self._task is not None

    async def wait_ended(self) -> None:
        """Wait until the run is over and its heartbeat stopped."""
        await self._done.wait()

    def _shut_down(self) -> None:
        """The worker is going away: cancel the block, which then releases the workflow."""
        self._shutdown = True
        self._cancel_block()

    async def _give_back(self, reason: str) -> None:
        """Release a run that was never entered (or whose block is gone); log a failure."""
        if self._ended is None:
            with contextlib.suppress(DbError):
                await asyncio.shield(self.release(reason=reason))
        await self._end(self._ended or "abandoned")

    # --- inside ----------------------------------------------------------------------

    @property
    def _worker(self) -> str:
        return self._context.worker_id

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[UnitOfWork]:
        """A unit of work whose LeaseLostError ends the run."""
        try:
            async with self._context.db.session() as uow:
                yield uow
        except LeaseLostError as error:
            self._lost_lease(error)
            raise

    async def _finished(self, workflow: Workflow, how: str) -> Workflow:
        self._workflow = workflow
        if self._ended is None:
            self._ended = how
        await self._stop_heartbeat()
        return workflow

    def _cancel_block(self) -> None:
        task = self._task
        if self._in_block and task is not None and not task.done() and not self._cancelled:
            self._cancelled = True
            task.cancel(msg=f"the run of workflow {self._workflow.id} is over")

    async def _exit(self, exc: BaseException | None) -> bool:
        """End the run after its block; whether to suppress what the block raised."""
        ours = self._uncancel_ours(exc)
        if isinstance(exc, RetryLater) or (self._ended is not None and ours):
            return True
        if self._ended is not None:
            # Over before the block was: a lost lease (or a write that found
            # the run over) is no failure of the worker; the workflow is not
            # this run's to record anything on. What else the block raised
            # after ending the run itself is the caller's.
            if isinstance(exc, LeaseLostError) or (self.lost and isinstance(exc, Exception)):
                _log.warning(
                    "the block of workflow %s raised %s after its run was over (%s)",
                    self._workflow.id,
                    type(exc).__name__,
                    self._ended,
                )
                return True
            return False
        if self._workflow.cancel_requested_at is not None:  # seen by a heartbeat
            await self._quietly(self._cancel())
            return exc is None or ours or isinstance(exc, Exception)
        if exc is None:
            await self._quietly(self.complete())
            return True
        if isinstance(exc, Exception) and not retryable(exc):
            _log.warning("workflow %s failed: %s", self._workflow.id, type(exc).__name__)
            await self._quietly(self.fail(exc))
            return True
        if isinstance(exc, Exception | asyncio.CancelledError):
            # A retryable database error, a cancellation, a shutdown: the work
            # is not done but not failed either. Give it back.
            await self._quietly(self.release(reason=why_released(exc, self._shutdown)))
            return ours or isinstance(exc, Exception)
        # KeyboardInterrupt, SystemExit: the process is going down. Write
        # nothing; the lease expires and another worker takes over, as after a
        # crash. (install_signal_handlers turns SIGINT into a clean stop.)
        return False

    def _uncancel_ours(self, exc: BaseException | None) -> bool:
        """Whether ``exc`` is a cancellation the run made (and only the run): take it back."""
        task = self._task
        if not (isinstance(exc, asyncio.CancelledError) and self._cancelled and task is not None):
            return False
        return task.uncancel() == 0

    async def _quietly(self, write: Coroutine[Any, Any, Workflow]) -> None:
        """Make a write that ends the run; a failure is logged, and the lease left to expire."""
        try:
            await asyncio.shield(write)
        except LeaseLostError:
            pass  # logged by _lost_lease
        except DbError as error:
            _log.warning(
                "could not end the run of workflow %s: %s", self._workflow.id, type(error).__name__
            )

    def _beaten(self, workflow: Workflow) -> None:
        if self._ended is None:
            self._workflow = workflow
            if workflow.cancel_requested_at is not None:
                self._cancel_block()

    async def _cancel(self) -> Workflow:
        """A cancel was asked of the workflow: cancel it (its attempt in flight failed)."""
        async with self._writing() as uow:
            cancelled = await cancel_on_request(uow, self.lease)
        return await self._finished(cancelled, "cancelled")

    async def _stop_heartbeat(self) -> None:
        heartbeat = self._heartbeat
        if heartbeat is asyncio.current_task():
            return
        if heartbeat.done():
            if not heartbeat.cancelled() and heartbeat.exception() is not None:
                error = heartbeat.exception()
                _log.error(
                    "the heartbeat of workflow %s stopped: %s",
                    self._workflow.id,
                    type(error).__name__,
                )
            return
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat

    async def _end(self, how: str) -> None:
        if self._done.is_set():
            return
        if self._ended is None:
            self._ended = how
        await self._stop_heartbeat()
        self._done.set()
        self._context.ended(self)
