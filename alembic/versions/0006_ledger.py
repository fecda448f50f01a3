"""The token and cost ledger: usage, model and cost of every attempt.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-02

Adds to ``step_executions`` the four token counts of an attempt's usage
(``input_tokens``, ``output_tokens``, ``cached_tokens``,
``reasoning_tokens``: all NULL or all set and non-negative), the ``model``
and the ``cost`` (``numeric(20, 6)`` on PostgreSQL; on SQLite, whose NUMERIC
keeps floats, a 64-bit count of millionths), and an index on
``started_at`` for the ledger's time ranges.

Written by hand for SQLite and PostgreSQL, without the live models. No
table is rebuilt: both backends add nullable columns in place (on SQLite
the checks go with the columns they are added with, on PostgreSQL they are
added as table constraints). Every existing row keeps its values, with no
usage, model or cost, and its ``tokens_used`` as it was.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "step_executions"
COUNTS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
USAGE = (
    "(input_tokens IS NULL AND output_tokens IS NULL AND cached_tokens IS NULL "
    "AND reasoning_tokens IS NULL) OR (input_tokens IS NOT NULL AND output_tokens IS NOT NULL "
    "AND cached_tokens IS NOT NULL AND reasoning_tokens IS NOT NULL AND input_tokens >= 0 "
    "AND output_tokens >= 0 AND cached_tokens >= 0 AND reasoning_tokens >= 0)"
)
CHECKS = {"ck_step_executions_usage": USAGE, "ck_step_executions_cost_non_negative": "cost >= 0"}
INDEX = "ix_step_executions_started_at"


def _sqlite() -> bool:
    return op.get_context().dialect.name == "sqlite"


def _cost_type() -> sa.types.TypeEngine[object]:
    return sa.Numeric(20, 6).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    sqlite = _sqlite()
    for name in COUNTS:
        # SQLite cannot add a table constraint in place: its checks ride on columns.
        checks = (
            [sa.CheckConstraint(USAGE, name=op.f("ck_step_executions_usage"))]
            if sqlite and name == COUNTS[-1]
            else []
        )
        op.add_column(TABLE, sa.Column(name, sa.BigInteger(), *checks, nullable=True))
    op.add_column(TABLE, sa.Column("model", sa.String(255), nullable=True))
    cost_checks = (
        [sa.CheckConstraint("cost >= 0", name=op.f("ck_step_executions_cost_non_negative"))]
        if sqlite
        else []
    )
    op.add_column(TABLE, sa.Column("cost", _cost_type(), *cost_checks, nullable=True))
    if not sqlite:
        for name, condition in CHECKS.items():
            op.create_check_constraint(op.f(name), TABLE, condition)
    op.create_index(op.f(INDEX), TABLE, ["started_at"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index(op.f(INDEX), table_name=TABLE)
    if not _sqlite():
        for name in CHECKS:
            op.drop_constraint(op.f(name), TABLE, type_="check")
    for name in ("cost", "model", *reversed(COUNTS)):
        op.drop_column(TABLE, name)
