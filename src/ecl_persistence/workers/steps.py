"""The steps of a workflow run: memoized by their stored outcome, retried by their policy."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, NoReturn, Protocol

import attrs

from ecl_persistence.domain import (
    MAX_ID_LENGTH,
    MISSING,
    JsonValue,
    Lease,
    ResumePoint,
    StepExecutionState,
    StepId,
    WorkflowState,
    WorkflowTransition,
    check_cost,
    check_text,
)
from ecl_persistence.errors import (
    AttemptsExhaustedError,
    BudgetExceededError,
    LeaseLostError,
    ValidationError,
)
from ecl_persistence.recorder import StepRecorder, StepRecording, describe_exception
from ecl_persistence.workers.retry import ONE_ATTEMPT, Retry

if TYPE_CHECKING:
    from ecl_persistence.database import Database
    from ecl_persistence.workers.context import RunContext

__all__ = ["DEFAULT_RETRY", "StepFunction", "StepHost", "Steps"]

StepFunction = Callable[[StepRecording], Awaitable[JsonValue]]
"""What a step runs: given the attempt's recording (to set tokens, metadata), its output."""

DEFAULT_RETRY = Retry()
"""Three attempts, one second apart and then two, as ``run.step`` retries by default."""

# What the recorder stores for an attempt cut short by a cancellation (a
# shutdown, a lost lease): not a failure of the step, so not counted.
_CANCELLED = describe_exception(asyncio.CancelledError())


class StepHost(Protocol):
    """What the steps need from their run: its lease, and what to do when it is lost or over."""

    @property
    def lease(self) -> Lease:
        """The fencing token every write of a step is made with."""
        ...

    @property
    def lease_seconds(self) -> float:
        """How long the lease lasts: a retry that waits longer releases the workflow."""
        ...

    def check_live(self) -> None:
        """Raise LeaseLostError if the run is over (lost, released or finished)."""
        ...

    def _lost_lease(self, error: LeaseLostError) -> None:
        """A write found the lease lost: the run is over."""
        ...

    async def _retry_later(self, step_id: StepId, delay_seconds: float) -> NoReturn:
        """Release the workflow until the step's next attempt is due, and end the run."""
        ...


