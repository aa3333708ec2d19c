"""conversation_parts: the page a part was written on, and the actions offered with it

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 10:00:00

The vendor's reply and startconversation take `referrer` (the page the message was written
on) and the reply `actions` (what the user can do with it, a JSON array of objects); they
are kept on the part and served with it. Existing parts have neither (NULL).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("referrer", "actions")


def upgrade() -> None:
    # Nullable columns without a default: an ALTER TABLE ADD COLUMN in place on both
    # databases (no copy of the table, however many parts it holds).
    op.add_column("conversation_parts", sa.Column("referrer", sa.Text(), nullable=True))
    op.add_column(
        "conversation_parts",
        sa.Column(
            "actions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
    )


def downgrade() -> None:
    for column in reversed(_COLUMNS):
        if op.get_bind().dialect.name == "sqlite":
            # SQLite 3.35+ drops a column in place (the batch way copies the table).
            op.execute(f"ALTER TABLE conversation_parts DROP COLUMN {column}")
        else:
            op.drop_column("conversation_parts", column)
