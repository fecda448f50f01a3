"""Migrations: empty to head and back, one linear history, models and scripts agree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url
from tests.factories import REPOSITORY, persist_artifact, persist_step, persist_workflow

from ecl_persistence import ConstraintViolationError, Database, MigrationFailedError
from ecl_persistence.dialects import SQLITE
from ecl_persistence.migrations import (
    alembic_config,
    alembic_ini_path,
    current_revision,
    downgrade,
    head_revision,
    script_location,
)

TABLES = {
    "workflows",
    "step_executions",
    "artifacts",
    "workflow_transitions",
    "concurrency_limits",
    "payloads",
}
SECRET = "Migr4tion-Secret"


def _schema(connection: Connection) -> dict[str, Any]:
    inspector = inspect(connection)
    tables = set(inspector.get_table_names()) - {"alembic_version"}
    return {
        "tables": tables,
        "foreign_keys": {
            (
                t,
                fk["referred_table"],
                tuple(fk["constrained_columns"]),
                fk["options"].get("ondelete"),
            )
            for t in tables
            for fk in inspector.get_foreign_keys(t)
        },
        "indexes": {i["name"] for t in tables for i in inspector.get_indexes(t)},
        "unique": {u["name"] for t in tables for u in inspector.get_unique_constraints(t)},
    }


async def _inspect(db: Database) -> dict[str, Any]:
    async with db.engine.connect() as connection:
        return await connection.run_sync(_schema)


async def test_upgrade_from_empty_creates_tables_keys_and_indexes(empty_database_url: str) -> None:
    async with Database.from_url(empty_database_url) as db:
        assert await current_revision(db.engine) is None
        await db.migrate()
        await db.migrate()  # idempotent
        assert await current_revision(db.engine) == head_revision()
        schema = await _inspect(db)
    assert schema["tables"] == TABLES
    assert {(t, r, c, (d or "").upper()) for t, r, c, d in schema["foreign_keys"]} == {
        ("step_executions", "workflows", ("workflow_id",), "CASCADE"),
        ("artifacts", "workflows", ("workflow_id",), "CASCADE"),
        ("workflow_transitions", "workflows", ("workflow_id",), "CASCADE"),
    }
    assert {
        "ix_workflows_state_created_at_id",
        "ix_workflows_definition_id_created_at_id",
        "ix_workflows_created_at_id",
        "ix_workflows_claimable_priority_created_at_id",
        "ix_workflows_state_completed_at",
        "ix_step_executions_workflow_id_started_at",
        "ix_artifacts_workflow_id_created_at",
        "ix_workflows_running_concurrency_key",
    } <= schema["indexes"]
    # Revision 0004 replaced the queue's index of 0002 by one in priority order.
    assert "ix_workflows_claimable_created_at_id" not in schema["indexes"]
    assert {
        "uq_step_executions_workflow_id_step_id_attempt",
        "uq_artifacts_workflow_id_step_id_name",
        "uq_workflows_definition_id_idempotency_key",
        "uq_workflow_transitions_workflow_id_version",
    } <= schema["unique"]


async def test_downgrade_to_base_then_upgrade_again(empty_database_url: str) -> None:
    async with Database.from_url(empty_database_url) as db:
        await db.migrate()
        await downgrade(db.engine, "base")
        assert (await _inspect(db))["tables"] == set()
        assert await current_revision(db.engine) is None
        await db.migrate()
        assert (await _inspect(db))["tables"] == TABLES
        async with db.session() as uow:
            await persist_workflow(uow)


def _check(connection: Connection) -> None:
    command.check(alembic_config(connection))


async def test_models_and_migrations_agree(empty_database_url: str) -> None:
    async with Database.from_url(empty_database_url) as db:
        await db.migrate()
        async with db.engine.connect() as connection:
            await connection.run_sync(_check)


def test_history_is_linear_with_one_head() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    assert len(scripts.get_heads()) == 1
    assert len(scripts.get_bases()) == 1
    for revision in scripts.walk_revisions():
        assert not revision.is_merge_point
        assert not revision.is_branch_point


def test_revision_scripts_never_import_the_live_package() -> None:
    for script in (script_location() / "versions").glob("*.py"):
        assert "ecl_persistence" not in script.read_text(), script.name


async def test_unknown_revision_raises_migration_failed(empty_database_url: str) -> None:
    async with Database.from_url(empty_database_url) as db:
        with pytest.raises(MigrationFailedError):
            await db.migrate("no-such-revision")


def _rebuild_workflows(connection: Connection, switch_off: bool) -> None:
    context = MigrationContext.configure(connection, opts={"render_as_batch": True})
    operations = Operations(context)

    def rebuild() -> None:
        with (
            connection.begin(),
            operations.batch_alter_table("workflows", recreate="always") as batch,
        ):
            batch.alter_column("error", existing_type=None, nullable=True)

    if switch_off:
        with SQLITE.migration_guard(connection):
            rebuild()
    else:
        rebuild()


async def _children(db: Database) -> tuple[int, int]:
    async with db.engine.connect() as connection:
        steps = (await connection.execute(text("SELECT count(*) FROM step_executions"))).scalar()
        artifacts = (await connection.execute(text("SELECT count(*) FROM artifacts"))).scalar()
    return int(steps or 0), int(artifacts or 0)


@pytest.mark.parametrize("switch_off", [True, False], ids=["fk-off", "fk-on-control"])
async def test_sqlite_table_rebuild_keeps_children_only_with_foreign_keys_off(
    tmp_path: Path, switch_off: bool
) -> None:
    async with Database.from_url(f"sqlite:///{tmp_path / 'rebuild.db'}") as db:
        await db.migrate()
        async with db.session() as uow:
            workflow = await persist_workflow(uow)
            await persist_step(uow, workflow)
            await persist_artifact(uow, workflow)
        async with db.engine.connect() as connection:
            await connection.run_sync(_rebuild_workflows, switch_off)
        # The control shows the danger is real: with foreign keys on, the
        # rebuild's DROP TABLE cascades and the children are gone.
        assert await _children(db) == ((1, 1) if switch_off else (0, 0))


def _run_alembic(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(alembic_ini_path()), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=REPOSITORY,
        timeout=120,
        check=False,
    )


def _with_password(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return url
    return parsed.set(password=SECRET).render_as_string(hide_password=False)


async def test_alembic_command_migrates_from_ecl_database_url(empty_database_url: str) -> None:
    url = _with_password(empty_database_url)
    upgraded = _run_alembic("upgrade", "head", env={"ECL_DATABASE_URL": url})
    assert upgraded.returncode == 0, upgraded.stderr
    current = _run_alembic("current", env={"ECL_DATABASE_URL": url})
    assert head_revision() in current.stdout
    for output in (upgraded.stdout, upgraded.stderr, current.stdout, current.stderr):
        assert SECRET not in output
    async with Database.from_url(empty_database_url) as db:
        assert (await _inspect(db))["tables"] == TABLES


def test_alembic_command_without_a_url_says_which_setting_to_use() -> None:
    env = {"ECL_DATABASE_URL": ""}
    result = _run_alembic("upgrade", "head", env=env)
    assert result.returncode != 0
    assert "ECL_DATABASE_URL" in result.stderr


def test_alembic_offline_mode_renders_sql_for_both_dialects() -> None:
    for url in ("sqlite:///offline.db", "postgresql://u@h/db"):
        result = _run_alembic("upgrade", "head", "--sql", env={"ECL_DATABASE_URL": url})
        assert result.returncode == 0, result.stderr
        assert "CREATE TABLE workflows" in result.stdout
        assert "ix_workflows_claimable_created_at_id" in result.stdout
        assert "CREATE TABLE workflow_transitions" in result.stdout
        assert "CREATE TRIGGER workflow_transitions_append_only" in result.stdout
        assert "CREATE INDEX IF NOT EXISTS ix_workflows_state_completed_at" in result.stdout
        assert "ADD COLUMN run_after" in result.stdout
        assert "ADD COLUMN priority INTEGER DEFAULT '0' NOT NULL" in result.stdout
        assert (
            "CREATE INDEX IF NOT EXISTS ix_workflows_claimable_priority_created_at_id "
            "ON workflows (priority DESC, created_at, id) WHERE state IN ('pending', 'running')"
        ) in result.stdout


def test_alembic_offline_mode_renders_the_queue_revision_without_rebuilding_a_table() -> None:
    for url in ("sqlite:///offline.db", "postgresql://u@h/db"):
        up = _run_alembic("upgrade", "0003:0004", "--sql", env={"ECL_DATABASE_URL": url})
        assert up.returncode == 0, up.stderr
        # Columns added in place on both backends: no copy of workflows.
        assert "_alembic_tmp_workflows" not in up.stdout
        assert "ALTER TABLE workflows ADD COLUMN run_after" in up.stdout
        assert "DROP INDEX ix_workflows_claimable_created_at_id" in up.stdout
        down = _run_alembic("downgrade", "0004:0003", "--sql", env={"ECL_DATABASE_URL": url})
        assert down.returncode == 0, down.stderr
        assert "_alembic_tmp_workflows" not in down.stdout
        assert "ALTER TABLE workflows DROP COLUMN priority" in down.stdout
        assert "DROP INDEX ix_workflows_claimable_priority_created_at_id" in down.stdout
        assert "version_num='0003'" in down.stdout


def test_alembic_offline_mode_renders_the_workers_downgrade_for_both_dialects() -> None:
    for url in ("sqlite:///offline.db", "postgresql://u@h/db"):
        result = _run_alembic("downgrade", "0002:0001", "--sql", env={"ECL_DATABASE_URL": url})
        assert result.returncode == 0, result.stderr
        assert "DROP INDEX ix_workflows_claimable_created_at_id" in result.stdout
        assert "version_num='0001'" in result.stdout


def test_alembic_offline_mode_renders_the_audit_trail_downgrade_for_both_dialects() -> None:
    for url in ("sqlite:///offline.db", "postgresql://u@h/db"):
        result = _run_alembic("downgrade", "0003:0002", "--sql", env={"ECL_DATABASE_URL": url})
        assert result.returncode == 0, result.stderr
        assert "DROP TRIGGER workflow_transitions_append_only" in result.stdout
        assert "DROP TABLE workflow_transitions" in result.stdout
        assert "version_num='0002'" in result.stdout


async def _guards(db: Database) -> set[str]:
    """The append-only triggers (and, on PostgreSQL, their functions) in the database."""
    if db.dialect == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    else:
        query = (
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
            "UNION ALL SELECT proname || '()' FROM pg_proc WHERE proname LIKE 'workflow%'"
        )
    async with db.engine.connect() as connection:
        return {str(name) for (name,) in await connection.execute(text(query))}


async def test_the_append_only_guard_goes_with_its_revision_and_comes_back(
    empty_database_url: str,
) -> None:
    guard = "workflow_transitions_append_only"
    async with Database.from_url(empty_database_url) as db:
        await db.migrate()
        expected = {guard} if db.dialect == "sqlite" else {guard, f"{guard}()"}
        assert await _guards(db) == expected
        await downgrade(db.engine, "0002")
        assert await _guards(db) == set()
        await db.migrate()
        assert await _guards(db) == expected
        async with db.session() as uow:
            workflow = await persist_workflow(uow)
        with pytest.raises(ConstraintViolationError):
            async with db.session() as uow:
                await uow.execute(
                    text("UPDATE workflow_transitions SET actor = 'someone else'"),
                    action="rewrite history",
                )
        async with db.session(read_only=True) as uow:
            assert [t.actor for t in await uow.workflows.history(workflow.id)] == [None]


async def test_the_purge_index_built_by_hand_beforehand_is_kept_by_the_upgrade(
    empty_database_url: str,
) -> None:
    # docs/history.md: on a big PostgreSQL table, build it concurrently first.
    concurrently = (
        "CONCURRENTLY " if make_url(empty_database_url).get_backend_name() != "sqlite" else ""
    )
    async with Database.from_url(empty_database_url) as db:
        await db.migrate("0002")
        async with db.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(
                text(
                    f"CREATE INDEX {concurrently}ix_workflows_state_completed_at "
                    "ON workflows (state, completed_at)"
                )
            )
        await db.migrate()
        assert await current_revision(db.engine) == head_revision()
        indexes = [name for name in (await _inspect(db))["indexes"] if "completed_at" in name]
        assert indexes == ["ix_workflows_state_completed_at"]
