"""webhooks: each delivery's sequence number among its endpoint's deliveries of its conversation

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-21 09:00:00

A receiver orders a conversation's deliveries by it (a replayed dead letter arrives after
later ones): 1, 2, ... per (endpoint, conversation), in log order. Existing deliveries are
numbered in the order they were queued (their id).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "uq_webhook_deliveries_sequence"


def upgrade() -> None:
    # SQLite adds a NOT NULL column only with a default; every row gets its number below.
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("sequence", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE webhook_deliveries SET sequence = ("
        " SELECT count(*) FROM webhook_deliveries AS older"
        " WHERE older.endpoint_id = webhook_deliveries.endpoint_id"
        " AND older.conversation_id = webhook_deliveries.conversation_id"
        " AND older.id <= webhook_deliveries.id)"
    )
    if op.get_bind().dialect.name == "postgresql":
        # The worker always gives the number (SQLite cannot drop a default in place).
        op.alter_column("webhook_deliveries", "sequence", server_default=None)
    op.create_index(
        _INDEX,
        "webhook_deliveries",
        ["endpoint_id", "conversation_id", "sequence"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="webhook_deliveries")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite 3.35+ drops a column in place (the batch way copies the table).
        op.execute("ALTER TABLE webhook_deliveries DROP COLUMN sequence")
    else:
        op.drop_column("webhook_deliveries", "sequence")
