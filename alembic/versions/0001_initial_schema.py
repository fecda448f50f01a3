"""Initial schema: workflows, step executions, artifacts.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Written by hand for SQLite and PostgreSQL. Never import the live models here:
a revision describes the schema as it was at this point in history.
Every constraint and index carries the name the models' naming convention
gives it, wrapped in ``op.f`` so that no convention renames it again, and
later revisions can drop or alter it by name.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(255)
STATE = sa.String(16)


def _json() -> sa.types.TypeEngine[object]:
    # TEXT on SQLite: a column declared JSON has numeric affinity there.
    return sa.Text().with_variant(postgresql.JSONB(), "postgresql")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("definition_id", ID, nullable=False),
        sa.Column("state", STATE, nullable=False),
        sa.Column("input", _json(), nullable=False),
        sa.Column("output", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("completed_at", _timestamp(), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
        sa.CheckConstraint(
            "state IN ('pending', 'running', 'completed', 'failed')",
            name=op.f("ck_workflows_state"),
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_workflows_version_positive")),
    )
    op.create_index(
        op.f("ix_workflows_state_created_at_id"), "workflows", ["state", "created_at", "id"]
    )
    op.create_index(
        op.f("ix_workflows_definition_id_created_at_id"),
        "workflows",
        ["definition_id", "created_at", "id"],
    )
    op.create_index(op.f("ix_workflows_created_at_id"), "workflows", ["created_at", "id"])

    op.create_table(
        "step_executions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workflow_id", sa.Uuid(), nullable=False),
        sa.Column("step_id", ID, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", STATE, nullable=False),
        sa.Column("input", _json(), nullable=False),
        sa.Column("output", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", _timestamp(), nullable=False),
        sa.Column("completed_at", _timestamp(), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("tokens_used", sa.BigInteger(), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step_executions")),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_step_executions_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "workflow_id",
            "step_id",
            "attempt",
            name=op.f("uq_step_executions_workflow_id_step_id_attempt"),
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'running', 'succeeded', 'failed')",
            name=op.f("ck_step_executions_state"),
        ),
        sa.CheckConstraint("attempt >= 1", name=op.f("ck_step_executions_attempt_positive")),
        sa.CheckConstraint(
            "duration_ms >= 0", name=op.f("ck_step_executions_duration_ms_non_negative")
        ),
        sa.CheckConstraint(
            "tokens_used >= 0", name=op.f("ck_step_executions_tokens_used_non_negative")
        ),
    )
    op.create_index(
        op.f("ix_step_executions_workflow_id_started_at"),
        "step_executions",
        ["workflow_id", "started_at"],
    )

    op.create_table(
        "artifacts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workflow_id", sa.Uuid(), nullable=False),
        sa.Column("step_id", ID, nullable=False),
        sa.Column("name", ID, nullable=False),
        sa.Column("content_type", ID, nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("metadata", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_artifacts_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "workflow_id", "step_id", "name", name=op.f("uq_artifacts_workflow_id_step_id_name")
        ),
        sa.CheckConstraint("size_bytes >= 0", name=op.f("ck_artifacts_size_bytes_non_negative")),
    )
    op.create_index(
        op.f("ix_artifacts_workflow_id_created_at"), "artifacts", ["workflow_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_artifacts_workflow_id_created_at"), table_name="artifacts")
    op.drop_table("artifacts")
    op.drop_index(op.f("ix_step_executions_workflow_id_started_at"), table_name="step_executions")
    op.drop_table("step_executions")
    op.drop_index(op.f("ix_workflows_created_at_id"), table_name="workflows")
    op.drop_index(op.f("ix_workflows_definition_id_created_at_id"), table_name="workflows")
    op.drop_index(op.f("ix_workflows_state_created_at_id"), table_name="workflows")
    op.drop_table("workflows")
