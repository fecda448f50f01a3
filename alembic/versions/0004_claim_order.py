"""Claims in order of priority and time: ``run_after`` and ``priority`` on workflows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Adds two columns to ``workflows``: ``run_after`` (no claim takes the
workflow before that instant; NULL for none) and ``priority`` (claims take
the highest first; 0 by default). The claim queue's partial index becomes
``(priority DESC, created_at, id)`` over the open workflows, replacing
``(created_at, id)``, so that a claim still reads the queue in its order
and stops after the rows it takes.

Written by hand for SQLite and PostgreSQL, without the live models. No
table is rebuilt on either backend: both add a nullable column, or one with
a constant default, in place. Every existing row keeps its values and gets
``run_after`` NULL and ``priority`` 0, so the queue keeps its order.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIMABLE = "state IN ('pending', 'running')"
OLD_QUEUE = "ix_workflows_claimable_created_at_id"
QUEUE = "ix_workflows_claimable_priority_created_at_id"


def upgrade() -> None:
    op.add_column("workflows", sa.Column("run_after", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "workflows", sa.Column("priority", sa.Integer(), nullable=False, server_default="0")
    )
    # IF NOT EXISTS: on a big PostgreSQL table, build it beforehand with
    # CREATE INDEX CONCURRENTLY (docs/history.md), and this step is instant.
    op.create_index(
        op.f(QUEUE),
        "workflows",
        [sa.text("priority DESC"), "created_at", "id"],
        postgresql_where=sa.text(CLAIMABLE),
        sqlite_where=sa.text(CLAIMABLE),
        if_not_exists=True,
    )
    op.drop_index(op.f(OLD_QUEUE), table_name="workflows")


def downgrade() -> None:
    op.create_index(
        op.f(OLD_QUEUE),
        "workflows",
        ["created_at", "id"],
        postgresql_where=sa.text(CLAIMABLE),
        sqlite_where=sa.text(CLAIMABLE),
    )
    op.drop_index(op.f(QUEUE), table_name="workflows")
    op.drop_column("workflows", "priority")
    op.drop_column("workflows", "run_after")
