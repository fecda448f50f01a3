"""Times as ``ecl-db`` and ``ecl-db serve`` show and read them: UTC, to the millisecond.

Nothing here imports click or rich, so the web dashboard shares it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ["clock_ms", "format_ms", "instant_ms", "parse_instant"]

_AGO = re.compile(r"^(\d{1,6})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_LONGEST = 40


def instant_ms(value: datetime | None) -> str:
    """``2024-05-01 12:00:00.123`` (UTC), or ``-`` for ``None``."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def format_ms(milliseconds: int | None) -> str:
    """``-``, ``850 ms``, ``12.3 s`` or ``4 min 05 s``."""
    if milliseconds is None:
        return "-"
    if milliseconds < 1000:
        return f"{milliseconds} ms"
    if milliseconds < 60_000:
        return f"{milliseconds / 1000:.1f} s"
    minutes, seconds = divmod(milliseconds // 1000, 60)
    return f"{minutes} min {seconds:02d} s"


def clock_ms(value: datetime) -> str:
    """``12:00:00.123`` (UTC): a time within a day, to the millisecond."""
    return value.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]


def parse_instant(text: str, now: datetime) -> datetime:
    """An aware UTC instant from ``text``: ISO 8601, or an age before ``now``.

    ISO 8601 is a date (``2024-05-01``, midnight UTC) or a date and time
    (``2024-05-01T12:00``, ``2024-05-01 12:00:00.250+02:00``); one without an
    offset is UTC. An age is a number and a unit, ``90s``, ``15m``, ``12h``,
    ``7d`` or ``2w``, and means that long before ``now``. Raises
    :class:`ValueError` with a message that does not repeat the text.
    """
    value = text.strip()
    if not value or len(value) > _LONGEST:
        raise ValueError(_EXPECTED)
    ago = _AGO.match(value)
    if ago is not None:
        amount, unit = ago.groups()
        return now - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(_EXPECTED) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


_EXPECTED = (
    "expected an ISO 8601 date or time in UTC (2024-05-01, 2024-05-01T12:00:00) "
    "or an age (90s, 15m, 12h, 7d, 2w)"
)
