"""The cheapest way to build ecl's domain objects, for the contenders that are not ecl.

Every contender returns the same objects (ecl's frozen attrs classes), so the
comparison measures the persistence layers and not object construction: the
raw drivers and the peer layers all build them here, the way a hand-written
fast path would, by filling the slots of an uninitialised instance without
the constructor's validation. ecl-persistence builds its own objects through
its public read path, which also refuses corrupt rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import attrs

from ecl_persistence import ExecutionStats, StepExecution, Workflow
from ecl_persistence.domain import MISSING, JsonValue, Missing, Page

__all__ = ["execution_stats", "json_or_missing", "page", "step_execution", "workflow"]

_T = TypeVar("_T")


def _filler(cls: type[_T]) -> Callable[..., _T]:
    """A function taking ``cls``'s fields positionally and returning an instance of it.

    Fields left out at the end get their defaults: a field added to the domain
    later reads as its default until the contenders select it (and the
    benchmark's check that every contender returns the same objects says so).
    """
    fields = attrs.fields(cast("Any", cls))
    names = tuple(field.name for field in fields)
    defaults = tuple(
        field.default.factory() if isinstance(field.default, attrs.Factory) else field.default  # type: ignore[arg-type]
        for field in fields
    )
    setter = object.__setattr__
    new = object.__new__

    def fill(*values: Any) -> _T:
        instance = new(cls)
        for name, value in zip(names, values, strict=False):
            setter(instance, name, value)
        for name, default in zip(names[len(values) :], defaults[len(values) :], strict=True):
            setter(instance, name, default)
        return instance

    return fill


workflow: Callable[..., Workflow] = _filler(Workflow)
"""``workflow(id, definition_id, state, ..., version)``: fields in declaration order."""
step_execution: Callable[..., StepExecution] = _filler(StepExecution)
"""``step_execution(id, workflow_id, ..., metadata)``: fields in declaration order."""
execution_stats: Callable[..., ExecutionStats] = _filler(ExecutionStats)
"""``execution_stats(total, succeeded, failed, duration_ms, tokens)``."""
_page: Callable[..., Page[Any]] = _filler(Page)


def page(items: list[_T], next_cursor: str | None) -> Page[_T]:
    """A page of ``items``."""
    return _page(tuple(items), next_cursor)


def json_or_missing(value: JsonValue) -> JsonValue | Missing:
    """A nullable JSON column read by a layer that decodes JSON itself: NULL is MISSING.

    Such a layer cannot tell SQL NULL from JSON ``null``; the benchmark's data
    never stores JSON ``null``, so the two mean the same here.
    """
    return MISSING if value is None else value
