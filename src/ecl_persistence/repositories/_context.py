"""What a repository needs from its unit of work, and nothing more."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Executable, Result

from ecl_persistence.dialects import DialectStrategy
from ecl_persistence.domain import PriceBook

__all__ = ["UnitContext"]


class UnitContext(Protocol):
    """The door a repository goes through: one transaction, translated errors, its rules.

    :class:`~ecl_persistence.UnitOfWork` is one; a test can bring another.
    """

    @property
    def strategy(self) -> DialectStrategy:
        """The dialect strategy of the database: the statements that differ ask it."""
        ...

    @property
    def max_payload_bytes(self) -> int:
        """The size limit of one JSON payload."""
        ...

    @property
    def payload_inline_bytes(self) -> int | None:
        """Inputs and outputs whose JSON text is longer go to the payload store (None: never)."""
        ...

    @property
    def price_book(self) -> PriceBook | None:
        """The prices that fill in a missing cost (None: costs only as given)."""
        ...

    def require_writable(self, action: str) -> None:
        """Raise TransactionFailedError if ``action`` would write where writes are refused."""
        ...

    def keep_fresh(self, record_class: type[Any], row: Sequence[Any]) -> None:
        """After a write through rows: the entity the session holds for ``row``, if any, gets it.

        ``row`` holds every column of ``record_class``'s table, in table order.
        """
        ...

    async def execute(
        self,
        statement: Executable,
        params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        action: str,
    ) -> Result[Any]:
        """Execute ``statement`` in the transaction; ``action`` names it in error messages."""
        ...
