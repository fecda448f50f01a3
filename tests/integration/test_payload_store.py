"""The payload store: large inputs and outputs compressed, stored once, read back as they were.

On both backends: identical payloads stored once, the inline limit's edges,
reads through every repository, delete and purge leaving no orphan (and
keeping a payload another row still refers to), damaged stored bytes
refused naming the payload by hash, never its content. On PostgreSQL: a
writer adding a reference to a payload while a purge lets it go.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest
import zstandard
from sqlalchemy import LargeBinary, bindparam, text
from tests.factories import StepExecutionFactory, WorkflowFactory, at, raw_execute, raw_scalar

from ecl_persistence import (
    Database,
    SerializationError,
    StepExecution,
    StepExecutionState,
    Workflow,
    WorkflowState,
)
from ecl_persistence.domain import JsonValue, StepId, utc_now

LIMIT = 1024
SECRET = "sensitive-conversation-text"


def _big(n: int = 0, size: int = 4 * LIMIT) -> dict[str, JsonValue]:
    """A payload well over the limit: a conversation, the same for the same ``n``."""
    turns: list[JsonValue] = [f"{SECRET} turn {i} of {n}" for i in range(size // 32)]
    return {"system": "You are helpful. " * 20, "turns": turns}


def _hash(value: JsonValue) -> str:
    canonical = json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@pytest.fixture
async def store(database_url: str) -> Any:
    database = Database.from_url(database_url, payload_inline_bytes=LIMIT)
    yield database
    await database.dispose()


async def _payload_count(db: Database) -> int:
    return int(await raw_scalar(db, "SELECT count(*) FROM payloads"))


async def _raw_refs(db: Database, table: str) -> list[tuple[Any, ...]]:
    async with db.engine.connect() as connection:
        rows = await connection.execute(text(f"SELECT input_ref, output_ref FROM {table}"))
        return [tuple(row) for row in rows]


async def test_ten_identical_inputs_are_stored_once_and_read_back_everywhere(
    store: Database,
) -> None:
    payload = _big(1)
    workflow = WorkflowFactory.build(input=payload)
    executions = [
        StepExecutionFactory.build(workflow_id=workflow.id, step_id=f"s{n}", input=payload)
        for n in range(8)
    ]
    async with store.session() as uow:
        await uow.workflows.create(workflow)
        await uow.step_executions.create_many(executions)
        started = await uow.step_executions.start(workflow.id, "s8", payload)
    async with store.session() as uow:
        done = await uow.step_executions.update_completion(
            started.id, StepExecutionState.SUCCEEDED, output=payload
        )
        await uow.workflows.update_output(workflow.id, payload)
    # One input of the workflow, nine of attempts, two outputs: one payload row.
    assert await _payload_count(store) == 1
    assert await raw_scalar(store, "SELECT hash FROM payloads") == _hash(payload)
    assert done.output == payload
    assert done.input == payload
    async with store.session(read_only=True) as uow:
        stored = await uow.workflows.get(workflow.id)
        assert stored is not None
        assert (stored.input, stored.output) == (payload, payload)
        listed = (await uow.workflows.list()).items
        assert [w.input for w in listed] == [payload]
        aggregate = await uow.workflows.load(workflow.id)
        assert aggregate is not None
        assert all(e.input == payload for e in aggregate.step_executions)
        assert len(aggregate.step_executions) == 9
        assert (await uow.step_executions.get(done.id)) == done
        for execution in await uow.step_executions.get_for_workflow(workflow.id):
            assert execution.input == payload
        (again,) = await uow.step_executions.get_for_step(workflow.id, "s8")
        assert again.output == payload
        latest = await uow.step_executions.latest_attempts(workflow.id)
        assert latest[StepId("s8")].output == payload
    # The rows keep the reference, not the payload: no user value is taken for one.
    refs = await _raw_refs(store, "step_executions")
    assert {ref for ref, _ in refs} == {_hash(payload)}
    raw_input = await raw_scalar(
        store, f"SELECT input FROM step_executions WHERE id = '{_id(store, done.id)}'"
    )
    assert json.loads(raw_input) is None if isinstance(raw_input, str) else raw_input is None


def _id(db: Database, value: Any) -> str:
    return value.hex if db.dialect == "sqlite" else str(value)


async def test_a_claim_returns_the_stored_input(store: Database) -> None:
    payload = _big(2)
    await _create(store, WorkflowFactory.build(input=payload))
    async with store.session() as uow:
        (claimed,) = await uow.workflows.claim("w1")
    assert claimed.input == payload


async def _create(db: Database, *workflows: Workflow) -> None:
    async with db.session() as uow:
        for workflow in workflows:
            await uow.workflows.create(workflow)


def _of_size(size: int) -> str:
    """A JSON string whose text (with its quotes) is ``size`` bytes."""
    return "x" * (size - 2)


async def test_the_inline_limit_exactly_at_and_one_byte_over(store: Database) -> None:
    at_limit, over = _of_size(LIMIT), _of_size(LIMIT + 1)
    inline = WorkflowFactory.build(input=at_limit)
    stored = WorkflowFactory.build(input=over)
    await _create(store, inline, stored)
    assert await _payload_count(store) == 1
    refs = dict(
        zip(
            [inline.id, stored.id],
            [await _ref_of(store, w) for w in (inline, stored)],
            strict=True,
        )
    )
    assert refs[inline.id] is None
    assert refs[stored.id] == _hash(over)
    async with store.session(read_only=True) as uow:
        assert (await uow.workflows.get(inline.id)).input == at_limit  # type: ignore[union-attr]
        assert (await uow.workflows.get(stored.id)).input == over  # type: ignore[union-attr]


async def _ref_of(db: Database, workflow: Workflow) -> Any:
    return await raw_scalar(
        db,
        f"SELECT input_ref FROM workflows WHERE id = '{_id(db, workflow.id)}'",
    )


async def test_without_the_store_every_payload_stays_inline(database_url: str) -> None:
    async with Database.from_url(database_url, payload_inline_bytes=None) as db:
        await _create(db, WorkflowFactory.build(input=_big(3)))
        assert await _payload_count(db) == 0


async def test_delete_lets_go_of_payloads_no_row_refers_to_any_more(store: Database) -> None:
    shared, own = _big(4), _big(5)
    first = WorkflowFactory.build(input=shared, state=WorkflowState.COMPLETED, completed_at=at(1))
    second = WorkflowFactory.build(input=shared)
    await _create(store, first, second)
    async with store.session() as uow:
        await uow.step_executions.create(
            StepExecutionFactory.build(workflow_id=first.id, input=own, output=own)
        )
    assert await _payload_count(store) == 2
    async with store.session() as uow:
        await uow.workflows.delete(first.id)
    # Its own payload went; the shared one stays for the workflow still using it.
    assert await raw_scalar(store, "SELECT hash FROM payloads") == _hash(shared)
    async with store.session() as uow:
        assert (await uow.workflows.get(second.id)).input == shared  # type: ignore[union-attr]
        await uow.workflows.delete(second.id)
    assert await _payload_count(store) == 0


async def test_purge_leaves_no_orphan_payload(store: Database) -> None:
    old = utc_now() - timedelta(days=30)
    done = [
        WorkflowFactory.build(
            input=_big(n), state=WorkflowState.COMPLETED, completed_at=old, output=_big(100 + n)
        )
        for n in range(5)
    ]
    kept = WorkflowFactory.build(input=_big(0))  # shares the input of done[0]
    await _create(store, *done, kept)
    async with store.session() as uow:
        await uow.step_executions.create_many(
            StepExecutionFactory.build(workflow_id=w.id, input=_big(200 + n))
            for n, w in enumerate(done)
        )
    assert await _payload_count(store) == 15
    assert await store.purge(finished_before=utc_now(), batch_size=2) == 5
    assert await raw_scalar(store, "SELECT hash FROM payloads") == _hash(_big(0))
    async with store.session(read_only=True) as uow:
        assert (await uow.workflows.get(kept.id)).input == _big(0)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "damage",
    ["not zstd at all", "valid zstd of other content", "valid zstd of text that is not JSON"],
)
async def test_corrupt_stored_bytes_raise_serialization_error_naming_the_payload(
    store: Database, damage: str
) -> None:
    payload = _big(6)
    workflow = WorkflowFactory.build(input=payload)
    await _create(store, workflow)
    data = {
        "not zstd at all": b"\x00garbage\xff" * 10,
        "valid zstd of other content": zstandard.ZstdCompressor().compress(b'{"other":1}'),
        "valid zstd of text that is not JSON": zstandard.ZstdCompressor().compress(b"{nope"),
    }[damage]
    async with store.engine.begin() as connection:
        await connection.execute(
            text("UPDATE payloads SET data = :data").bindparams(
                bindparam("data", data, type_=LargeBinary())
            )
        )
    digest = _hash(payload)
    async with store.session(read_only=True) as uow:
        with pytest.raises(SerializationError) as refused:
            await uow.workflows.get(workflow.id)
        with pytest.raises(SerializationError):
            await uow.workflows.load(workflow.id)
    message = str(refused.value)
    assert digest in message
    assert SECRET not in message
    assert "other" not in message


async def test_a_payload_gone_from_the_store_is_reported_by_hash(store: Database) -> None:
    workflow = WorkflowFactory.build(input=_big(7))
    await _create(store, workflow)
    await raw_execute(store, "DELETE FROM payloads")
    async with store.session(read_only=True) as uow:
        with pytest.raises(SerializationError, match=f"payload {_hash(_big(7))} is missing"):
            await uow.workflows.get(workflow.id)


@pytest.mark.postgresql
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("writer_first", [True, False], ids=["writer-first", "delete-first"])
async def test_a_writer_adding_a_reference_while_delete_lets_the_payload_go(
    store: Database, writer_first: bool
) -> None:
    """Both orders of a writer and a delete on the same payload: it is never lost."""
    shared = _big(8)
    doomed = WorkflowFactory.build(input=shared)
    survivor = WorkflowFactory.build()
    await _create(store, doomed, survivor)
    attempt = StepExecution.start(survivor.id, "answer", shared)
    writer_holds, deleter_holds = asyncio.Event(), asyncio.Event()
    release_writer, release_deleter = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        if not writer_first:
            await deleter_holds.wait()
        async with store.session() as uow:
            await uow.step_executions.create(attempt)
            writer_holds.set()
            await release_writer.wait()

    async def deleter() -> None:
        if writer_first:
            await writer_holds.wait()
        async with store.session() as uow:
            await uow.workflows.delete(doomed.id)
            deleter_holds.set()
            await release_deleter.wait()

    tasks = [asyncio.create_task(writer()), asyncio.create_task(deleter())]
    await asyncio.sleep(0.5)
    if writer_first:
        # The delete did not wait for the writer: it skipped the payload the writer holds.
        assert writer_holds.is_set()
        assert deleter_holds.is_set()
        release_deleter.set()
        await asyncio.sleep(0.1)
        release_writer.set()
    else:
        # The writer waits for the delete's lock on the payload, then stores it again.
        assert deleter_holds.is_set()
        assert not writer_holds.is_set()
        release_deleter.set()
        release_writer.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    async with store.session(read_only=True) as uow:
        stored = await uow.step_executions.get(attempt.id)
        assert await uow.workflows.get(doomed.id) is None
    assert stored is not None
    assert stored.input == shared
    assert await _payload_count(store) == 1
