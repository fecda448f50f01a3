"""Traces and metrics through the OpenTelemetry API (the ``otel`` extra); the SDK is yours.

Without ``opentelemetry-api``, or with it but no SDK configured (no tracer
or meter provider set), nothing is emitted and a unit of work or a step
costs one check of the providers. Once the application configures an SDK:

- a span per unit of work (``ecl.unit_of_work``: ``db.system.name``,
  read-only or not, its outcome), and in it a CLIENT span per repository call
  (``{method} {table}``: ``db.operation.name``, ``db.collection.name``,
  ``db.response.returned_rows``), following the semantic conventions of
  database client spans; never a payload, a password or a bound value;
- a span per step attempt recorded by :class:`~ecl_persistence.StepRecorder`
  (``step {step id}``: workflow id, step id, attempt, state, duration, tokens);
- metrics: ``ecl.step.attempts`` (by state), ``ecl.step.tokens`` (by kind),
  ``ecl.step.duration``, ``ecl.unit_of_work.duration``,
  ``db.client.operation.duration``, and, only when asked for
  (:class:`WorkflowStateGauge`, it queries), ``ecl.workflow.count`` by state.

While no SDK is configured the providers are looked at again at most once
a second, so an SDK configured after the first unit of work is noticed
within a second; :func:`instrument` takes effect at once.

Tokens by model and cost come with the token and cost ledger (tool issue 16):
:func:`_usage_attributes` is where they plug in.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from ecl_persistence import _telemetry_spans as spans
from ecl_persistence.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from ecl_persistence.database import Database
    from ecl_persistence.recorder import StepRecording

__all__ = ["WorkflowStateGauge", "instrument", "is_active", "observed_step", "unit_of_work_class"]

_P = ParamSpec("_P")
_S = TypeVar("_S")


def instrument(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Emit through these providers instead of OpenTelemetry's global ones.

    For applications that keep their providers out of the globals, and for
    tests. ``instrument()`` with neither goes back to the globals.
    """
    spans.use(tracer_provider, meter_provider)


def is_active() -> bool:
    """Whether anything is emitted: the API is installed and a provider is configured."""
    return spans.instruments() is not None


def unit_of_work_class() -> type[UnitOfWork]:
    """The class :meth:`Database.session` makes: the traced one while telemetry is active."""
    if spans.instruments() is None:
        return UnitOfWork
    from ecl_persistence._telemetry_units import TracedUnitOfWork

    return TracedUnitOfWork


def observed_step(
    step: Callable[Concatenate[_S, _P], AbstractAsyncContextManager[StepRecording]],
) -> Callable[Concatenate[_S, _P], AbstractAsyncContextManager[StepRecording]]:
    """Decorate ``StepRecorder.step``: a span and the step metrics around each attempt."""

    @functools.wraps(step)
    def observed(
        self: _S, /, *args: _P.args, **kwargs: _P.kwargs
    ) -> AbstractAsyncContextManager[StepRecording]:
        manager = step(self, *args, **kwargs)
        found = spans.instruments()
        return manager if found is None else _ObservedStep(manager, found)

    return observed


class _ObservedStep:
    """The attempt's span is current while its block runs, so its units of work are children."""

    __slots__ = ("_instruments", "_manager", "_recording", "_started", "_tracked")

    def __init__(
        self, manager: AbstractAsyncContextManager[StepRecording], found: spans.Instruments
    ) -> None:
        self._manager = manager
        self._instruments = found
        self._recording: StepRecording | None = None
        self._tracked: spans.Tracked | None = None
        self._started = 0.0

    async def __aenter__(self) -> StepRecording:
        tracked = self._tracked = spans.start(self._instruments, "step", kind="internal")
        try:
            recording = self._recording = await self._manager.__aenter__()
        except BaseException as error:
            tracked.end(error)
            raise
        execution = recording.execution
        tracked.span.update_name(f"step {execution.step_id}")
        tracked.span.set_attributes(
            {
                "ecl.workflow.id": str(execution.workflow_id),
                "ecl.step.id": execution.step_id,
                "ecl.step.attempt": execution.attempt,
            }
        )
        self._started = time.monotonic()
        return recording

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tracked, recording = self._tracked, self._recording
        assert tracked is not None
        assert recording is not None
        failure = exc
        try:
            return await self._manager.__aexit__(exc_type, exc, tb)
        except BaseException as error:
            failure = error
            raise
        finally:
            execution = recording.execution
            state = execution.state.value
            seconds = time.monotonic() - self._started
            found = self._instruments
            attributes = {"ecl.step.state": state}
            found.attempts.add(1, attributes)
            found.step_duration.record(seconds, attributes)
            usage = _usage_attributes(execution)
            for kind, count in usage.pop("tokens").items():
                found.tokens.add(count, {"ecl.token.kind": kind, **usage})
            tracked.span.set_attributes(
                {
                    "ecl.step.state": state,
                    "ecl.step.duration_ms": execution.duration_ms or round(seconds * 1000),
                    **(
                        {"ecl.step.tokens": execution.tokens_used}
                        if execution.tokens_used is not None
                        else {}
                    ),
                    **usage,
                }
            )
            tracked.end(failure)


def _usage_attributes(execution: Any) -> dict[str, Any]:
    """Tokens by kind (``{"tokens": {kind: count}}``) and the model and cost, where known.

    Today an attempt records one total (kind ``total``). The token and cost
    ledger (tool issue 16) records tokens by kind and model and a cost: map
    them here to ``gen_ai.request.model`` and ``ecl.step.cost``.
    """
    tokens = {} if execution.tokens_used is None else {"total": execution.tokens_used}
    return {"tokens": tokens}


class WorkflowStateGauge:
    """The opt-in observable gauge ``ecl.workflow.count``: workflows by state.

    It queries the database, so nothing reports it unless you make one:
    :meth:`refresh` counts (one ``GROUP BY``), and the gauge reports the last
    counts when the SDK collects; :meth:`run` refreshes every ``seconds``
    until cancelled. Without an active SDK no gauge is registered and
    :meth:`refresh` does not query.
    """

    def __init__(self, db: Database, *, definition_id: str | None = None) -> None:
        self._db = db
        self._definition_id = definition_id
        self._counts: dict[str, int] = {}
        found = spans.instruments()
        self.registered = found is not None
        """Whether the gauge was registered with an active meter provider."""
        if found is not None:
            found.meter.create_observable_gauge(
                "ecl.workflow.count",
                callbacks=[self._observe],
                unit="{workflow}",
                description="Workflows by state, as last counted by WorkflowStateGauge.refresh.",
            )

    def _observe(self, options: Any) -> Iterable[Any]:
        return spans.observations(self._counts)

    async def refresh(self) -> dict[str, int]:
        """Count the workflows by state now; the gauge reports these counts until the next one."""
        if not self.registered:
            return {}
        async with self._db.session(read_only=True) as uow:
            counts = await uow.workflows.count_by_state(self._definition_id)
        self._counts = {state.value: count for state, count in counts.items()}
        return dict(self._counts)

    async def run(self, seconds: float = 60.0) -> None:
        """Refresh every ``seconds`` until cancelled; a failed count keeps the last one."""
        from ecl_persistence.errors import DbError

        while True:
            try:
                await self.refresh()
            except DbError:
                spans.log_failure("count workflows by state")
            await asyncio.sleep(seconds)
