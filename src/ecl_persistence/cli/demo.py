"""The demo workflow: three toy steps run the way a worker runs them, one retried.

``gather`` picks the sentences about the topic, ``summarise`` times out on
its first attempt (as a model endpoint might) and succeeds on its second, and
``publish`` writes ``summary.md`` and records it as an artifact. Each step
takes a few tens of milliseconds of simulated model latency, which is what
its measured duration shows; "tokens" are counted as words read and written.

A run works like a worker of ``docs/workers.md``: it claims its workflow as
``demo-<pid>`` with a short lease, reads the workflow's resume point, skips
the steps that already succeeded, records every attempt of the others with
:class:`~ecl_persistence.StepRecorder` (committed as it starts and as it
ends), heartbeats after each attempt, and completes the workflow, which ends
the lease. Each step reads what it needs from the stored outputs of the steps
before it, so a resumed run, in another process, picks up where a crashed one
stopped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NoReturn, Protocol

import attrs

from ecl_persistence.cli.demo_steps import SOURCES, TOPIC, WORK, field
from ecl_persistence.database import Database
from ecl_persistence.domain import (
    MISSING,
    JsonValue,
    ResumePoint,
    StepId,
    Workflow,
    WorkflowId,
    WorkflowState,
    utc_now,
)
from ecl_persistence.errors import ConflictError, InvalidStateTransitionError
from ecl_persistence.recorder import StepRecorder, describe_exception

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
    "run_demo",
]

DEFINITION_ID = "ecl-demo"
"""The definition id of every demo workflow."""
STEPS = ("gather", "summarise", "publish")
"""The demo's steps, in the order they run."""
MAX_ATTEMPTS = 3
"""Attempts of one step, in one run, before the workflow fails."""
DEFAULT_LEASE_SECONDS = 5.0
"""The demo's lease: short, so that a crashed demo's workflow is free again soon."""
MAX_LEASE_SECONDS = 60.0
"""The longest lease the demo takes, and so the longest a resume waits for one to expire."""

_EXPIRY_MARGIN_SECONDS = 0.05


class StepFailedError(Exception):
    """A demo step failed on every attempt; the workflow was marked failed."""


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
class _Run:
    """One run's worker, its recorder and how it reports."""

    db: Database
    recorder: StepRecorder
    worker_id: str
    lease_seconds: float
    artifacts_root: Path
    reporter: Reporter


async def _run_step(
    run: _Run, workflow: Workflow, step: str, outputs: dict[str, JsonValue]
) -> Workflow:
    """Run ``step`` until an attempt succeeds, heartbeating after a failed one.

    Adds the step's output to ``outputs`` and returns the workflow as of the
    last heartbeat. Raises :class:`StepFailedError`, after marking the
    workflow failed, when every attempt fails.
    """
    work, input_of = WORK[step]
    failure = ""
    for _ in range(MAX_ATTEMPTS):
        # The recorder numbers the attempt: after a crash, it follows the interrupted one.
        try:
            async with run.recorder.step(workflow.id, step, input_of(outputs)) as rec:
                await work(run.db, run.artifacts_root, workflow, outputs, rec)
        except OSError as error:  # TimeoutError is one; so is a file that cannot be written
            failure = describe_exception(error)
            run.reporter.note(f"  {step:<10} attempt {rec.execution.attempt}  failed: {failure}")
            workflow = await _heartbeat(run, workflow)
            continue
        run.reporter.note(f"  {step:<10} attempt {rec.execution.attempt}  succeeded")
        outputs[step] = None if rec.output is MISSING else rec.output
        return workflow
    async with run.db.session() as uow:
        await uow.workflows.update_state(
            workflow.id,
            WorkflowState.FAILED,
            error=f"step {step} failed {MAX_ATTEMPTS} times",
            expected_version=workflow.version,
            actor=run.worker_id,
        )
    raise StepFailedError(
        f"demo workflow {workflow.id} failed: step {step} failed {MAX_ATTEMPTS} times "
        f"(last error: {failure})"
    )


