"""Workers: idempotency keys, leases and the claim queue.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Adds to ``workflows`` what many workers sharing one database need: an
idempotency key (unique per definition), a lease (owner and expiry, only on a
running workflow), a count of claims, and a partial index over the open
workflows in creation order, which the claim query scans.

Written by hand for SQLite and PostgreSQL, without the live models. Every
existing row keeps its values: the new columns are NULL, and ``claim_count``
is 0. On SQLite the batch rebuilds the table (foreign keys off, checked
after; see ``env.py``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIMABLE = "state IN ('pending', 'running')"
LEASE = (
    "(lease_owner IS NULL AND lease_expires_at IS NULL) OR "
    "(lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL AND state = 'running')"
)
UNIQUE_KEY = "uq_workflows_definition_id_idempotency_key"
UNIQUE_KEY_COLUMNS = ["definition_id", "idempotency_key"]
CHECKS = {"ck_workflows_claim_count_non_negative": "claim_count >= 0", "ck_workflows_lease": LEASE}


def _worker_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim_count", sa.Integer(), nullable=False, server_default="0"),
    ]


def _offline_copy(*, at_0002: bool) -> sa.Table | None:
    """``workflows`` as revision 0001 (or this one) left it, when emitting SQL.

    Batch mode on SQLite rebuilds the table from a reflection of the live
    database; ``--sql`` has no database to reflect, so it rebuilds from this.
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
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
        sa.CheckConstraint(
            "state IN ('pending', 'running', 'completed', 'failed')",
            name=op.f("ck_workflows_state"),
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_workflows_version_positive")),
        sa.Index(op.f("ix_workflows_state_created_at_id"), "state", "created_at", "id"),
        sa.Index(
            op.f("ix_workflows_definition_id_created_at_id"), "definition_id", "created_at", "id"
        ),
        sa.Index(op.f("ix_workflows_created_at_id"), "created_at", "id"),
    )
    if at_0002:
        for column in _worker_columns():
            table.append_column(column)
        for constraint in _worker_constraints():
            table.append_constraint(constraint)
    return table


def _worker_constraints() -> list[sa.Constraint]:
    return [
        sa.UniqueConstraint(*UNIQUE_KEY_COLUMNS, name=op.f(UNIQUE_KEY)),
        *(sa.CheckConstraint(condition, name=op.f(name)) for name, condition in CHECKS.items()),
    ]


def upgrade() -> None:
    with op.batch_alter_table("workflows", copy_from=_offline_copy(at_0002=False)) as batch:
        for column in _worker_columns():
            batch.add_column(column)
        batch.create_unique_constraint(op.f(UNIQUE_KEY), UNIQUE_KEY_COLUMNS)
        for name, condition in CHECKS.items():
            batch.create_check_constraint(op.f(name), condition)
    op.create_index(
        op.f("ix_workflows_claimable_created_at_id"),
        "workflows",
        ["created_at", "id"],
        postgresql_where=sa.text(CLAIMABLE),
        sqlite_where=sa.text(CLAIMABLE),
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_workflows_claimable_created_at_id"), table_name="workflows")
    with op.batch_alter_table("workflows", copy_from=_offline_copy(at_0002=True)) as batch:
        for name in CHECKS:
            batch.drop_constraint(op.f(name), type_="check")
        batch.drop_constraint(op.f(UNIQUE_KEY), type_="unique")
        for column in reversed(_worker_columns()):
            batch.drop_column(column.name)
