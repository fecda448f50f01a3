"""OpenTelemetry: spans of units of work, repository calls and step attempts; the metrics.

The SDK's in-memory exporters stand in for the application's SDK, handed to
:func:`ecl_persistence.telemetry.instrument` (OpenTelemetry's global
providers can be set only once per process).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tests.factories import WorkflowFactory
from tests.integration.test_docs_examples import python_blocks

from ecl_persistence import (
    ConnectionFailedError,
    Database,
    NotFoundError,
    StepRecorder,
    UnitOfWork,
    telemetry,
)
from ecl_persistence.domain import new_uuid7

SECRET = "payload-that-must-stay-private"

STATES = ("pending", "running", "completed", "failed", "cancelled")


@attrs.frozen
class Exported:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


@pytest.fixture
def exported() -> Iterator[Exported]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield Exported(spans, reader)
    finally:
        telemetry.instrument()
        meter_provider.shutdown()
        tracer_provider.shutdown()


def _values(span: ReadableSpan) -> str:
    return " ".join(f"{key}={value!s}" for key, value in (span.attributes or {}).items())


async def test_without_an_sdk_nothing_is_instrumented(db: Database) -> None:
    assert not telemetry.is_active()
    assert type(db.session()) is UnitOfWork
    recorder = StepRecorder(db)
    manager = recorder.step(new_uuid7(), "search", {})  # type: ignore[arg-type]
    assert type(manager).__name__ == "_AsyncGeneratorContextManager"


async def test_a_unit_of_work_has_a_span_with_a_client_span_per_repository_call(
    db: Database, exported: Exported, backend: str
) -> None:
    workflow = WorkflowFactory.build(input={"secret": SECRET})
    async with db.session() as uow:
        await uow.workflows.create(workflow)
        assert await uow.workflows.get(workflow.id) is not None
        await uow.step_executions.get_for_workflow(workflow.id)
    spans = exported.finished()
    unit = next(span for span in spans if span.name == "ecl.unit_of_work")
    calls = [span for span in spans if span.kind is SpanKind.CLIENT]
    assert [span.name for span in calls] == [
        "create workflows",
        "get workflows",
        "get_for_workflow step_executions",
    ]
    assert all(span.parent is not None for span in calls)
    assert {span.parent.span_id for span in calls if span.parent} == {unit.context.span_id}
    attributes = unit.attributes or {}
    assert attributes["db.system.name"] == backend
    assert attributes["ecl.unit_of_work.read_only"] is False
    assert attributes["ecl.unit_of_work.outcome"] == "committed"
    first = calls[0].attributes or {}
    assert (first["db.operation.name"], first["db.collection.name"]) == ("create", "workflows")
    assert [(s.attributes or {})["db.response.returned_rows"] for s in calls] == [1, 1, 0]
    for span in spans:
        assert SECRET not in _values(span)
        assert str(workflow.id) not in _values(span), "no bound value in an attribute"


async def test_the_outcome_of_a_unit_read_only_rolled_back_or_failed(
    db: Database, exported: Exported
) -> None:
    async with db.session(read_only=True) as uow:
        await uow.workflows.count_by_state()
    with pytest.raises(NotFoundError):
        async with db.session() as uow:
            await uow.workflows.update_output(new_uuid7(), {"x": 1})  # type: ignore[arg-type]
    units = [s for s in exported.finished() if s.name == "ecl.unit_of_work"]
    outcomes = [
        ((s.attributes or {})["ecl.unit_of_work.outcome"], s.status.status_code) for s in units
    ]
    assert outcomes == [("closed", StatusCode.UNSET), ("rolled_back", StatusCode.ERROR)]
    failed_call = next(s for s in exported.finished() if s.name == "update_output workflows")
    assert (failed_call.attributes or {})["error.type"] == "NotFoundError"
    durations = exported.points("ecl.unit_of_work.duration")
    assert sorted(p.attributes["ecl.unit_of_work.outcome"] for p in durations) == [
        "closed",
        "rolled_back",
    ]
    operations = exported.points("db.client.operation.duration")
    assert {p.attributes["db.operation.name"] for p in operations} == {
        "count_by_state",
        "update_output",
    }


async def test_each_step_attempt_has_a_span_holding_its_units_and_feeds_the_metrics(
    db: Database, exported: Exported
) -> None:
    workflow = WorkflowFactory.build()
    async with db.session() as uow:
        await uow.workflows.create(workflow)
    recorder = StepRecorder(db)
    with pytest.raises(TimeoutError):
        async with recorder.step(workflow.id, "search", {"q": SECRET}):
            raise TimeoutError(SECRET)
    async with recorder.step(workflow.id, "search", {"q": SECRET}) as rec:
        rec.tokens_used = 812
    steps = [s for s in exported.finished() if s.name == "step search"]
    assert [
        (
            (s.attributes or {})["ecl.step.attempt"],
            (s.attributes or {})["ecl.step.state"],
            (s.attributes or {}).get("ecl.step.tokens"),
            s.status.status_code,
        )
        for s in steps
    ] == [(1, "failed", None, StatusCode.ERROR), (2, "succeeded", 812, StatusCode.UNSET)]
    assert (steps[0].attributes or {})["error.type"] == "TimeoutError"
    assert (steps[1].attributes or {})["ecl.workflow.id"] == str(workflow.id)
    assert isinstance((steps[1].attributes or {})["ecl.step.duration_ms"], int)
    step_span = steps[1].context.span_id
    children = [
        s for s in exported.finished()
        if s.name == "ecl.unit_of_work" and s.parent and s.parent.span_id == step_span
    ]  # fmt: skip
    assert len(children) == 2, "the unit that starts the attempt and the one that ends it"
    for span in exported.finished():
        assert SECRET not in _values(span)
        assert all(SECRET not in event.name for event in span.events)
    attempts = {
        p.attributes["ecl.step.state"]: p.value for p in exported.points("ecl.step.attempts")
    }
    assert attempts == {"failed": 1, "succeeded": 1}
    tokens = [(p.attributes["ecl.token.kind"], p.value) for p in exported.points("ecl.step.tokens")]
    assert tokens == [("total", 812)]
    assert sum(p.count for p in exported.points("ecl.step.duration")) == 2


async def test_the_workflow_gauge_reports_the_last_counts_only_when_asked(
    db: Database, exported: Exported
) -> None:
    assert exported.points("ecl.workflow.count") == []
    async with db.session() as uow:
        for _ in range(2):
            await uow.workflows.create(WorkflowFactory.build())
    gauge = telemetry.WorkflowStateGauge(db)
    assert gauge.registered
    assert await gauge.refresh() == {**dict.fromkeys(STATES, 0), "pending": 2}
    counts = {
        p.attributes["ecl.workflow.state"]: p.value for p in exported.points("ecl.workflow.count")
    }
    assert counts == {**dict.fromkeys(STATES, 0), "pending": 2}


async def test_the_gauge_does_nothing_without_an_sdk(db: Database) -> None:
    gauge = telemetry.WorkflowStateGauge(db)
    assert not gauge.registered
    assert await gauge.refresh() == {}


def test_without_the_api_nothing_is_instrumented(monkeypatch: pytest.MonkeyPatch) -> None:
    from ecl_persistence import _telemetry_spans

    monkeypatch.setattr(_telemetry_spans._STATE, "api", None)
    monkeypatch.setattr(_telemetry_spans._STATE, "made", None)
    monkeypatch.setattr(_telemetry_spans._STATE, "idle_until", 0.0)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    assert not telemetry.is_active()
    assert telemetry.unit_of_work_class() is UnitOfWork


def test_importing_the_package_does_not_import_opentelemetry() -> None:
    script = (
        "import sys, ecl_persistence\n"
        "print(any(name.startswith('opentelemetry') for name in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout == "False\n", done.stderr


def test_the_observability_page_example_prints_its_spans(
    capsys: pytest.CaptureFixture[str],
) -> None:
    [script] = [b for b in python_blocks("observability.md") if "asyncio.run(" in b]
    try:
        exec(compile(script, "docs/observability.md", "exec"), {"__name__": "__main__"})
    finally:
        telemetry.instrument()
    assert capsys.readouterr().out.splitlines() == [
        "create workflows",
        "ecl.unit_of_work",
        "start step_executions",
        "ecl.unit_of_work",
        "update_completion step_executions",
        "ecl.unit_of_work",
        "step search",
    ]


async def test_the_gauge_keeps_its_last_counts_when_a_count_fails(
    db: Database,
    exported: Exported,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gauge = telemetry.WorkflowStateGauge(db)
    await gauge.refresh()
    calls: list[int] = []

    async def broken() -> dict[str, int]:
        calls.append(1)
        if len(calls) == 2:
            raise asyncio.CancelledError
        raise ConnectionFailedError("the server went away")

    monkeypatch.setattr(gauge, "refresh", broken)
    with pytest.raises(asyncio.CancelledError):
        await gauge.run(seconds=0)
    assert len(calls) == 2
    assert "could not count workflows by state" in caplog.text
    assert "went away" not in caplog.text
    points = exported.points("ecl.workflow.count")
    assert {p.attributes["ecl.workflow.state"]: p.value for p in points}["pending"] == 0
