"""Summaries the repositories return: statistics over attempts, pages of listings."""

from __future__ import annotations

from decimal import Decimal
from typing import Generic, TypeVar

import attrs

from ecl_persistence.domain import _fields
from ecl_persistence.domain.usage import check_cost

__all__ = ["ExecutionStats", "Page"]

_T = TypeVar("_T")


def _total_cost(value: Decimal | None) -> Decimal | None:
    return check_cost(value, "total_cost", maximum=None)


@attrs.frozen
class ExecutionStats:
    """Totals over the step executions of a workflow.

    Instances are frozen and every count is a non-negative 64-bit integer.
    ``total_cost`` is the sum of the attempts' costs, None when none has one.
    """

    total_executions: int = attrs.field(validator=_fields.integer(minimum=0))
    succeeded_count: int = attrs.field(validator=_fields.integer(minimum=0))
    failed_count: int = attrs.field(validator=_fields.integer(minimum=0))
    total_duration_ms: int = attrs.field(validator=_fields.integer(minimum=0))
    total_tokens: int = attrs.field(validator=_fields.integer(minimum=0))
    total_cost: Decimal | None = attrs.field(default=None, converter=_total_cost)

    @classmethod
    def empty(cls) -> ExecutionStats:
        """Return the statistics of a workflow without executions: all zero."""
        return cls(0, 0, 0, 0, 0)


@attrs.frozen
class Page(Generic[_T]):
    """One page of a listing.

    ``items`` is always a tuple (any iterable given is copied into one), so a
    page is frozen all the way down to its item references. ``next_cursor``
    is the opaque cursor to pass for the following page, or None when this
    is the last page.
    """

    items: tuple[_T, ...] = attrs.field(converter=_fields.to_tuple)
    next_cursor: str | None = attrs.field(validator=_fields.optional_str)
