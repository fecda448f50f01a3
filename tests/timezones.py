"""``tzinfo`` objects that misbehave, for the tests of what refuses them."""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import Any


class OddTz(tzinfo):
    """A ``tzinfo`` whose ``utcoffset()`` returns ``offset`` as given: a day or more, an int..."""

    def __init__(self, offset: Any) -> None:
        self._offset = offset

    def utcoffset(self, dt: datetime | None) -> Any:
        return self._offset

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "odd"


class RaisingTz(tzinfo):
    """A ``tzinfo`` whose every method raises ``RuntimeError(message)``."""

    def __init__(self, message: str = "broken tzinfo") -> None:
        self._message = message

    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError(self._message)

    def dst(self, dt: datetime | None) -> timedelta:
        raise RuntimeError(self._message)

    def tzname(self, dt: datetime | None) -> str:
        raise RuntimeError(self._message)
