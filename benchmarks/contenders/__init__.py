"""The persistence layers compared: ecl-persistence, the raw drivers and two peers."""

from __future__ import annotations

from benchmarks.contenders.base import Contender, Target

__all__ = ["Contender", "Target", "all_contenders"]


def all_contenders(dialect: str) -> list[Contender]:
    """One of each contender for ``dialect``, ecl-persistence first and the raw driver second."""
    # Imported here: the peers' packages are installed only for the benchmarks.
    from benchmarks.contenders.advanced import AdvancedAlchemy
    from benchmarks.contenders.ecl import EclPersistence
    from benchmarks.contenders.naive import NaiveOrm
    from benchmarks.contenders.raw import raw_driver

    return [EclPersistence(), raw_driver(dialect), NaiveOrm(), AdvancedAlchemy()]
