"""The demo's three toy steps: what each reads, does, records and returns.

``gather`` picks the sentences about the topic, ``summarise`` times out on
its first attempt (as a model endpoint might) and succeeds on its second, and
``publish`` writes ``summary.md`` and records it as an artifact. Each takes a
few tens of milliseconds of simulated model latency; "tokens" are words read
and written. Each reads what it needs from the stored outputs of the steps
before it, so a resumed run, in another process, picks up where a crashed
one stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import cast

from ecl_persistence.database import Database
from ecl_persistence.domain import Artifact, JsonValue, StepId, Workflow
from ecl_persistence.recorder import StepRecording

__all__ = ["ARTIFACT", "SOURCES", "TOPIC", "WORK", "StepWork", "field"]

TOPIC = "tides"
"""What the demo workflow is about."""
SOURCES = (
    "Tides are the rise and fall of sea levels caused by the Moon and the Sun.",
    "Most coasts see two high tides and two low tides every lunar day.",
    "Volcanoes form where magma reaches the surface of the Earth.",
    "Spring tides, the largest, come when the Sun, Moon and Earth line up.",
)
ARTIFACT = "summary.md"
# Past the expiry by a hair: a lease is claimable once it expired *before* now.


StepWork = Callable[
    [Database, Path, Workflow, Mapping[str, JsonValue], StepRecording], Awaitable[None]
]
"""What a step of the demo does: ``(db, artifacts_root, workflow, outputs, recording)``."""


def _words(*texts: str) -> int:
    return sum(len(text.split()) for text in texts)


def field(outputs: Mapping[str, JsonValue], step: str, key: str) -> JsonValue:
    """A value from the stored output of an earlier step (one of the demo's own steps)."""
    return cast("dict[str, JsonValue]", outputs[step])[key]


def _notes(outputs: Mapping[str, JsonValue]) -> list[str]:
    return cast("list[str]", field(outputs, "gather", "notes"))


async def _gather(
    db: Database,
    artifacts_root: Path,
    workflow: Workflow,
    outputs: Mapping[str, JsonValue],
    rec: StepRecording,
) -> None:
    await asyncio.sleep(0.02)
    notes: list[JsonValue] = [s for s in SOURCES if "tide" in s.lower()]
    rec.tokens_used = _words(*SOURCES)
    rec.output = {"notes": notes}


async def _summarise(
    db: Database,
    artifacts_root: Path,
    workflow: Workflow,
    outputs: Mapping[str, JsonValue],
    rec: StepRecording,
) -> None:
    notes = _notes(outputs)
    rec.tokens_used = _words(*notes)
    if rec.execution.attempt == 1:
        await asyncio.sleep(0.04)
        raise TimeoutError("model timed out after 40 ms (simulated)")
    await asyncio.sleep(0.06)
    summary = " ".join(note.split(",")[0].rstrip(".") + "." for note in notes[:2])
    rec.tokens_used += _words(summary)
    rec.output = {"summary": summary}


async def _publish(
    db: Database,
    artifacts_root: Path,
    workflow: Workflow,
    outputs: Mapping[str, JsonValue],
    rec: StepRecording,
) -> None:
    await asyncio.sleep(0.01)
    relative = f"artifacts/{workflow.id}/{ARTIFACT}"
    content = f"# {TOPIC.title()}\n\n{field(outputs, 'summarise', 'summary')}\n".encode()
    target = artifacts_root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    async with db.session() as uow:
        # An attempt interrupted after this commit already recorded the file:
        # the step is idempotent, as a step that may run twice must be.
        recorded = await uow.artifacts.list_for_step(workflow.id, StepId("publish"))
        if not any(artifact.name == ARTIFACT for artifact in recorded):
            await uow.artifacts.create(
                Artifact.new(
                    workflow.id,
                    StepId("publish"),
                    ARTIFACT,
                    content_type="text/markdown",
                    path=relative,
                    size_bytes=len(content),
                )
            )
    rec.tokens_used = 0
    rec.output = {"artifact": relative}


WORK: dict[str, tuple[StepWork, Callable[[Mapping[str, JsonValue]], JsonValue]]] = {
    "gather": (_gather, lambda outputs: {"topic": TOPIC}),
    "summarise": (
        _summarise,
        lambda outputs: {"notes": len(_notes(outputs))},
    ),
    "publish": (_publish, lambda outputs: {"format": "markdown"}),
}
"""Each step: what it does, and its input from the outputs of the steps before it."""
