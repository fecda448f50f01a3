"""How often a step is tried, and how long a worker waits between its attempts."""

from __future__ import annotations

import math
from typing import Any

import attrs

from ecl_persistence.domain import MAX_ATTEMPT
from ecl_persistence.errors import ValidationError

__all__ = ["Retry"]


def _attempts(instance: Retry, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or not 1 <= value <= MAX_ATTEMPT:
        raise ValidationError(f"max_attempts must be an integer from 1 to {MAX_ATTEMPT}")


def _seconds(minimum: float) -> Any:
    def validate(instance: Retry, attribute: attrs.Attribute[Any], value: object) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < minimum
        ):
            raise ValidationError(
                f"{attribute.name} must be a finite number of at least {minimum:g}"
            )

    return validate


@attrs.frozen
class Retry:
    """A step's retry policy: up to ``max_attempts`` attempts, waiting longer after each failure.

    After the step's *n*-th failure the next attempt waits ``delay_seconds *
    backoff ** (n - 1)`` seconds, at most ``max_delay_seconds``. The failures
    counted are those of the step's whole stored history, whichever worker
    ran them: an attempt that failed with an exception counts; one
    interrupted by a crash, a lost lease or a shutdown does not (its attempt
    number is used all the same). Invalid values raise ValidationError.
    """

    max_attempts: int = attrs.field(default=3, validator=_attempts)
    """Attempts in all, the first included: 1 means no retry."""
    delay_seconds: float = attrs.field(default=1.0, validator=_seconds(0.0))
    """The wait after the first failure."""
    backoff: float = attrs.field(default=2.0, validator=_seconds(1.0))
    """What each further failure multiplies the wait by (1 keeps it constant)."""
    max_delay_seconds: float = attrs.field(default=300.0, validator=_seconds(0.0))
    """The longest wait between two attempts."""

    def delay_after(self, failures: int) -> float:
        """The wait, in seconds, before the attempt that follows the ``failures``-th failure."""
        if type(failures) is not int or failures < 1:
            raise ValidationError("failures must be a positive integer")
        try:
            delay = self.delay_seconds * self.backoff ** (failures - 1)
        except OverflowError:
            return float(self.max_delay_seconds)
        return float(min(delay, self.max_delay_seconds))


ONE_ATTEMPT = Retry(max_attempts=1)
"""``retry=None``: the step is tried once."""
