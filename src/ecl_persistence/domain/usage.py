"""What LLM calls used and cost: token usage per attempt, prices, and ledger rows.

Amounts are :class:`~decimal.Decimal` end to end, in one currency (the
caller's), with :data:`COST_PLACES` decimal places: what the database stores
exactly on both backends. Prices are the caller's data; the package holds none.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import attrs

from ecl_persistence.domain import _fields
from ecl_persistence.domain.ids import MAX_ID_LENGTH
from ecl_persistence.domain.payload import check_text
from ecl_persistence.errors import ValidationError

__all__ = [
    "COST_PLACES",
    "MAX_COST",
    "Price",
    "PriceBook",
    "TokenUsage",
    "UsageRow",
    "check_cost",
    "check_model",
]

#: The decimal places of a stored cost: a millionth of the currency unit.
COST_PLACES = 6
#: The bound (exclusive) of the cost of one attempt: 10**12, below 2**63 millionths.
MAX_COST = Decimal(10**12)
_QUANTUM = Decimal(1).scaleb(-COST_PLACES)
_MTOK = Decimal(1_000_000)
_INT64_MAX = _fields.INT64_MAX


def check_cost(
    value: object, name: str = "cost", *, maximum: Decimal | None = MAX_COST
) -> Decimal | None:
    """``value`` as a cost: None, or a finite non-negative Decimal below :data:`MAX_COST`.

    An ``int`` is taken as a whole amount; a ``float`` (inexact) or a value
    with more than :data:`COST_PLACES` decimal places is refused with
    ValidationError, as is anything else. The message never quotes the value.
    """
    if value is None:
        return None
    if type(value) is int:
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise ValidationError(f"{name} must be a Decimal, not {type(value).__name__}")
    if not value.is_finite() or value < 0 or (maximum is not None and value >= maximum):
        raise ValidationError(f"{name} must be a finite Decimal from 0 to below {maximum}")
    try:
        exact = value.quantize(_QUANTUM)
    except InvalidOperation:
        raise ValidationError(f"{name} has too many digits") from None
    if exact != value:
        raise ValidationError(f"{name} has more than {COST_PLACES} decimal places")
    return exact


def check_model(value: object) -> str | None:
    """``value`` as a model name: None, or text of 1 to 255 characters without NUL."""
    if value is None:
        return None
    return check_text(value, field="model", max_length=MAX_ID_LENGTH)


def _total(instance: TokenUsage, attribute: attrs.Attribute[Any], value: int) -> None:
    total = instance.input_tokens + instance.output_tokens + instance.cached_tokens + value
    if total > _INT64_MAX:
        raise ValidationError("the total of the token counts must fit in 64 bits")


@attrs.frozen
class TokenUsage:
    """The tokens one LLM call used, by kind; each a non-negative 64-bit integer.

    ``input_tokens`` are the prompt tokens billed at the input price,
    ``cached_tokens`` those read from the provider's cache (billed apart),
    ``output_tokens`` the completion's, ``reasoning_tokens`` the reasoning
    a provider reports apart from the output. The kinds do not overlap, so
    :attr:`total` is their sum (and fits in 64 bits).
    """

    input_tokens: int = attrs.field(default=0, validator=_fields.integer(minimum=0))
    output_tokens: int = attrs.field(default=0, validator=_fields.integer(minimum=0))
    cached_tokens: int = attrs.field(default=0, validator=_fields.integer(minimum=0))
    reasoning_tokens: int = attrs.field(default=0, validator=[_fields.integer(minimum=0), _total])

    @property
    def total(self) -> int:
        """Every token of the call: the sum of the four kinds."""
        return self.input_tokens + self.output_tokens + self.cached_tokens + self.reasoning_tokens


def _price(value: object) -> Decimal:
    if type(value) is int:
        value = Decimal(value)
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise ValidationError("a price must be a finite non-negative Decimal (or int)")
    return value


def _optional_price(value: object) -> Decimal | None:
    return None if value is None else _price(value)


@attrs.frozen
class Price:
    """What a model costs per million tokens of each kind, in the caller's currency.

    ``cached_per_mtok`` defaults to the input price, ``reasoning_per_mtok``
    to the output price. Prices are ``Decimal`` (or ``int``); a ``float``
    is refused, since it cannot hold most prices exactly.
    """

    input_per_mtok: Decimal = attrs.field(converter=_price)
    output_per_mtok: Decimal = attrs.field(converter=_price)
    cached_per_mtok: Decimal | None = attrs.field(default=None, converter=_optional_price)
    reasoning_per_mtok: Decimal | None = attrs.field(default=None, converter=_optional_price)

    def cost(self, usage: TokenUsage) -> Decimal:
        """The cost of ``usage`` at these prices, rounded half-even to :data:`COST_PLACES`."""
        cached = self.input_per_mtok if self.cached_per_mtok is None else self.cached_per_mtok
        reasoning = (
            self.output_per_mtok if self.reasoning_per_mtok is None else self.reasoning_per_mtok
        )
        amount = (
            usage.input_tokens * self.input_per_mtok
            + usage.output_tokens * self.output_per_mtok
            + usage.cached_tokens * cached
            + usage.reasoning_tokens * reasoning
        ) / _MTOK
        return amount.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)


class PriceBook(Mapping[str, Price]):
    """The prices of the models a caller uses: ``PriceBook({"model-name": Price(...)})``.

    Given to the :class:`~ecl_persistence.Database` (or a
    :class:`~ecl_persistence.Worker`), it fills in the cost of an attempt
    that records its usage and model but no cost. A model missing from the
    book leaves the cost empty, never zero.
    """

    __slots__ = ("_prices",)

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        checked: dict[str, Price] = {}
        for model, price in (prices or {}).items():
            name = check_model(model)
            if not isinstance(price, Price):
                raise ValidationError("every price of a PriceBook must be a Price")
            checked[name] = price  # type: ignore[index]
        self._prices = checked

    def __getitem__(self, model: str) -> Price:
        return self._prices[model]

    def __iter__(self) -> Iterator[str]:
        return iter(self._prices)

    def __len__(self) -> int:
        return len(self._prices)

    def __repr__(self) -> str:
        return f"PriceBook({sorted(self._prices)!r})"

    def cost(self, model: str | None, usage: TokenUsage | None) -> Decimal | None:
        """The cost of ``usage`` with ``model``; None without usage, model or price for it."""
        if model is None or usage is None:
            return None
        price = self._prices.get(model)
        return None if price is None else price.cost(usage)


@attrs.frozen
class UsageRow:
    """One row of the ledger (:meth:`StepExecutionRepository.usage`).

    ``key`` is the group: the model (None for attempts without one), the
    definition id, the UTC day as ``YYYY-MM-DD``, or None when not grouped.
    ``attempts`` counts the attempts, ``recorded`` those that recorded a
    usage; the token sums are over those; ``cost`` is the sum of the
    attempts that have one, None when none has.
    """

    key: str | None
    attempts: int
    recorded: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost: Decimal | None

    @property
    def total_tokens(self) -> int:
        """Every token of the group: the sum of the four kinds."""
        return self.input_tokens + self.output_tokens + self.cached_tokens + self.reasoning_tokens
