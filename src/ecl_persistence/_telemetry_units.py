"""The unit of work while telemetry is active: its span, and a span per repository call.

:meth:`Database.session` makes this subclass only while an SDK is
configured (:func:`ecl_persistence.telemetry.unit_of_work_class`); otherwise
the plain :class:`UnitOfWork` runs, untouched.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

from ecl_persistence import _telemetry_spans as spans
from ecl_persistence.domain import Page
from ecl_persistence.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from ecl_persistence.config import DatabaseConfig

__all__ = ["TracedUnitOfWork"]


def _connection_attributes(config: DatabaseConfig, system: str) -> dict[str, Any]:
    """Where the unit's database is (semantic conventions), never a user name or password."""
    url = config.async_url
    attributes: dict[str, Any] = {"db.system.name": system, "db.system": system}
    if url.database:
        attributes["db.namespace"] = url.database
    if url.host:
        attributes["server.address"] = url.host
    if url.port:
        attributes["server.port"] = url.port
    return attributes


def _returned_rows(result: object) -> int | None:
    if result is None:
        return 0
    if isinstance(result, Page):
        return len(result.items)
    if isinstance(result, list | tuple | dict):
        return len(result)
    if isinstance(result, bool | int):
        return None
    return 1


class TracedUnitOfWork(UnitOfWork):
    """A :class:`UnitOfWork` that reports itself and its repository calls to OpenTelemetry."""

    __slots__ = ("_attributes", "_instruments", "_started", "_tracked")

    def __init__(self, factory: Any, config: DatabaseConfig, **options: Any) -> None:
        super().__init__(factory, config, **options)
        found = spans.instruments()
        assert found is not None, "made only while telemetry is active"
        self._instruments = found
        self._attributes = _connection_attributes(config, self.dialect)
        self._tracked: spans.Tracked | None = None
        self._started = 0.0
        self.workflows = cast(Any, _TracedRepository(self.workflows, "workflows", self))
        self.step_executions = cast(
            Any, _TracedRepository(self.step_executions, "step_executions", self)
        )
        self.artifacts = cast(Any, _TracedRepository(self.artifacts, "artifacts", self))

    async def __aenter__(self) -> Self:
        attributes = {**self._attributes, "ecl.unit_of_work.read_only": self.read_only}
        tracked = spans.start(self._instruments, "ecl.unit_of_work", kind="internal",
                              attributes=attributes)  # fmt: skip
        self._started = time.monotonic()
        try:
            await super().__aenter__()
        except BaseException as error:
            self._finish(tracked, "refused", error)
            raise
        self._tracked = tracked
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tracked, self._tracked = self._tracked, None
        try:
            await super().__aexit__(exc_type, exc, tb)
        except BaseException as error:
            if tracked is not None:
                self._finish(tracked, "failed", error)
            raise
        if tracked is not None:
            clean = "closed" if self.read_only else "committed"
            self._finish(tracked, clean if exc is None else "rolled_back", exc)

    def _finish(self, tracked: spans.Tracked, outcome: str, error: BaseException | None) -> None:
        tracked.span.set_attribute("ecl.unit_of_work.outcome", outcome)
        attributes = {
            "db.system.name": self._attributes["db.system.name"],
            "ecl.unit_of_work.read_only": self.read_only,
            "ecl.unit_of_work.outcome": outcome,
        }
        self._instruments.unit_duration.record(time.monotonic() - self._started, attributes)
        tracked.end(error)

    def traced_call(self, table: str, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        """``method`` of a repository, wrapped in a client span and the operation histogram."""

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            attributes: Mapping[str, Any] = {
                **self._attributes,
                "db.operation.name": name,
                "db.collection.name": table,
            }
            tracked = spans.start(
                self._instruments, f"{name} {table}", kind="client", attributes=attributes
            )
            started = time.monotonic()
            metric = {
                "db.system.name": attributes["db.system.name"],
                "db.operation.name": name,
                "db.collection.name": table,
            }
            try:
                result = await method(*args, **kwargs)
            except BaseException as error:
                metric["error.type"] = type(error).__qualname__
                self._instruments.operation_duration.record(time.monotonic() - started, metric)
                tracked.end(error)
                raise
            rows = _returned_rows(result)
            if rows is not None:
                tracked.span.set_attribute("db.response.returned_rows", rows)
            self._instruments.operation_duration.record(time.monotonic() - started, metric)
            tracked.end()
            return result

        return call


class _TracedRepository:
    """A repository whose public coroutine methods run inside a client span."""

    __slots__ = ("_inner", "_table", "_unit")

    def __init__(self, inner: object, table: str, unit: TracedUnitOfWork) -> None:
        self._inner = inner
        self._table = table
        self._unit = unit

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attribute):
            return attribute
        return self._unit.traced_call(self._table, name, attribute)
