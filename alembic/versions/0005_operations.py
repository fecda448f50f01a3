"""Operations: cancel, retry and fork workflows; concurrency limits per key.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Adds the state ``cancelled`` to the CHECK constraints of ``workflows`` and
of ``workflow_transitions``; three columns to ``workflows``:
``cancel_requested_at`` (a cancel asked of a running workflow),
``forked_from`` (the workflow a fork was made from) and ``concurrency_key``;
``copied_from`` to ``step_executions`` (the attempt a fork copied); the
table ``concurrency_limits`` (key, max_running, updated_at); and a partial
index over the running workflows that have a key, which claims count.

Written by hand for SQLite and PostgreSQL, without the live models. On
PostgreSQL the constraints are swapped and the columns added in place. On
SQLite a CHECK constraint cannot change in place: the batch rebuilds
``workflows`` (foreign keys off, checked after; see ``env.py``) and
``workflow_transitions``, whose append-only trigger goes with the old table
and is created again. The claim queue's partial index is dropped before the
rebuild and created again after it, as revision 0004 made it. Every
existing row keeps its values; the new columns are NULL.

The downgrade turns cancelled workflows into failed ones (their error says
``cancelled`` unless they had one) and the transitions to or from
cancelled into failed, since revision 0004 knows no other way to say it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATES = "('pending', 'running', 'completed', 'failed')"
STATES = "('pending', 'running', 'completed', 'failed', 'cancelled')"
CLAIMABLE = "state IN ('pending', 'running')"
QUEUE = "ix_workflows_claimable_priority_created_at_id"
RUNNING_KEYED = "state = 'running' AND concurrency_key IS NOT NULL"
RUNNING_INDEX = "ix_workflows_running_concurrency_key"
LEASE = (
    "(lease_owner IS NULL AND lease_expires_at IS NULL) OR "
    "(lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL AND state = 'running')"
)
GUARD = "workflow_transitions_append_only"
SQLITE_GUARD = f"""\
CREATE TRIGGER {GUARD}
BEFORE UPDATE ON workflow_transitions
BEGIN
    SELECT RAISE(ABORT, 'workflow_transitions is append-only');