class Steps:
    """The steps of one run: the outputs already known, the failures already counted."""

    __slots__ = (
        "_attempts",
        "_db",
        "_failures",
        "_host",
        "_max_cost",
        "_outputs",
        "_point",
        "_recorder",
    )

    def __init__(
        self,
        db: Database,
        point: ResumePoint,
        host: StepHost,
        context: RunContext | None = None,
    ) -> None:
        self._db = db
        price_book = None if context is None else context.price_book
        self._recorder = StepRecorder(db, price_book=price_book)
        self._max_cost = None if context is None else context.max_cost_per_workflow
        self._host = host
        self._point = point
        self._outputs: dict[StepId, JsonValue] = {
            step: None if execution.output is MISSING else execution.output
            for step, execution in point.succeeded.items()
        }
        self._failures: dict[StepId, int] = {}
        # The last attempt number of each step: from the resume point, then
        # counted here. Under the lease no one else records attempts of this
        # workflow (every write is fenced), so the next number is known
        # without asking the database (and locking the workflow's row).
        self._attempts: dict[StepId, int] = {
            step: next_attempt - 1 for step, next_attempt in point.to_retry.items()
        }

    async def run(
        self,
        step_id: StepId | str,
        input: JsonValue,
        fn: StepFunction,
        retry: Retry | None,
        max_cost: Decimal | None = None,
    ) -> JsonValue:
        """Return the step's output: stored if it already succeeded, else from ``fn``, retried."""
        step = StepId(check_text(step_id, field="step_id", max_length=MAX_ID_LENGTH))
        policy = _policy(retry)
        budget = check_cost(max_cost, "max_cost", maximum=None)
        if budget is None:
            budget = self._max_cost
        if not callable(fn):
            raise ValidationError("fn must be an async callable taking a StepRecording")
        self._host.check_live()
        if step in self._outputs:
            return self._outputs[step]
        failures = await self._failures_of(step)
        while True:
            if failures >= policy.max_attempts:
                raise AttemptsExhaustedError(self._point.workflow.id, step, failures)
            if budget is not None:
                await self._check_budget(step, budget)
            outcome = await self._attempt(step, input, fn)
            if not isinstance(outcome, _Failed):
                self._outputs[step] = outcome.output
                return outcome.output
            failure = outcome.error
            if isinstance(failure, LeaseLostError):
                self._host._lost_lease(failure)
                raise failure
            self._host.check_live()
            failures = self._failures[step] = failures + 1
            if failures >= policy.max_attempts:
                raise failure
            delay = policy.delay_after(failures)
            if delay > self._host.lease_seconds:
                await self._host._retry_later(step, delay)
            await asyncio.sleep(delay)

    async def _attempt(self, step: StepId, input: JsonValue, fn: StepFunction) -> _Done | _Failed:
        """One recorded attempt: its output, or the exception the step raised.

        An exception of the recording itself (the lease lost, the database
        gone) propagates instead: the step did not fail, it could not run.
        """
        raised: BaseException | None = None
        # Taken before the first await: two attempts of one run never share a
        # number. One whose start was not recorded leaves a gap, never a clash
        # (its start may have committed though the commit reported an error).
        attempt = self._attempts[step] = self._attempts.get(step, 0) + 1
        try:
            async with self._recorder.step(
                self._point.workflow.id, step, input, attempt=attempt, lease=self._host.lease
            ) as recording:
                try:
                    output = await fn(recording)
                    recording.output = output
                except Exception as error:
                    raised = error
                    raise
        except LeaseLostError as error:
            self._host._lost_lease(error)
            raise
        except Exception as error:
            if error is not raised:
                raise
            return _Failed(error)
        return _Done(output)

    async def _check_budget(self, step: StepId, budget: Decimal) -> None:
        """Refuse to start an attempt once the workflow has spent ``budget``."""
        workflow_id = self._point.workflow.id
        async with self._db.session(read_only=True) as uow:
            stats = await uow.step_executions.get_stats(workflow_id)
        spent = stats.total_cost or Decimal(0)
        if spent >= budget:
            raise BudgetExceededError(workflow_id, step, spent, budget)

    async def _failures_of(self, step: StepId) -> int:
        """How many attempts of the step failed so far, in its whole stored history."""
        known = self._failures.get(step)
        if known is not None:
            return known
        count = 0
        if step in self._point.to_retry:
            workflow_id = self._point.workflow.id
            # The run's own history: from the primary, never a lagging replica.
            async with self._db.session(read_only=True, primary=True) as uow:
                attempts = await uow.step_executions.get_for_step(workflow_id, step)
                since = _retried_at(await uow.workflows.history(workflow_id))
            count = sum(
                1
                for attempt in attempts
                if attempt.state is StepExecutionState.FAILED
                and attempt.error != _CANCELLED
                and (since is None or attempt.started_at >= since)
            )
        self._failures[step] = count
        return count


@attrs.frozen
class _Done:
    output: JsonValue


@attrs.frozen
class _Failed:
    error: Exception


def _retried_at(history: list[WorkflowTransition]) -> datetime | None:
    """When the workflow was last retried: its steps' attempts count afresh from then."""
    retries = (WorkflowState.FAILED, WorkflowState.CANCELLED)
    return max(
        (t.at for t in history if t.to_state is WorkflowState.PENDING and t.from_state in retries),
        default=None,
    )


def _policy(retry: object) -> Retry:
    if retry is None:
        return ONE_ATTEMPT
    if not isinstance(retry, Retry):
        raise ValidationError(f"retry must be a Retry or None, not {type(retry).__name__}")
    return retry
