"""Amounts on SQLite: 64-bit counts of millionths, exact where NUMERIC would keep floats."""

from __future__ import annotations

from decimal import Decimal

__all__ = ["money_from_micros", "money_to_micros"]


_MICROS = Decimal(1_000_000)
_SIX = Decimal("0.000001")


def money_to_micros(value: Decimal | None) -> int | None:
    """Bind an amount as its count of millionths."""
    return None if value is None else int(value * _MICROS)


def money_from_micros(value: object) -> Decimal | None:
    """Read a count of millionths (or a sum, ``units:millionths``) back as an amount."""
    if value is None:
        return None
    if type(value) is str and ":" in value:
        # A sum (see money_sum): whole units and millionths.
        units, micros = value.split(":", 1)
        try:
            return Decimal(int(units)) + (Decimal(int(micros)) / _MICROS).quantize(_SIX)
        except ValueError:
            return value  # type: ignore[return-value]
    if type(value) is not int:
        # Not a count of millionths (a hand-made UPDATE): the mapper names the row.
        return value  # type: ignore[return-value]
    return (Decimal(value) / _MICROS).quantize(_SIX)
