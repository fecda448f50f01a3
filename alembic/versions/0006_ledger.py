"""The token and cost ledger, and the payload store.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Adds to ``step_executions`` the four token counts of an attempt's usage
(``input_tokens``, ``output_tokens``, ``cached_tokens``,
``reasoning_tokens``: all NULL or all set and non-negative), the ``model``
and the ``cost`` (``numeric(20, 6)`` on PostgreSQL; on SQLite, whose NUMERIC
keeps floats, a 64-bit count of millionths), and an index on
``started_at`` for the ledger's time ranges.

Adds the ``payloads`` table (large inputs and outputs, compressed, stored
once under the SHA-256 of their canonical JSON) and, on ``workflows`` and
``step_executions``, the nullable ``input_ref`` and ``output_ref`` that
name a row's stored payload (each with a partial index, for purge and
delete). Rows written before this revision keep their payloads inline and
read as they are.

Written by hand for SQLite and PostgreSQL, without the live models. No
table is rebuilt: both backends add nullable columns in place (on SQLite
the checks go with the columns they are added with, on PostgreSQL they are
added as table constraints). Every existing row keeps its values, with no
usage, model or cost, and its ``tokens_used`` as it was.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import zstandard
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
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
REFERRING = ("workflows", "step_executions")
REFS = ("input_ref", "output_ref")


def _inline_payloads() -> None:
    """Write every stored payload back into the columns of the rows that refer to it."""
    connection = op.get_bind()
    payloads = sa.table(
        "payloads", sa.column("hash", sa.String()), sa.column("data", sa.LargeBinary())
    )
    for table in REFERRING:
        for column in REFS:
            inline = column.removesuffix("_ref")
            rows = sa.table(
                table, sa.column("id"), sa.column(column, sa.String()), sa.column(inline)
            )
            chosen = (
                sa.select(rows.c.id, payloads.c.data)
                .join(payloads, payloads.c.hash == rows.c[column])
                .where(rows.c[column].is_not(None))
            )
            for row_id, data in connection.execute(chosen):
                text = zstandard.ZstdDecompressor().decompress(data).decode("utf-8")
                connection.execute(
                    sa.update(rows)
                    .where(rows.c.id == row_id)
                    .values({inline: sa.cast(sa.literal(text), _JSON_OF[connection.dialect.name])})
                )


_JSON_OF = {"sqlite": sa.Text(), "postgresql": postgresql.JSONB()}


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
    op.create_table(
        "payloads",
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("codec", sa.String(16), nullable=False),
        sa.Column("raw_size", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_payloads")),
        sa.CheckConstraint("raw_size >= 0", name=op.f("ck_payloads_raw_size_non_negative")),
    )
    for table in REFERRING:
        for column in REFS:
            op.add_column(table, sa.Column(column, sa.String(64), nullable=True))
            op.create_index(
                op.f(f"ix_{table}_{column}"),
                table,
                [column],
                postgresql_where=sa.text(f"{column} IS NOT NULL"),
                sqlite_where=sa.text(f"{column} IS NOT NULL"),
            )


def downgrade() -> None:
    # A payload in the store goes back inline (the rows it belongs to become
    # those of the older schema), then the store goes.
    _inline_payloads()
    for table in REFERRING:
        for column in reversed(REFS):
            op.drop_index(op.f(f"ix_{table}_{column}"), table_name=table)
            op.drop_column(table, column)
    op.drop_table("payloads")
    op.drop_index(op.f(INDEX), table_name=TABLE)
    if not _sqlite():
        for name in CHECKS:
            op.drop_constraint(op.f(name), TABLE, type_="check")
    for name in ("cost", "model", *reversed(COUNTS)):
        op.drop_column(TABLE, name)
