"""The payload store: large inputs and outputs, compressed, stored once, and let go.

A payload whose canonical JSON text is longer than the database's
``payload_inline_bytes`` goes to ``payloads`` under its hash; the row keeps
the hash in ``input_ref``/``output_ref`` and, inline, JSON null (input) or
NULL (output), so that no user value can be mistaken for a reference. Reads
need nothing from here: the reference columns select their payload (see
:class:`~ecl_persistence.orm.types.PayloadRef`).

Race-free with purge: a writer locks each payload it refers to (``FOR KEY
SHARE`` of a stored one, or the row it inserts) until it commits; a sweep
locks the candidates ``FOR UPDATE SKIP LOCKED`` (skipping those writers
hold), then deletes, in a statement of its own (a fresh snapshot), those no
committed row refers to. A writer that comes after the sweep's lock waits,
and finds the payload gone and stores it again. SQLite has one writer at a
time, which is enough.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import String, Table, bindparam, exists, or_, select, type_coerce, union

from ecl_persistence.dialects import LockMode
from ecl_persistence.domain import MISSING
from ecl_persistence.orm import PayloadRecord, StepExecutionRecord, WorkflowRecord
from ecl_persistence.orm.payload_codec import (
    CODEC,
    HASH_LENGTH,
    EncodedPayload,
    canonical_text,
    encode_payload,
)
from ecl_persistence.repositories._context import UnitContext

__all__ = ["offload", "offload_many", "referenced_by_workflows", "sweep"]

_P = cast("Table", PayloadRecord.__table__)
_W = cast("Table", WorkflowRecord.__table__)
_S = cast("Table", StepExecutionRecord.__table__)
_REFERRERS = ((_W, "input_ref"), (_W, "output_ref"), (_S, "input_ref"), (_S, "output_ref"))
# The reference columns compared as stored: a PayloadRef selects its payload.
_RAW = {
    (table.name, name): type_coerce(table.c[name], String(HASH_LENGTH))
    for table, name in _REFERRERS
}


def _encoded(limit: int | None, value: Any) -> EncodedPayload | None:
    if limit is None or value is MISSING:
        return None
    text = canonical_text(value)
    if len(text) <= limit:
        return None
    return encode_payload(text)


async def offload_many(
    uow: UnitContext, rows: Sequence[dict[str, Any]], keys: Iterable[str] = ("input", "output")
) -> None:
    """Move the large payloads of ``rows`` (entity values) to the store, in place."""
    limit = uow.payload_inline_bytes
    if limit is None:
        return
    found: dict[str, EncodedPayload] = {}
    for row in rows:
        for key in keys:
            if key not in row:
                continue
            payload = _encoded(limit, row[key])
            if payload is None:
                continue
            found.setdefault(payload.hash, payload)
            row[key] = None if key == "input" else MISSING
            row[f"{key}_ref"] = payload.hash
    if found:
        await _store(uow, found)


async def offload(uow: UnitContext, row: dict[str, Any], *keys: str) -> None:
    """:func:`offload_many` of one row."""
    await offload_many(uow, [row], keys or ("input", "output"))


async def _store(uow: UnitContext, payloads: dict[str, EncodedPayload]) -> None:
    """Hold the payloads already stored until commit; insert (and hold) the others."""
    missing = list(payloads.values())
    if uow.strategy.row_locks:
        # Only the missing ones are sent; the stored ones are held (FOR KEY SHARE).
        stored = select(_P.c.hash).where(_P.c.hash.in_(list(payloads)))
        held = await uow.execute(
            uow.strategy.lock(stored, LockMode.KEY_SHARE), action="hold stored payloads"
        )
        missing = [payloads[h] for h in set(payloads) - {row[0] for row in held}]
    if not missing:
        return
    statement = uow.strategy.insert_or_lock(_P, [_P.c.hash])
    await uow.execute(
        statement,
        [
            {"hash": p.hash, "codec": CODEC, "raw_size": p.raw_size, "data": p.data}
            for p in sorted(missing, key=lambda p: p.hash)
        ],
        action=f"store {len(missing)} payloads",
    )


def referenced_by_workflows(workflow_ids: Any) -> Any:
    """The hashes the workflows ``workflow_ids`` (a subquery of ids) and their attempts refer to."""
    parts = []
    for table, name in _REFERRERS:
        column = _RAW[(table.name, name)]
        owner = table.c.id if table is _W else table.c.workflow_id
        parts.append(select(column).where(owner.in_(workflow_ids), column.is_not(None)))
    return union(*parts)


def _unreferenced() -> Any:
    return ~or_(
        *(exists().where(_RAW[(table.name, name)] == _P.c.hash) for table, name in _REFERRERS)
    )


async def sweep(uow: UnitContext, candidates: Iterable[str]) -> int:
    """Delete those of ``candidates`` (hashes) that no row refers to any more; how many."""
    hashes = sorted(set(candidates))
    if not hashes:
        return 0
    locked = uow.strategy.lock(
        select(_P.c.hash).where(_P.c.hash.in_(bindparam("hashes", expanding=True))),
        LockMode.DELETE_SKIP_LOCKED,
    )
    result = await uow.execute(locked, {"hashes": hashes}, action="lock unreferenced payloads")
    mine = [row[0] for row in result]
    if not mine:
        return 0
    doomed = _P.delete().where(_P.c.hash.in_(bindparam("mine", expanding=True)), _unreferenced())
    deleted = await uow.execute(doomed, {"mine": mine}, action="delete unreferenced payloads")
    return int(getattr(deleted, "rowcount", 0) or 0)