async def _heartbeat(run: _Run, workflow: Workflow) -> Workflow:
    """Keep the lease; raises ConflictError if another worker took the workflow over."""
    async with run.db.session() as uow:
        return await uow.workflows.heartbeat(
            workflow.id, run.worker_id, lease_seconds=run.lease_seconds
        )


async def _work_on(run: _Run, claimed: Workflow, crash: CrashPlan | None) -> None:
    """Run the steps of a claimed workflow that have not succeeded, then complete it."""
    async with run.db.session(read_only=True) as uow:
        point = await uow.workflows.resume_point(claimed.id)
    outputs: dict[str, JsonValue] = {}
    workflow = claimed
    for step in STEPS:
        if point.is_done(step):
            done = point.succeeded[StepId(step)]
            run.reporter.note(f"  skipped {step} (succeeded in attempt {done.attempt})")
            outputs[step] = None if done.output is MISSING else done.output
            continue
        workflow = await _run_step(run, workflow, step, outputs)
        if crash is not None and step == crash.after:
            assert workflow.lease_expires_at is not None  # it was claimed or heartbeated
            crash.stop(CrashPoint(workflow.id, step, run.worker_id, workflow.lease_expires_at))
        workflow = await _heartbeat(run, workflow)
    output: JsonValue = {
        "summary": field(outputs, "summarise", "summary"),
        "artifact": field(outputs, "publish", "artifact"),
    }
    async with run.db.session() as uow:
        # Both writes check the version of the claim: had the lease been lost
        # and the workflow claimed again meanwhile, nothing would be written.
        stored = await uow.workflows.update_output(
            workflow.id, output, expected_version=claimed.version
        )
        await uow.workflows.update_state(
            workflow.id,
            WorkflowState.COMPLETED,
            expected_version=stored.version,
            actor=run.worker_id,
        )
    run.reporter.note(f"Completed workflow {workflow.id}.")


async def _start(run: _Run) -> Workflow:
    """Create a new demo workflow and claim it, in one transaction."""
    async with run.db.session() as uow:
        created = await uow.workflows.create(
            Workflow.new(DEFINITION_ID, {"topic": TOPIC, "sources": len(SOURCES)}),
            actor=run.worker_id,
        )
        claimed = await uow.workflows.claim_by_id(
            created.id, run.worker_id, lease_seconds=run.lease_seconds
        )
    run.reporter.note(
        f"Claimed new workflow {claimed.id} as {run.worker_id} (lease {run.lease_seconds:g} s)."
    )
    return claimed


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


async def _take_over(run: _Run, workflow_id: WorkflowId, crash: CrashPlan | None) -> Workflow:
    """Claim a workflow a crashed demo left behind, once its lease has expired."""
    async with run.db.session(read_only=True) as uow:
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
            await run.reporter.wait(
                wait,
                f"Waiting {wait:.1f} s for the lease of {workflow.lease_owner} on "
                f"workflow {workflow_id} to expire...",
            )
    try:
        async with run.db.session() as uow:
            claimed = await uow.workflows.claim_by_id(
                workflow_id, run.worker_id, lease_seconds=run.lease_seconds
            )
    except (ConflictError, InvalidStateTransitionError) as error:
        # Its worker renewed the lease while we waited (it is alive after
        # all), or another run took the workflow over first.
        raise CannotResumeError(f"{error}: someone else is working on it") from None
    run.reporter.note(
        f"Claimed workflow {workflow_id} as {run.worker_id} (lease {run.lease_seconds:g} s, "
        f"claim {claimed.claim_count}); resuming it."
    )
    return claimed


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
    fails on every attempt, as ``publish`` does when the file cannot be written.
    """
    run = _Run(
        db=db,
        recorder=StepRecorder(db),
        worker_id=f"demo-{os.getpid()}",
        lease_seconds=lease_seconds,
        artifacts_root=artifacts_root,
        reporter=reporter,
    )
    claimed = await (_start(run) if resume is None else _take_over(run, resume, crash))
    await _work_on(run, claimed, crash)
    return claimed.id
