"""Concurrency limits: at most so many running workflows of one concurrency key."""

from __future__ import annotations

from datetime import datetime

import attrs

from ecl_persistence.domain import _fields
from ecl_persistence.domain.ids import MAX_ID_LENGTH
from ecl_persistence.domain.payload import check_text
from ecl_persistence.errors import ValidationError

__all__ = ["MAX_RUNNING", "ConcurrencyLimit", "check_concurrency_key", "check_max_running"]

#: The highest limit accepted (a 32-bit column).
MAX_RUNNING = 2**31 - 1


def check_concurrency_key(value: object) -> str:
    """Refuse a concurrency key that is not a non-empty string of at most 255 characters."""
    return check_text(value, field="concurrency_key", max_length=MAX_ID_LENGTH)


def check_max_running(value: object) -> int:
    """Refuse a limit that is not an integer from 0 to :data:`MAX_RUNNING`."""
    if type(value) is not int or not 0 <= value <= MAX_RUNNING:
        raise ValidationError(f"max_running must be an integer from 0 to {MAX_RUNNING}")
    return value


@attrs.frozen
class ConcurrencyLimit:
    """The limit of one concurrency key, and how many of its workflows run now.

    ``max_running`` is the most workflows of ``key`` that claims let run at
    once with a live lease (0 pauses the key); ``running`` is how many did
    when the limit was read; ``updated_at`` is when the limit was last set.
    """

    key: str = attrs.field(converter=check_concurrency_key)
    max_running: int = attrs.field(converter=check_max_running)
    updated_at: datetime = attrs.field(
        converter=_fields.utc_datetime, validator=_fields.aware_utc()
    )
    running: int = attrs.field(default=0, validator=_fields.integer(minimum=0))
