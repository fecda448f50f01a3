"""The demo's three toy steps: what each reads, does, records and returns.

``gather`` picks the sentences about the topic, ``summarise`` times out on
its first attempt (as a model endpoint might) and succeeds on its second, and
``publish`` writes ``summary.md`` and records it as an artifact, under the
run's lease. Each takes a few tens of milliseconds of simulated model
latency; "tokens" are words read and written, recorded as the usage of a
made-up model priced by :data:`DEMO_PRICES` (fictional prices, for the
demo's ledger only: ``ecl-db usage``). Each reads what it needs from
the stored outputs of the steps before it, so a resumed run, in another
process, picks up where a crashed one stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import cast

import attrs

from ecl_persistence.database import Database
from ecl_persistence.domain import Artifact, JsonValue, Price, PriceBook, StepId, TokenUsage
from ecl_persistence.recorder import StepRecording
from ecl_persistence.workers import WorkflowRun

__all__ = [
    "ARTIFACT",
    "DEMO_MODEL",
    "DEMO_PRICES",
    "SOURCES",
    "TOPIC",
    "WORK",
    "DemoContext",
    "StepWork",
    "field",
]

TOPIC = "tides"
"""What the demo workflow is about."""
SOURCES = (
    "Tides are the rise and fall of sea levels caused by the Moon and the Sun.",
    "Most coasts see two high tides and two low tides every lunar day.",
    "Volcanoes form where magma reaches the surface of the Earth.",
    "Spring tides, the largest, come when the Sun, Moon and Earth line up.",
)
ARTIFACT = "summary.md"
DEMO_MODEL = "demo-model"
"""The made-up model the demo's steps "run" on."""
DEMO_PRICES = PriceBook({DEMO_MODEL: Price(Decimal("0.15"), Decimal("0.60"), Decimal("0.075"))})
"""Fictional prices per million tokens, so the demo's ledger shows costs."""


def _record(rec: StepRecording, read: int, written: int, cached: int = 0) -> None:
    rec.model = DEMO_MODEL
    rec.usage = TokenUsage(input_tokens=read, output_tokens=written, cached_tokens=cached)


@attrs.frozen
class DemoContext:
    """What the demo's steps work with: the database, the run, where files go."""

    db: Database
    run: WorkflowRun
    artifacts_root: Path


StepWork = Callable[[DemoContext, Mapping[str, JsonValue], StepRecording], Awaitable[JsonValue]]
"""What a step of the demo does: ``(context, outputs so far, recording) -> output``."""


def _words(*texts: str) -> int:
    return sum(len(text.split()) for text in texts)


def field(outputs: Mapping[str, JsonValue], step: str, key: str) -> JsonValue:
    """A value from the stored output of an earlier step (one of the demo's own steps)."""
    return cast("dict[str, JsonValue]", outputs[step])[key]


def _notes(outputs: Mapping[str, JsonValue]) -> list[str]:
    return cast("list[str]", field(outputs, "gather", "notes"))


async def _gather(
    context: DemoContext, outputs: Mapping[str, JsonValue], rec: StepRecording
) -> JsonValue:
    await asyncio.sleep(0.02)
    notes: list[JsonValue] = [s for s in SOURCES if "tide" in s.lower()]
    _record(rec, _words(*SOURCES), _words(*(str(note) for note in notes)))
    return {"notes": notes}


async def _summarise(
    context: DemoContext, outputs: Mapping[str, JsonValue], rec: StepRecording
) -> JsonValue:
    notes = _notes(outputs)
    # A timed-out call still costs what it read: the failed attempt keeps it.
    _record(rec, _words(*notes), 0)
    if rec.attempt == 1:
        await asyncio.sleep(0.04)
        raise TimeoutError("model timed out after 40 ms (simulated)")
    await asyncio.sleep(0.06)
    summary = " ".join(note.split(",")[0].rstrip(".") + "." for note in notes[:2])
    _record(rec, 0, _words(summary), cached=_words(*notes))
    return {"summary": summary}


async def _publish(
    context: DemoContext, outputs: Mapping[str, JsonValue], rec: StepRecording
) -> JsonValue:
    await asyncio.sleep(0.01)
    workflow_id = context.run.workflow.id
    relative = f"artifacts/{workflow_id}/{ARTIFACT}"
    content = f"# {TOPIC.title()}\n\n{field(outputs, 'summarise', 'summary')}\n".encode()
    target = context.artifacts_root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    async with context.db.session(read_only=True) as uow:
        recorded = await uow.artifacts.list_for_step(workflow_id, StepId("publish"))
    # An attempt interrupted after recording the file already did this: the
    # step is idempotent, as a step that may run twice must be.
    if not any(artifact.name == ARTIFACT for artifact in recorded):
        await context.run.add_artifact(
            Artifact.new(
                workflow_id,
                StepId("publish"),
                ARTIFACT,
                content_type="text/markdown",
                path=relative,
                size_bytes=len(content),
            )
        )
    rec.tokens_used = 0
    return {"artifact": relative}


WORK: dict[str, tuple[StepWork, Callable[[Mapping[str, JsonValue]], JsonValue]]] = {
    "gather": (_gather, lambda outputs: {"topic": TOPIC}),
    "summarise": (
        _summarise,
        lambda outputs: {"notes": len(_notes(outputs))},
    ),
    "publish": (_publish, lambda outputs: {"format": "markdown"}),
}
"""Each step: what it does, and its input from the outputs of the steps before it."""
