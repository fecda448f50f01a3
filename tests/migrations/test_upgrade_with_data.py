"""Migrating a database that holds data: every row survives, on both backends, from every revision.

For each revision before the head, a database is built at that revision,
filled with realistic data in raw SQL (hundreds of workflows with their
steps, artifacts and, where the revision has them, transitions), upgraded to
head, and read back raw, column by column. Then it is taken back down to that
revision and up again: the tables both revisions have keep their data. On
SQLite, where revision 0002 rebuilds ``workflows``, no child row may be lost
to a cascade and ``PRAGMA foreign_key_check`` must stay empty.
"""

from __future__ import annotations

import pytest
from tests.migrations.live_data import (
    ADDED,
    SCHEMAS,
    STEPS_PER_WORKFLOW,
    WORKFLOWS,
    Dump,
    Rows,
    Schema,
    added_values,
    dump,
    earlier_revisions,
    foreign_key_problems,
    insert_rows,
    revisions,
    sample_rows,
)

from ecl_persistence import Database, WorkflowState
from ecl_persistence.domain import decode_json
from ecl_persistence.migrations import current_revision, downgrade, head_revision, upgrade

HEAD = head_revision()


def test_every_revision_describes_its_tables_for_these_tests() -> None:
    assert revisions()[-1] == HEAD
    missing = [revision for revision in revisions() if revision not in SCHEMAS]
    assert not missing, f"describe the tables of revision(s) {missing} in live_data.SCHEMAS"


async def _filled(db: Database, revision: str) -> tuple[Rows, Dump]:
    """Migrate ``db`` to ``revision``, fill it, and dump what it holds."""
    await upgrade(db.engine, revision)
    rows = sample_rows()
    await insert_rows(db.engine, revision, rows)
    before = await dump(db.engine, SCHEMAS[revision])
    assert len(before["workflows"]) == WORKFLOWS
    assert len(before["step_executions"]) == WORKFLOWS * STEPS_PER_WORKFLOW
    return rows, before


async def _assert_intact(db: Database, schema: Schema, expected: Dump) -> None:
    assert await dump(db.engine, schema) == expected
    assert await foreign_key_problems(db.engine) == []


@pytest.mark.parametrize("revision", earlier_revisions())
async def test_upgrade_to_head_keeps_every_row_unchanged(
    empty_database_url: str, revision: str
) -> None:
    async with Database.from_url(empty_database_url) as db:
        rows, before = await _filled(db, revision)

        await db.migrate()

        assert await current_revision(db.engine) == HEAD
        await _assert_intact(db, SCHEMAS[revision], before)
        added = await added_values(db.engine, revision, HEAD)
        assert added == {column: {ADDED[column]} for column in added}
        for table in SCHEMAS[HEAD].keys() - SCHEMAS[revision].keys():
            # New tables start empty: nothing is made up for rows stored before.
            assert (await dump(db.engine, {table: SCHEMAS[HEAD][table]}))[table] == []

        # The repositories of today read every upgraded row back as it was written.
        expected = [row for row in rows["workflows"] if row["definition_id"] == "definition-3"]
        async with db.session(read_only=True) as uow:
            stored = {w.id: w for w in await uow.workflows.list_by_definition("definition-3")}
            steps = await uow.step_executions.get_for_workflow(expected[0]["id"])
        assert len(stored) == len(expected)
        for row in expected:
            workflow = stored[row["id"]]
            assert (workflow.state.value, workflow.version, workflow.created_at) == (
                row["state"],
                row["version"],
                row["created_at"],
            )
            assert workflow.input == decode_json(row["input"])
        assert [step.attempt for step in steps] == [1, 2, 3]


@pytest.mark.parametrize("revision", earlier_revisions())
async def test_downgrade_then_upgrade_keeps_the_data_both_revisions_have(
    empty_database_url: str, revision: str
) -> None:
    async with Database.from_url(empty_database_url) as db:
        _rows, before = await _filled(db, revision)
        await db.migrate()
        await _assert_intact(db, SCHEMAS[revision], before)
        # Work done at head: state changes (with their transitions) and a new workflow.
        async with db.session() as uow:
            for workflow in await uow.workflows.list_by_state(WorkflowState.PENDING, limit=20):
                await uow.workflows.update_state(workflow.id, WorkflowState.RUNNING, actor="w-1")
        shared = SCHEMAS[revision]
        at_head = await dump(db.engine, shared)

        await downgrade(db.engine, revision)
        assert await current_revision(db.engine) == revision
        await _assert_intact(db, shared, at_head)

        await db.migrate()
        await _assert_intact(db, shared, at_head)
        async with db.session() as uow:
            claimed = await uow.workflows.claim("w-2", limit=5)
            assert claimed
            for workflow in claimed:
                # Each claim is recorded, whatever history the workflow brought along.
                last = (await uow.workflows.history(workflow.id))[-1]
                assert (last.to_state, last.actor, last.version) == (
                    WorkflowState.RUNNING,
                    "w-2",
                    workflow.version,
                )


async def test_the_sample_rows_are_what_the_repositories_of_today_would_store(
    empty_database_url: str,
) -> None:
    rows = sample_rows()
    async with Database.from_url(empty_database_url) as db:
        await db.migrate()
        await insert_rows(db.engine, HEAD, rows)
        async with db.session(read_only=True) as uow:
            for row in rows["workflows"][:12]:
                workflow = await uow.workflows.get(row["id"])
                assert workflow is not None
                history = await uow.workflows.history(workflow.id)
                assert history[-1].to_state is workflow.state
                assert [t.version for t in history] == list(range(1, workflow.version + 1))
                assert workflow.lease_owner == row["lease_owner"]
