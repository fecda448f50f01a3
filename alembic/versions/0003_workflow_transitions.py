"""Audit trail and retention: workflow transitions, an append-only guard, the purge index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Adds ``workflow_transitions``, one row per state change of a workflow, which
the repositories write in the same transaction as the change. A trigger
refuses any UPDATE of it on both backends, so history cannot be rewritten;
DELETE stays allowed, because deleting or purging a workflow cascades to its
history. Adds an index on ``workflows (state, completed_at)``, from which a
purge batch reads the oldest finished workflows of a state.

Written by hand for SQLite and PostgreSQL, without the live models. Only new
objects are created: no existing table is altered or rebuilt, on either
backend, and no existing row changes. Workflows stored before this revision
have no transitions until they next change state.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = "('pending', 'running', 'completed', 'failed')"
GUARD = "workflow_transitions_append_only"
MESSAGE = "workflow_transitions is append-only"

# RAISE(ABORT) fails the statement with SQLITE_CONSTRAINT and rolls back what
# the statement did, as a constraint would.
SQLITE_GUARD = f"""\
CREATE TRIGGER {GUARD}
BEFORE UPDATE ON workflow_transitions
BEGIN
    SELECT RAISE(ABORT, '{MESSAGE}');
END"""

# SQLSTATE 23000 (integrity constraint violation) and a constraint name: the
# package reports it as ConstraintViolationError, as it does on SQLite.
POSTGRESQL_GUARD_FUNCTION = f"""\
CREATE FUNCTION {GUARD}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{MESSAGE}'
        USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = '{GUARD}';
END
$$"""
POSTGRESQL_GUARD = f"""\
CREATE TRIGGER {GUARD}
BEFORE UPDATE ON workflow_transitions
FOR EACH ROW EXECUTE FUNCTION {GUARD}()"""


def upgrade() -> None:
    op.create_table(
        "workflow_transitions",
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
        # Leads with workflow_id: it is also the foreign key's index and the
        # one history() reads, in version order.
        sa.UniqueConstraint(
            "workflow_id", "version", name=op.f("uq_workflow_transitions_workflow_id_version")
        ),
        sa.CheckConstraint(
            f"from_state IS NULL OR from_state IN {STATES}",
            name=op.f("ck_workflow_transitions_from_state"),
        ),
        sa.CheckConstraint(f"to_state IN {STATES}", name=op.f("ck_workflow_transitions_to_state")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_workflow_transitions_version_positive")),
    )
    # IF NOT EXISTS: on a big PostgreSQL table, build it beforehand with
    # CREATE INDEX CONCURRENTLY (docs/history.md), and this step is instant.
    op.create_index(
        op.f("ix_workflows_state_completed_at"),
        "workflows",
        ["state", "completed_at"],
        if_not_exists=True,
    )
    if _postgresql():
        op.execute(POSTGRESQL_GUARD_FUNCTION)
        op.execute(POSTGRESQL_GUARD)
    else:
        op.execute(SQLITE_GUARD)


def downgrade() -> None:
    op.execute(f"DROP TRIGGER {GUARD}" + (" ON workflow_transitions" if _postgresql() else ""))
    if _postgresql():
        op.execute(f"DROP FUNCTION {GUARD}()")
    op.drop_index(op.f("ix_workflows_state_completed_at"), table_name="workflows")
    op.drop_table("workflow_transitions")


def _postgresql() -> bool:
    return op.get_context().dialect.name == "postgresql"
