"""The demo workflow: three toy steps persisted through the public API, one retried.

``gather`` picks the sentences about the topic, ``summarise`` times out on
its first attempt (as a model endpoint might) and succeeds on its second, and
``publish`` writes ``summary.md`` and records it as an artifact. Each step
takes a few tens of milliseconds of simulated model latency, which is what
its measured duration shows; "tokens" are counted as words read and written.
Every attempt is stored as it starts and as it ends, the way an engine would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Generic, TypeVar

import attrs

from ecl_persistence.database import Database
from ecl_persistence.domain import (
    MISSING,
    Artifact,
    JsonValue,
    StepExecution,
    StepExecutionState,
    StepId,
    Workflow,
    WorkflowId,
    WorkflowState,
)

__all__ = ["DEFINITION_ID", "MAX_ATTEMPTS", "StepFailedError", "run_demo"]

DEFINITION_ID = "ecl-demo"
"""The definition id of every demo workflow."""
MAX_ATTEMPTS = 3
"""Attempts of one step before the workflow fails."""

TOPIC = "tides"
_SOURCES = (
    "Tides are the rise and fall of sea levels caused by the Moon and the Sun.",
    "Most coasts see two high tides and two low tides every lunar day.",
    "Volcanoes form where magma reaches the surface of the Earth.",
    "Spring tides, the largest, come when the Sun, Moon and Earth line up.",
)


T = TypeVar("T")


class StepFailedError(Exception):
    """A demo step failed on every attempt; the workflow was marked failed."""


class _TransientError(Exception):
    """A failure worth retrying, like a model endpoint timing out."""

    def __init__(self, message: str, tokens: int) -> None:
        super().__init__(message)
        self.tokens = tokens


@attrs.frozen
class _Result(Generic[T]):
    value: T
    """What the next step works on."""
    output: JsonValue
    """What is stored as the execution's output."""
    tokens: int
    artifact: Artifact | None = None


def _words(*texts: str) -> int:
    return sum(len(text.split()) for text in texts)


async def _gather(attempt: int) -> _Result[list[str]]:
    await asyncio.sleep(0.02)
    notes = [sentence for sentence in _SOURCES if "tide" in sentence.lower()]
    stored: list[JsonValue] = list(notes)
    return _Result(notes, {"notes": stored}, tokens=_words(*_SOURCES))


def _summarise(notes: list[str]) -> Callable[[int], Awaitable[_Result[str]]]:
    async def run(attempt: int) -> _Result[str]:
        prompt = _words(*notes)
        if attempt == 1:
            await asyncio.sleep(0.04)
            raise _TransientError("model timed out after 40 ms (simulated)", tokens=prompt)
        await asyncio.sleep(0.06)
        summary = " ".join(note.split(",")[0].rstrip(".") + "." for note in notes[:2])
        return _Result(summary, {"summary": summary}, tokens=prompt + _words(summary))

    return run


def _publish(
    root: Path, workflow_id: WorkflowId, summary: str
) -> Callable[[int], Awaitable[_Result[str]]]:
    async def run(attempt: int) -> _Result[str]:
        await asyncio.sleep(0.01)
        relative = f"artifacts/{workflow_id}/summary.md"
        content = f"# {TOPIC.title()}\n\n{summary}\n".encode()
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        artifact = Artifact.new(
            workflow_id,
            StepId("publish"),
            "summary.md",
            content_type="text/markdown",
            path=relative,
            size_bytes=len(content),
        )
        return _Result(relative, {"artifact": relative}, tokens=0, artifact=artifact)

    return run


async def _run_step(
    db: Database,
    workflow_id: WorkflowId,
    step: str,
    input: JsonValue,
    work: Callable[[int], Awaitable[_Result[T]]],
) -> T:
    """Run ``work`` until an attempt succeeds, storing each attempt; return its value."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        async with db.session() as uow:
            execution = await uow.step_executions.create(
                StepExecution.start(workflow_id, StepId(step), input, attempt=attempt)
            )
        started = time.perf_counter()
        result: _Result[T] | None = None
        failure: str | None = None
        try:
            result = await work(attempt)
            tokens = result.tokens
        except _TransientError as error:
            failure, tokens = str(error), error.tokens
        except OSError as error:
            failure, tokens = f"{type(error).__name__}: {error.strerror}", 0
        elapsed_ms = round((time.perf_counter() - started) * 1000)
        async with db.session() as uow:
            # The artifact is recorded in the same transaction that marks the step done.
            await uow.step_executions.update_completion(
                execution.id,
                StepExecutionState.FAILED if result is None else StepExecutionState.SUCCEEDED,
                output=MISSING if result is None else result.output,
                error=failure,
                duration_ms=elapsed_ms,
                tokens_used=tokens,
            )
            if result is not None:
                if result.artifact is not None:
                    await uow.artifacts.create(result.artifact)
                return result.value
    async with db.session() as uow:
        await uow.workflows.update_state(
            workflow_id, WorkflowState.FAILED, error=f"step {step} failed {MAX_ATTEMPTS} times"
        )
    raise StepFailedError(
        f"demo workflow {workflow_id} failed: step {step} failed {MAX_ATTEMPTS} times "
        f"(last error: {failure})"
    )


async def run_demo(db: Database, artifacts_root: Path) -> WorkflowId:
    """Run one demo workflow to completion on ``db`` and return its id.

    ``summary.md`` is written under ``artifacts_root`` at the artifact's
    relative path, ``artifacts/<workflow id>/summary.md``. Raises
    :class:`StepFailedError` (after marking the workflow failed) when a step
    fails on every attempt, as ``publish`` does when the file cannot be written.
    """
    workflow = Workflow.new(DEFINITION_ID, {"topic": TOPIC, "sources": len(_SOURCES)})
    async with db.session() as uow:
        await uow.workflows.create(workflow)
        await uow.workflows.update_state(workflow.id, WorkflowState.RUNNING)
    notes = await _run_step(db, workflow.id, "gather", {"topic": TOPIC}, _gather)
    summary = await _run_step(
        db, workflow.id, "summarise", {"notes": len(notes)}, _summarise(notes)
    )
    path = await _run_step(
        db,
        workflow.id,
        "publish",
        {"format": "markdown"},
        _publish(artifacts_root, workflow.id, summary),
    )
    async with db.session() as uow:
        await uow.workflows.update_output(workflow.id, {"summary": summary, "artifact": path})
        await uow.workflows.update_state(workflow.id, WorkflowState.COMPLETED)
    return workflow.id
