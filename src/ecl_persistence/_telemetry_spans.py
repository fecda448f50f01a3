"""The OpenTelemetry side of :mod:`ecl_persistence.telemetry`: providers, instruments, spans.

The API is imported on first use, so ``import ecl_persistence`` does not
load it. A provider that the API itself defines (its proxy or its no-op)
means nobody configured an SDK: then :func:`instruments` is ``None`` and
the callers emit nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import attrs

__all__ = [
    "RECHECK_SECONDS",
    "Instruments",
    "Tracked",
    "instruments",
    "log_failure",
    "observations",
    "start",
    "use",
]

_log = logging.getLogger("ecl_persistence.telemetry")
_NAME = "ecl_persistence"
_API_MODULES = ("opentelemetry.trace", "opentelemetry.metrics")
_SECONDS = "s"
RECHECK_SECONDS = 1.0
"""How soon an SDK configured after the first unit of work is noticed, at the latest."""
# Buckets for durations of milliseconds to minutes, as the DB semantic conventions advise.
_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)


@attrs.define
class Instruments:
    """The tracer and the metric instruments, made once per pair of providers."""

    tracer: Any
    meter: Any
    attempts: Any
    tokens: Any
    step_duration: Any
    unit_duration: Any
    operation_duration: Any


@attrs.define
class _State:
    tracer_provider: Any = None
    meter_provider: Any = None
    made: Instruments | None = None
    idle_until: float = 0.0
    """Until when (monotonic) no provider is known to be configured: no need to look again."""
    api: Any = None
    """The API's ``trace``, ``metrics`` and ``context`` modules; False without the API."""


_STATE = _State()


def use(tracer_provider: Any, meter_provider: Any) -> None:
    """Use these providers (``None``: the global ones); the instruments are made again."""
    _STATE.tracer_provider, _STATE.meter_provider = tracer_provider, meter_provider
    _STATE.made = None
    _STATE.idle_until = 0.0


def _api() -> Any:
    if _STATE.api is None:
        try:
            from opentelemetry import context, metrics, trace
        except ImportError:
            _STATE.api = False
        else:
            _STATE.api = (trace, metrics, context)
    return _STATE.api


def _placeholder(provider: Any) -> bool:
    return type(provider).__module__.startswith(_API_MODULES)


def instruments() -> Instruments | None:
    """The instruments, or ``None`` while no SDK (no real provider) is configured.

    Once made they stay: OpenTelemetry's global providers are set only once.
    While there are none, the providers are looked at again at most every
    :data:`RECHECK_SECONDS`: the check on every unit of work is a clock read.
    """
    made = _STATE.made
    if made is not None:
        return made
    now = time.monotonic()
    if now < _STATE.idle_until:
        return None
    api = _api()
    if api is False:
        _STATE.idle_until = now + RECHECK_SECONDS
        return None
    trace, metrics, _context = api
    tracer_provider = _STATE.tracer_provider or trace.get_tracer_provider()
    meter_provider = _STATE.meter_provider or metrics.get_meter_provider()
    if _placeholder(tracer_provider) and _placeholder(meter_provider):
        _STATE.idle_until = now + RECHECK_SECONDS
        return None
    from ecl_persistence import __version__

    tracer = tracer_provider.get_tracer(_NAME, __version__)
    meter = meter_provider.get_meter(_NAME, __version__)
    made = _STATE.made = Instruments(
        tracer=tracer,
        meter=meter,
        attempts=meter.create_counter(
            "ecl.step.attempts", unit="{attempt}", description="Step attempts, by final state."
        ),
        tokens=meter.create_counter(
            "ecl.step.tokens", unit="{token}", description="LLM tokens of step attempts, by kind."
        ),
        step_duration=meter.create_histogram(
            "ecl.step.duration",
            unit=_SECONDS,
            description="Wall time of step attempts.",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        ),
        unit_duration=meter.create_histogram(
            "ecl.unit_of_work.duration",
            unit=_SECONDS,
            description="From entering a unit of work to its commit or rollback.",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        ),
        operation_duration=meter.create_histogram(
            "db.client.operation.duration",
            unit=_SECONDS,
            description="Duration of repository calls (database client operations).",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        ),
    )
    return made


@attrs.define
class Tracked:
    """A started span that is the current one until :meth:`end`."""

    span: Any
    token: Any

    def end(self, error: BaseException | None = None) -> None:
        """Record ``error`` (its type, never its message), end the span, restore the context."""
        trace, _metrics, context = _api()
        if error is not None:
            self.span.set_attribute("error.type", type(error).__qualname__)
            self.span.set_status(trace.Status(trace.StatusCode.ERROR))
        self.span.end()
        context.detach(self.token)


def start(found: Instruments, name: str, *, kind: str, attributes: Any = None) -> Tracked:
    """Start a span of ``kind`` (``internal`` or ``client``) and make it the current one."""
    trace, _metrics, context = _api()
    span = found.tracer.start_span(
        name,
        kind=trace.SpanKind.CLIENT if kind == "client" else trace.SpanKind.INTERNAL,
        attributes=attributes,
    )
    token = context.attach(trace.set_span_in_context(span))
    return Tracked(span, token)


def observations(counts: dict[str, int]) -> Iterable[Any]:
    """One gauge observation per state."""
    from opentelemetry.metrics import Observation

    return [Observation(count, {"ecl.workflow.state": state}) for state, count in counts.items()]


def log_failure(action: str) -> None:
    """Log, without the error's text, that a telemetry query failed."""
    _log.warning("telemetry: could not %s; keeping the last figures", action)
