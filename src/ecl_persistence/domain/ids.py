"""Identifier types and the UUIDv7 generator.

Ids are UUIDv7 (RFC 9562): the leading 48 bits are a Unix timestamp in
milliseconds, so ids made later sort later and B-tree inserts stay near the
right edge of the index instead of scattering across it.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from typing import NewType

__all__ = [
    "MAX_ID_LENGTH",
    "ArtifactId",
    "StepExecutionId",
    "StepId",
    "WorkflowId",
    "new_uuid7",
    "not_a_uuid",
    "parse_uuid",
]

WorkflowId = NewType("WorkflowId", uuid.UUID)
"""The id of a workflow: a UUIDv7.

A ``NewType``: for type checkers only. ``WorkflowId(value)`` returns
``value`` unchanged at run time, so ``WorkflowId("0190...")`` is still a
``str``; every method that takes an id parses such text itself (see
:func:`parse_uuid`). To hold a real UUID, write ``WorkflowId(uuid.UUID(text))``.
"""
StepExecutionId = NewType("StepExecutionId", uuid.UUID)
"""The id of one attempt at a step: a UUIDv7."""
ArtifactId = NewType("ArtifactId", uuid.UUID)
"""The id of an artifact record: a UUIDv7."""
StepId = NewType("StepId", str)
"""The name of a step within its workflow definition, such as ``"search"``."""

#: The longest string id (definition id, step id, artifact name) accepted, in characters.
MAX_ID_LENGTH = 255

# The text of a UUID as str() writes it, or its 32 hex digits alone; nothing
# else uuid.UUID() would also take (braces, "urn:uuid:", dashes anywhere,
# underscores or a sign, which int() lets through).
_UUID_TEXT = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32}"
)

_TIMESTAMP_MASK = (1 << 48) - 1
_COUNTER_MAX = (1 << 12) - 1
# A fresh millisecond seeds the counter with 11 random bits, not 12, so at
# least 2048 further ids fit in that millisecond before the counter overflows.
_COUNTER_SEED_BITS = 11


class _Uuid7Clock:
    """The last timestamp and counter handed out, shared by all threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0

    def next(self) -> tuple[int, int]:
        """Return a (milliseconds, counter) pair greater than every earlier one."""
        with self._lock:
            now_ms = time.time_ns() // 1_000_000
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                self._counter = secrets.randbits(_COUNTER_SEED_BITS)
            else:
                # Same millisecond, or the wall clock stepped back: keep the
                # last timestamp so ids never go backwards within the process.
                self._counter += 1
                if self._counter > _COUNTER_MAX:
                    self._last_ms += 1
                    self._counter = secrets.randbits(_COUNTER_SEED_BITS)
            return self._last_ms, self._counter


_clock = _Uuid7Clock()


def new_uuid7() -> uuid.UUID:
    """Return a new RFC 9562 version 7 UUID.

    The layout is a 48-bit Unix timestamp in milliseconds, the version (7), a
    12-bit counter in ``rand_a``, the RFC 4122 variant bits and 62 random bits.
    Within one process the ids are strictly increasing, even when many are made
    in the same millisecond or the wall clock steps back; across processes
    they are ordered to the millisecond.
    """
    unix_ms, counter = _clock.next()
    value = (
        (unix_ms & _TIMESTAMP_MASK) << 80
        | 0x7 << 76
        | counter << 64
        | 0b10 << 62
        | secrets.randbits(62)
    )
    return uuid.UUID(int=value)


def parse_uuid(value: object) -> uuid.UUID | None:
    """``value`` as a UUID: a :class:`uuid.UUID` itself, or the text of one; else ``None``.

    The text is the canonical 36-character form (``str(uuid)``, in either
    case) or the 32 hex digits without dashes.
    """
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str) and _UUID_TEXT.fullmatch(value) is not None:
        return uuid.UUID(value)
    return None


def not_a_uuid(value: object, name: str) -> str:
    """Why ``value``, which :func:`parse_uuid` refused, is not an id; never quotes it."""
    if isinstance(value, str):
        return (
            f"{name} is not a UUID: expected 32 hex digits, with or without the dashes of "
            f"str(uuid), got a text of {len(value)} characters"
        )
    return f"{name} must be a UUID or its text, not {type(value).__name__}"
