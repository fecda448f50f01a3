"""The demo workflow: three toy steps run by a worker, one of them retried.

``gather`` picks the sentences about the topic, ``summarise`` times out on
its first attempt (as a model endpoint might) and succeeds on its second, and
``publish`` writes ``summary.md`` and records it as an artifact. Each step
takes a few tens of milliseconds of simulated model latency, which is what
its measured duration shows; "tokens" are counted as words read and written.

A run is a :class:`~ecl_persistence.Worker` named ``demo-<pid>`` with a
short lease: it claims its own workflow by id, and its
:class:`~ecl_persistence.WorkflowRun` keeps the lease with a heartbeat,
skips the steps that already succeeded (``run.step`` returns their stored
output), records every attempt of the others (committed as it starts and as
it ends), retries the one that fails, and completes the workflow, which ends
the lease. Each step reads what it needs from the outputs of the steps before
it, so a resumed run, in another process, picks up where a crashed one
stopped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import NoReturn, Protocol

import attrs

from ecl_persistence.cli.demo_steps import (
    DEMO_PRICES,
    SOURCES,
    TOPIC,
    WORK,
    DemoContext,
    StepWork,
    field,
)
from ecl_persistence.database import Database
from ecl_persistence.domain import (
    JsonValue,
    ResumePoint,
    StepId,
    Workflow,
    WorkflowId,
    WorkflowState,
    utc_now,
)
from ecl_persistence.errors import ConflictError, DbError, InvalidStateTransitionError
from ecl_persistence.recorder import StepRecording, describe_exception
from ecl_persistence.workers import Retry, StepFunction, Worker, WorkflowRun

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFINITION_ID",
    "MAX_ATTEMPTS",
    "MAX_LEASE_SECONDS",
    "STEPS",
    "CannotResumeError",
    "CrashPlan",
    "CrashPoint",
    "Reporter",
    "StepFailedError",
    "WorkflowLostError",
    "run_demo",
]

DEFINITION_ID = "ecl-demo"
"""The definition id of every demo workflow."""
STEPS = ("gather", "summarise", "publish")
"""The demo's steps, in the order they run."""
MAX_ATTEMPTS = 3
"""Attempts of one step, over the workflow's history, before the workflow fails."""
RETRY = Retry(max_attempts=MAX_ATTEMPTS, delay_seconds=0.05)
"""How the demo retries a step: at once, nearly."""
DEFAULT_LEASE_SECONDS = 5.0
"""The demo's lease: short, so that a crashed demo's workflow is free again soon."""
MAX_LEASE_SECONDS = 60.0
"""The longest lease the demo takes, and so the longest a resume waits for one to expire."""

_EXPIRY_MARGIN_SECONDS = 0.05


class StepFailedError(Exception):
    """A demo step failed on every attempt; the workflow was marked failed."""


class WorkflowLostError(Exception):
    """Another worker took the demo's workflow over (its lease had expired); the demo stopped."""


class CannotResumeError(Exception):
    """The workflow given to resume cannot be resumed by the demo; nothing was changed."""

    def __init__(self, message: str, *, bad_input: bool = False) -> None:
        super().__init__(message)
        self.bad_input = bad_input
        """True when the id names no demo workflow, rather than one in the wrong state."""


@attrs.frozen
class CrashPoint:
    """Where a run stops on purpose: just after ``step`` succeeded and was committed."""

    workflow_id: WorkflowId
    step: str
    worker_id: str
    lease_expires_at: datetime
    """Until when the crashed worker's lease keeps other workers out."""


@attrs.frozen
class CrashPlan:
    """Stop the run on purpose as soon as step ``after`` has succeeded and been committed."""

    after: str
    """One of :data:`STEPS`."""
    stop: Callable[[CrashPoint], NoReturn]
    """Ends the run; it must not return (the command ends the process, as a crash would)."""


class Reporter(Protocol):
    """What a run tells the person watching it."""

    def note(self, message: str) -> None:
        """One line of progress."""

    async def wait(self, seconds: float, message: str) -> None:
        """Wait ``seconds`` (for a lease to expire), saying why."""


@attrs.frozen
class _Demo:
    """One run's worker, where its files go and how it reports."""

    db: Database
    worker: Worker
    lease_seconds: float
    artifacts_root: Path
    reporter: Reporter


def _noted(
    reporter: Reporter,
    step: str,
    work: StepWork,
    context: DemoContext,
    outputs: Mapping[str, JsonValue],
) -> StepFunction:
    """``work`` as the step function of ``run.step``, saying how each attempt went."""

    async def attempt(rec: StepRecording) -> JsonValue:
        try:
            output = await work(context, outputs, rec)
        except Exception as error:
            reporter.note(
                f"  {step:<10} attempt {rec.attempt}  failed: {describe_exception(error)}"
            )
            raise
        reporter.note(f"  {step:<10} attempt {rec.attempt}  succeeded")
        return output

    return attempt


