"""creation keys: `random_id` on admins, channels, api tokens and webhook endpoints

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-15 09:00:00

A retried creation with the same `random_id` finds the row the first request created; a
unique index per app makes concurrent duplicates fail instead of creating two rows.
Existing rows get NULL (no key), which the unique index treats as distinct.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("admins", "channels", "api_tokens", "webhook_endpoints")


def _index(table: str) -> str:
    return f"uq_{table}_app_id_random_id"


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("random_id", sa.BigInteger(), nullable=True))
            batch_op.create_index(_index(table), ["app_id", "random_id"], unique=True)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in reversed(TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(_index(table))
        if sqlite:
            # SQLite 3.35+ drops a column in place (once no index names it). The batch way
            # copies the table and drops the old one, which SQLite refuses ("database table
            # is locked") once data is there.
            op.execute(f"ALTER TABLE {table} DROP COLUMN random_id")
        else:
            op.drop_column(table, "random_id")