END"""
POSTGRESQL_GUARD = f"""\
CREATE TRIGGER {GUARD}
BEFORE UPDATE ON workflow_transitions
FOR EACH ROW EXECUTE FUNCTION {GUARD}()"""


def _workflow_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("forked_from", sa.Uuid(), nullable=True),
        sa.Column("concurrency_key", sa.String(255), nullable=True),
    ]


def _states_check(states: str, column: str = "state") -> str:
    return f"{column} IN {states}"


def _offline_workflows(*, at_0005: bool) -> sa.Table | None:
    """``workflows`` as revision 0004 (or this one) left it, for ``--sql`` on SQLite.

    Batch mode rebuilds a SQLite table from a reflection of the live
    database; emitting SQL has none to reflect, so it rebuilds from this.
    The claim queue's index is left out: it is dropped before the rebuild.
    """
    if not context.is_offline_mode():
        return None
    json = sa.Text().with_variant(postgresql.JSONB(), "postgresql")
    table = sa.Table(
        "workflows",
        sa.MetaData(),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("definition_id", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("input", json, nullable=False),
        sa.Column("output", json, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("metadata", json, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("run_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
        sa.CheckConstraint(
            _states_check(STATES if at_0005 else OLD_STATES), name=op.f("ck_workflows_state")
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_workflows_version_positive")),
        sa.CheckConstraint("claim_count >= 0", name=op.f("ck_workflows_claim_count_non_negative")),
        sa.CheckConstraint(LEASE, name=op.f("ck_workflows_lease")),
        sa.UniqueConstraint(
            "definition_id",
            "idempotency_key",
            name=op.f("uq_workflows_definition_id_idempotency_key"),
        ),
        sa.Index(op.f("ix_workflows_state_created_at_id"), "state", "created_at", "id"),
        sa.Index(
            op.f("ix_workflows_definition_id_created_at_id"), "definition_id", "created_at", "id"
        ),
        sa.Index(op.f("ix_workflows_created_at_id"), "created_at", "id"),
        sa.Index(op.f("ix_workflows_state_completed_at"), "state", "completed_at"),
    )
    if at_0005:
        for column in _workflow_columns():
            table.append_column(column)
    return table


def _offline_transitions(*, at_0005: bool) -> sa.Table | None:
    """``workflow_transitions`` as revision 0004 (or this one) left it, for ``--sql``."""
    if not context.is_offline_mode():
        return None
    states = STATES if at_0005 else OLD_STATES
    return sa.Table(
        "workflow_transitions",
        sa.MetaData(),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workflow_id", sa.Uuid(), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_transitions")),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_transitions_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "workflow_id", "version", name=op.f("uq_workflow_transitions_workflow_id_version")
        ),
        sa.CheckConstraint(
            f"from_state IS NULL OR {_states_check(states, 'from_state')}",
            name=op.f("ck_workflow_transitions_from_state"),
        ),
        sa.CheckConstraint(
            _states_check(states, "to_state"), name=op.f("ck_workflow_transitions_to_state")
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_workflow_transitions_version_positive")),
    )


def _swap_state_checks(*, at_0005: bool) -> None:
    """Replace the state checks of both tables with those of 0005 (or of 0004)."""
    states = STATES if at_0005 else OLD_STATES
    with op.batch_alter_table(
        "workflows", copy_from=_offline_workflows(at_0005=not at_0005)
    ) as batch:
        batch.drop_constraint(op.f("ck_workflows_state"), type_="check")
        batch.create_check_constraint(op.f("ck_workflows_state"), _states_check(states))
        if at_0005:
            for column in _workflow_columns():
                batch.add_column(column)
        else:
            for column in reversed(_workflow_columns()):
                batch.drop_column(column.name)
    with op.batch_alter_table(
        "workflow_transitions", copy_from=_offline_transitions(at_0005=not at_0005)
    ) as batch:
        batch.drop_constraint(op.f("ck_workflow_transitions_from_state"), type_="check")
        batch.drop_constraint(op.f("ck_workflow_transitions_to_state"), type_="check")
        batch.create_check_constraint(
            op.f("ck_workflow_transitions_from_state"),
            f"from_state IS NULL OR {_states_check(states, 'from_state')}",
        )
        batch.create_check_constraint(
            op.f("ck_workflow_transitions_to_state"), _states_check(states, "to_state")
        )


def _queue_index() -> None:
    op.create_index(
        op.f(QUEUE),
        "workflows",
        [sa.text("priority DESC"), "created_at", "id"],
        postgresql_where=sa.text(CLAIMABLE),
        sqlite_where=sa.text(CLAIMABLE),
    )


def upgrade() -> None:
    sqlite = not _postgresql()
    if sqlite:
        op.drop_index(op.f(QUEUE), table_name="workflows")
        op.execute(f"DROP TRIGGER {GUARD}")
    _swap_state_checks(at_0005=True)
    if sqlite:
        _queue_index()
        op.execute(SQLITE_GUARD)
    op.add_column("step_executions", sa.Column("copied_from", sa.Uuid(), nullable=True))
    op.create_index(
        op.f(RUNNING_INDEX),
        "workflows",
        ["concurrency_key", "lease_expires_at"],
        postgresql_where=sa.text(RUNNING_KEYED),
        sqlite_where=sa.text(RUNNING_KEYED),
    )
    op.create_table(
        "concurrency_limits",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("max_running", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_concurrency_limits")),
        sa.CheckConstraint(
            "max_running >= 0", name=op.f("ck_concurrency_limits_max_running_non_negative")
        ),
    )


def downgrade() -> None:
    sqlite = not _postgresql()
    op.drop_table("concurrency_limits")
    op.drop_index(op.f(RUNNING_INDEX), table_name="workflows")
    op.drop_column("step_executions", "copied_from")
    # History is append-only: its guard steps aside while cancelled becomes failed.
    op.execute(f"DROP TRIGGER {GUARD}" + ("" if sqlite else " ON workflow_transitions"))
    op.execute(
        "UPDATE workflows SET state = 'failed', error = COALESCE(error, 'cancelled') "
        "WHERE state = 'cancelled'"
    )
    op.execute("UPDATE workflow_transitions SET to_state = 'failed' WHERE to_state = 'cancelled'")
    op.execute(
        "UPDATE workflow_transitions SET from_state = 'failed' WHERE from_state = 'cancelled'"
    )
    if sqlite:
        op.drop_index(op.f(QUEUE), table_name="workflows")
    _swap_state_checks(at_0005=False)
    if sqlite:
        _queue_index()
    op.execute(SQLITE_GUARD if sqlite else POSTGRESQL_GUARD)


def _postgresql() -> bool:
    return op.get_context().dialect.name == "postgresql"
