"""Concurrency limits per key: set, list, remove, and what claims take (``docs/operations.md``)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.factories import (
    at,
    claim_one,
    create_workflows,
    leased_workflow,
    snapshot,
    statements_run,
)

from ecl_persistence import (
    ConcurrencyLimit,
    ConflictError,
    Database,
    LeaseLostError,
    ValidationError,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import utc_now

W = WorkflowState


def keyed(n: int, key: str | None = "k", **fields: object) -> Workflow:
    return Workflow.new("research", {"n": n}, now=at(n), concurrency_key=key, **fields)  # type: ignore[arg-type]


async def test_set_list_and_remove_limits(db: Database) -> None:
    async with db.session() as uow:
        first = await uow.workflows.set_concurrency_limit("k", 2)
        await uow.workflows.set_concurrency_limit("a", 0)
        changed = await uow.workflows.set_concurrency_limit("k", 5)
    assert isinstance(first, ConcurrencyLimit)
    assert (first.key, first.max_running, first.running) == ("k", 2, 0)
    assert changed is not None
    assert changed.max_running == 5
    running = leased_workflow("w1", utc_now() + timedelta(minutes=1), concurrency_key="k")
    await create_workflows(db, running)
    async with db.session(read_only=True) as uow:
        limits = await uow.workflows.concurrency_limits()
    assert [(x.key, x.max_running, x.running) for x in limits] == [("a", 0, 0), ("k", 5, 1)]
    async with db.session() as uow:
        assert await uow.workflows.set_concurrency_limit("k", None) is None
        await uow.workflows.set_concurrency_limit("gone", None)  # removing none is no error
    async with db.session(read_only=True) as uow:
        assert [x.key for x in await uow.workflows.concurrency_limits()] == ["a"]


@pytest.mark.parametrize(
    ("key", "limit"), [("", 1), ("k", -1), ("k", 1.5), ("k", True), ("k", 2**31), ("x" * 256, 1)]
)
async def test_bad_limits_raise_validation_error_and_write_nothing(
    db: Database, key: str, limit: object
) -> None:
    before = await snapshot(db)
    with pytest.raises(ValidationError):
        async with db.session() as uow:
            await uow.workflows.set_concurrency_limit(key, limit)  # type: ignore[arg-type]
    assert await snapshot(db) == before
    with pytest.raises(ValidationError):
        Workflow.new("research", {}, concurrency_key="")


async def test_claims_take_no_more_of_a_key_than_its_limit_and_skip_past_a_full_key(
    db: Database,
) -> None:
    await create_workflows(db, *(keyed(n) for n in range(5)), keyed(9, key=None), keyed(10, "j"))
    async with db.session() as uow:
        await uow.workflows.set_concurrency_limit("k", 2)
    async with db.session() as uow:
        taken = await uow.workflows.claim("w1", limit=10)
    # Two of k (the oldest), and the workflows of other keys or none, in queue order.
    assert [w.input for w in taken] == [{"n": 0}, {"n": 1}, {"n": 9}, {"n": 10}]
    async with db.session() as uow:
        assert await uow.workflows.claim("w2", limit=10) == []
    # One ends: room for one more, the next oldest.
    async with db.session() as uow:
        await uow.workflows.update_state(taken[0].id, W.COMPLETED, lease=taken[0].lease)
    assert (await claim_one(db, "w2", limit=10)).input == {"n": 2}
    # A full key never blocks the queue behind it, with a claim of one.
    await create_workflows(db, keyed(20, key=None))
    assert (await claim_one(db, "w3")).input == {"n": 20}


async def test_claim_by_id_of_a_full_key_raises_a_retryable_conflict(db: Database) -> None:
    first, second = keyed(0), keyed(1)
    await create_workflows(db, first, second)
    async with db.session() as uow:
        await uow.workflows.set_concurrency_limit("k", 1)
    assert (await claim_one(db, "w1")).id == first.id
    before = await snapshot(db)
    with pytest.raises(ConflictError, match="limit") as raised:
        async with db.session() as uow:
            await uow.workflows.claim_by_id(second.id, "w2")
    assert raised.value.retryable
    assert await snapshot(db) == before


async def test_a_limit_of_zero_pauses_a_key_and_a_key_without_limit_is_free(db: Database) -> None:
    paused = [keyed(n, "paused") for n in range(2)]
    await create_workflows(db, *paused, *(keyed(n, "free") for n in range(2, 5)))
    async with db.session() as uow:
        await uow.workflows.set_concurrency_limit("paused", 0)
        taken = await uow.workflows.claim("w1", limit=10)
    assert {w.concurrency_key for w in taken} == {"free"}
    assert len(taken) == 3


async def test_an_expired_lease_does_not_count_and_is_not_renewed_for_a_keyed_workflow(
    db: Database,
) -> None:
    now = utc_now()
    stale = leased_workflow("w1", now - timedelta(seconds=1), concurrency_key="k")
    free = leased_workflow("w1", now - timedelta(seconds=1))
    waiting = keyed(0)
    await create_workflows(db, stale, free, waiting)
    async with db.session() as uow:
        await uow.workflows.set_concurrency_limit("k", 1)
    before = await snapshot(db)
    assert stale.lease is not None
    with pytest.raises(LeaseLostError):
        async with db.session() as uow:
            await uow.workflows.heartbeat(stale.id, "w1", now=now, lease=stale.lease)
    assert await snapshot(db) == before
    # Without a key, an expired lease nobody took is still renewed.
    async with db.session() as uow:
        await uow.workflows.heartbeat(free.id, "w1", now=now, lease=free.lease)
    # The stale lease does not count: one of k may be claimed, and only one.
    async with db.session() as uow:
        taken = await uow.workflows.claim("w2", now=now, limit=5, definition_ids=["research"])
    assert [w.concurrency_key for w in taken] == ["k"]


async def test_a_claim_of_workflows_without_a_key_runs_no_statement_more(db: Database) -> None:
    await create_workflows(db, keyed(0, key=None), keyed(1, key="k"))
    async with db.session() as uow:
        await uow.workflows.set_concurrency_limit("k", 1)
    with statements_run(db) as keyless:
        await claim_one(db, "w1")
    with statements_run(db) as with_key:
        await claim_one(db, "w1")
    # The keyed claim locks the limit and counts the running workflows of its key.
    assert len(with_key) == len(keyless) + 2