async def _work_on(demo: _Demo, run: WorkflowRun, crash: CrashPlan | None) -> None:
    """Run the steps of a claimed workflow that have not succeeded, then complete it."""
    context = DemoContext(demo.db, run, demo.artifacts_root)
    outputs: dict[str, JsonValue] = {}
    async with run:
        for step in STEPS:
            if run.resume_point.is_done(step):
                done = run.resume_point.succeeded[StepId(step)]
                demo.reporter.note(f"  skipped {step} (succeeded in attempt {done.attempt})")
            work, input_of = WORK[step]
            attempt = _noted(demo.reporter, step, work, context, outputs)
            try:
                outputs[step] = await run.step(step, input_of(outputs), attempt, retry=RETRY)
            except DbError:
                raise
            except Exception as error:
                await run.fail(f"step {step} failed {MAX_ATTEMPTS} times")
                raise StepFailedError(
                    f"demo workflow {run.workflow.id} failed: step {step} failed "
                    f"{MAX_ATTEMPTS} times (last error: {describe_exception(error)})"
                ) from None
            if crash is not None and step == crash.after:
                expires = run.workflow.lease_expires_at
                assert expires is not None  # claimed, so leased
                crash.stop(CrashPoint(run.workflow.id, step, demo.worker.worker_id, expires))
        await run.complete(
            output={
                "summary": field(outputs, "summarise", "summary"),
                "artifact": field(outputs, "publish", "artifact"),
            }
        )
    if run.lost:
        raise WorkflowLostError(
            f"demo workflow {run.workflow.id} was taken over by another worker "
            "after the lease expired"
        )
    demo.reporter.note(f"Completed workflow {run.workflow.id}.")


async def _start(demo: _Demo) -> WorkflowRun:
    """Create a new demo workflow and claim it."""
    async with demo.db.session() as uow:
        created = await uow.workflows.create(
            Workflow.new(DEFINITION_ID, {"topic": TOPIC, "sources": len(SOURCES)}),
            actor=demo.worker.worker_id,
        )
    run = await demo.worker.claim(created.id)
    demo.reporter.note(
        f"Claimed new workflow {created.id} as {demo.worker.worker_id} "
        f"(lease {demo.lease_seconds:g} s)."
    )
    return run


def _check_resumable(point: ResumePoint, crash: CrashPlan | None) -> None:
    workflow = point.workflow
    if workflow.definition_id != DEFINITION_ID:
        raise CannotResumeError(
            f"workflow {workflow.id} is a {workflow.definition_id!r} workflow, not a demo "
            f"workflow ({DEFINITION_ID!r}): the demo resumes only its own",
            bad_input=True,
        )
    if workflow.state is WorkflowState.COMPLETED:
        raise CannotResumeError(f"workflow {workflow.id} is already completed: nothing to resume")
    if workflow.state is WorkflowState.FAILED:
        raise CannotResumeError(
            f"workflow {workflow.id} failed ({workflow.error}): the demo resumes only "
            "interrupted workflows"
        )
    if crash is not None and point.is_done(crash.after):
        raise CannotResumeError(
            f"step {crash.after} of workflow {workflow.id} already succeeded: "
            "a resumed run cannot crash after it",
            bad_input=True,
        )


async def _take_over(demo: _Demo, workflow_id: WorkflowId, crash: CrashPlan | None) -> WorkflowRun:
    """Claim a workflow a crashed demo left behind, once its lease has expired."""
    async with demo.db.session(read_only=True) as uow:
        point = await uow.workflows.resume_point(workflow_id)
    _check_resumable(point, crash)
    workflow = point.workflow
    if workflow.lease_expires_at is not None:
        remaining = (workflow.lease_expires_at - utc_now()).total_seconds()
        if remaining > MAX_LEASE_SECONDS:
            raise CannotResumeError(
                f"workflow {workflow_id} is leased to {workflow.lease_owner} until "
                f"{workflow.lease_expires_at:%Y-%m-%d %H:%M:%S} UTC: try again then"
            )
        wait = remaining + _EXPIRY_MARGIN_SECONDS
        if wait > 0:
            await demo.reporter.wait(
                wait,
                f"Waiting {wait:.1f} s for the lease of {workflow.lease_owner} on "
                f"workflow {workflow_id} to expire...",
            )
    try:
        run = await demo.worker.claim(workflow_id)
    except (ConflictError, InvalidStateTransitionError) as error:
        # Its worker renewed the lease while we waited (it is alive after
        # all), or another run took the workflow over first.
        raise CannotResumeError(f"{error}: someone else is working on it") from None
    demo.reporter.note(
        f"Claimed workflow {workflow_id} as {demo.worker.worker_id} "
        f"(lease {demo.lease_seconds:g} s, claim {run.workflow.claim_count}); resuming it."
    )
    return run


async def run_demo(
    db: Database,
    artifacts_root: Path,
    reporter: Reporter,
    *,
    resume: WorkflowId | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    crash: CrashPlan | None = None,
) -> WorkflowId:
    """Run one demo workflow to completion on ``db`` and return its id.

    Without ``resume`` a new workflow is created and claimed. With it, that
    workflow is taken over: once the lease of the worker that left it has
    expired (waiting for it, at most :data:`MAX_LEASE_SECONDS`), it is
    claimed and its steps that already succeeded are skipped. Raises
    :class:`CannotResumeError` for a workflow the demo cannot resume, and
    NotFoundError for an unknown one.

    With ``crash``, the run stops as the plan says once its step has
    succeeded, before anything else is written: the workflow stays running,
    leased to this run's worker (``demo-<pid>``), until the lease expires.

    ``summary.md`` is written under ``artifacts_root`` at the artifact's
    relative path, ``artifacts/<workflow id>/summary.md``. Raises
    :class:`StepFailedError` (after marking the workflow failed) when a step
    fails on every attempt, as ``publish`` does when the file cannot be
    written, and :class:`WorkflowLostError` if another worker took the
    workflow over meanwhile.
    """
    worker = Worker(db, f"demo-{os.getpid()}", lease_seconds=lease_seconds, price_book=DEMO_PRICES)
    demo = _Demo(db, worker, lease_seconds, artifacts_root, reporter)
    run = await (_start(demo) if resume is None else _take_over(demo, resume, crash))
    await _work_on(demo, run, crash)
    return run.workflow.id
