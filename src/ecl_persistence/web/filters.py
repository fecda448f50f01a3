"""The query parameters of the dashboard, checked before anything reaches the database.

Anything malformed raises :class:`BadRequest`, which the app turns into a
400 page (or a JSON error under ``/api``) that names the parameter, never
echoing its value.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from urllib.parse import urlencode

import attrs

from ecl_persistence.cli.times import parse_instant
from ecl_persistence.domain import MAX_ID_LENGTH, WorkflowId, WorkflowState
from ecl_persistence.web.usage import MAX_DAYS

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "BadRequest",
    "ListFilters",
    "UsageWindow",
    "list_filters",
    "usage_window",
    "workflow_id",
]

DEFAULT_LIMIT = 25
MAX_LIMIT = 200
_MAX_CURSOR = 200
_DEFAULT_DAYS = 30


class BadRequest(Exception):
    """A parameter the dashboard cannot use; the message names it (not its value)."""


@attrs.frozen
class ListFilters:
    """The filters and page of the workflow list, with the texts they came from (for links)."""

    state: WorkflowState | None = None
    definition_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    texts: tuple[tuple[str, str], ...] = ()
    """The filter parameters as given (not the cursor), to repeat in the next page's link."""

    def link(self, cursor: str | None = None) -> str:
        """The query string of this listing at ``cursor`` (the first page without one)."""
        pairs = list(self.texts)
        if cursor is not None:
            pairs.append(("cursor", cursor))
        return "?" + urlencode(pairs) if pairs else "?"

    def given(self, name: str) -> str:
        """The text given for the filter ``name``, or ``""`` (to refill the form)."""
        return dict(self.texts).get(name, "")


@attrs.frozen
class UsageWindow:
    """The days the costs page sums: from ``since`` (inclusive) to ``until`` (exclusive)."""

    since: datetime
    until: datetime
    texts: tuple[tuple[str, str], ...] = ()

    def given(self, name: str) -> str:
        """The text given for ``name``, or ``""``."""
        return dict(self.texts).get(name, "")


def _single(params: Mapping[str, Sequence[str]], allowed: set[str]) -> dict[str, str]:
    """One value per parameter; unknown or repeated parameters are refused; empty ones dropped."""
    values: dict[str, str] = {}
    for name, given in params.items():
        if name not in allowed:
            raise BadRequest(f"unknown parameter {name[:40]!r}: expected one of {sorted(allowed)}")
        if len(given) != 1:
            raise BadRequest(f"parameter {name!r} is given more than once")
        if given[0].strip():
            values[name] = given[0].strip()
    return values


def _instant(values: dict[str, str], name: str, now: datetime) -> datetime | None:
    if name not in values:
        return None
    try:
        return parse_instant(values[name], now)
    except ValueError as error:
        raise BadRequest(f"{name}: {error}") from None


def _texts(values: dict[str, str], names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return tuple((name, values[name]) for name in names if name in values)


def list_filters(params: Mapping[str, Sequence[str]], now: datetime) -> ListFilters:
    """Check the parameters of ``/`` and ``/api/workflows``."""
    names = ("state", "definition", "since", "until", "limit")
    values = _single(params, {*names, "cursor"})
    state = None
    if "state" in values:
        try:
            state = WorkflowState(values["state"])
        except ValueError:
            choices = ", ".join(s.value for s in WorkflowState)
            raise BadRequest(f"state must be one of {choices}") from None
    definition = values.get("definition")
    if definition is not None and (len(definition) > MAX_ID_LENGTH or "\x00" in definition):
        raise BadRequest(f"definition must be at most {MAX_ID_LENGTH} characters, without NUL")
    limit = DEFAULT_LIMIT
    if "limit" in values:
        text = values["limit"]
        if not (text.isascii() and text.isdigit() and len(text) <= 3) or not (
            1 <= int(text) <= MAX_LIMIT
        ):
            raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}")
        limit = int(text)
    cursor = values.get("cursor")
    if cursor is not None and len(cursor) > _MAX_CURSOR:
        raise BadRequest("cursor is not one this dashboard issued")
    since, until = _instant(values, "since", now), _instant(values, "until", now)
    if since is not None and until is not None and since >= until:
        raise BadRequest("since must be before until")
    return ListFilters(state, definition, since, until, limit, cursor, _texts(values, names))


def usage_window(params: Mapping[str, Sequence[str]], now: datetime) -> UsageWindow:
    """Check the parameters of ``/costs`` and ``/api/usage``: the last 30 days by default."""
    values = _single(params, {"since", "until"})
    until = _instant(values, "until", now) or now
    since = _instant(values, "since", now) or until - timedelta(days=_DEFAULT_DAYS - 1)
    if since >= until:
        raise BadRequest("since must be before until")
    if until - since > timedelta(days=MAX_DAYS):
        raise BadRequest(f"the window is at most {MAX_DAYS} days")
    return UsageWindow(since, until, _texts(values, ("since", "until")))


def workflow_id(text: str) -> WorkflowId:
    """The workflow id of a path; refused unless it is a UUID."""
    try:
        return WorkflowId(uuid.UUID(text))
    except ValueError:
        raise BadRequest("the path does not name a workflow id (a UUID)") from None
