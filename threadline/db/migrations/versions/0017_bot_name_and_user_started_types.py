"""parts: the bot name a part was written under; user-started conversations' type

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-22 09:00:00

`conversation_parts.bot_name`: the name a bot's part was written under (`bot_name` of a
reply; NULL for every other part, and for every existing one).

A conversation its user started has `type` `popup_chat` and `reply_type` `text` from its
first reply on (the vendor's objects show a user-started chat so); conversations started
before stored NULL there and get the same values now. Conversations a message started keep
the message's.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column is added in place on both databases (no table copy on SQLite,
    # which would drop the table's triggers).
    op.add_column("conversation_parts", sa.Column("bot_name", sa.String(length=255), nullable=True))
    op.execute(
        "UPDATE conversations SET type = 'popup_chat', reply_type = 'text'"
        " WHERE message_id IS NULL AND type IS NULL"
    )


def downgrade() -> None:
    # The stored types stay: before this revision the API showed these values for them too.
    if op.get_bind().dialect.name == "sqlite":
        # SQLite 3.35+ drops a column in place (the batch way copies the table).
        op.execute("ALTER TABLE conversation_parts DROP COLUMN bot_name")
    else:
        op.drop_column("conversation_parts", "bot_name")
