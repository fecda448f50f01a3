"""The database the dashboard's tests look at: workflows, attempts, tokens, hostile text."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import attrs
from tests.factories import ArtifactFactory, StepExecutionFactory, WorkflowFactory

from ecl_persistence import Database, StepExecutionState, TokenUsage, Workflow, WorkflowState
from ecl_persistence.domain import utc_now

XSS_STEP = '<img src=x onerror="alert(1)">'
XSS_ERROR = "<script>alert('error')</script> \x1b[31m\u202egnp.exe"
XSS_DEFINITION = '"quoted" & <b>bold</b>'
SECRET = "payload-that-must-stay-private"
LISTED = 7
"""Workflows in the seeded database (the one with attempts and the hostile one included)."""
XSS_MODEL = "<b>model</b>"
# (step, attempt, state, start ms, duration ms, usage, model, cost): out of order on purpose.
ATTEMPTS = (
    ("answer", 1, StepExecutionState.RUNNING, 900, None, None, None, None),
    ("search", 1, StepExecutionState.FAILED, 0, 250, TokenUsage(8, 2), "model-a", Decimal("0.25")),
    (
        "search",
        2,
        StepExecutionState.SUCCEEDED,
        300,
        500,
        TokenUsage(12, 6, 2),
        "model-a",
        Decimal("0.000001"),
    ),
    ("rank", 1, StepExecutionState.SUCCEEDED, 820, 60, TokenUsage(3, 1, 0, 1), XSS_MODEL, None),
)
TRACED_COST = Decimal("0.250001")
HOSTILE_TOKENS = 100
TOTAL_TOKENS = 10 + 20 + 5 + HOSTILE_TOKENS


@attrs.frozen
class Seeded:
    """What the seeded database holds."""

    traced: Workflow
    """The workflow with :data:`ATTEMPTS`."""
    hostile: Workflow
    """The workflow whose step id, error and definition are hostile."""
    newest_first: tuple[Workflow, ...]


async def seed(db: Database) -> Seeded:
    """Store :data:`LISTED` workflows a minute apart, the newest created a day ago."""
    base = utc_now().replace(microsecond=0) - timedelta(days=1, minutes=LISTED)
    plain = [
        WorkflowFactory.build(
            definition_id="translate" if n % 2 else "research",
            state=WorkflowState.COMPLETED if n % 3 else WorkflowState.PENDING,
            completed_at=base + timedelta(minutes=n, seconds=2) if n % 3 else None,
            created_at=base + timedelta(minutes=n),
            input={"secret": SECRET},
        )
        for n in range(LISTED - 2)
    ]
    traced = WorkflowFactory.build(
        definition_id="research",
        state=WorkflowState.RUNNING,
        created_at=base + timedelta(minutes=LISTED - 2),
        input={"secret": SECRET},
    )
    hostile = WorkflowFactory.build(
        definition_id=XSS_DEFINITION,
        state=WorkflowState.FAILED,
        error=XSS_ERROR,
        created_at=base + timedelta(minutes=LISTED - 1),
        metadata={"note": "<script>alert('meta')</script>"},
    )
    started = traced.created_at + timedelta(seconds=1)
    attempts = [
        StepExecutionFactory.build(
            workflow_id=traced.id,
            step_id=step,
            attempt=attempt,
            state=state,
            started_at=started + timedelta(milliseconds=start),
            completed_at=None if ms is None else started + timedelta(milliseconds=start + ms),
            duration_ms=ms,
            tokens_used=None,
            usage=usage,
            model=model,
            cost=cost,
            error="TimeoutError: search timed out" if state is StepExecutionState.FAILED else None,
            input={"secret": SECRET},
        )
        for step, attempt, state, start, ms, usage, model, cost in ATTEMPTS
    ]
    attempts.append(
        StepExecutionFactory.build(
            workflow_id=hostile.id,
            step_id=XSS_STEP,
            state=StepExecutionState.FAILED,
            started_at=hostile.created_at,
            completed_at=hostile.created_at + timedelta(milliseconds=5),
            duration_ms=5,
            tokens_used=HOSTILE_TOKENS,
            error=XSS_ERROR,
        )
    )
    async with db.session() as uow:
        for workflow in (*plain, traced, hostile):
            await uow.workflows.create(workflow)
        await uow.step_executions.create_many(attempts)
        await uow.artifacts.create(
            ArtifactFactory.build(workflow_id=traced.id, step_id="rank", name="ranking.json")
        )
    newest = tuple(sorted((*plain, traced, hostile), key=lambda w: w.created_at, reverse=True))
    return Seeded(traced=traced, hostile=hostile, newest_first=newest)
