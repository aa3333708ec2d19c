"""conversations: `read` (the user has read the first message) filled from the parts

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 14:30:00

`conversations.read` says whether the user has read the conversation's first message (its
first reply): true when that reply is the user's own (a conversation its user started), or
when it is an operator's or a message's that the user has read (`conversation_parts.read`).
It was false for every conversation; the rules keep it from now on, and this fills it for
the conversations from before. No column changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The first reply of each conversation, read when it is the user's or the user read it.
_FILL = """
UPDATE conversations SET read = TRUE
WHERE read = FALSE AND EXISTS (
    SELECT 1 FROM conversation_parts p
    WHERE p.conversation_id = conversations.id
      AND p.type IN ('reply_user', 'reply_admin')
      AND (p.type = 'reply_user' OR p.read = TRUE)
      AND NOT EXISTS (
          SELECT 1 FROM conversation_parts q
          WHERE q.conversation_id = p.conversation_id
            AND q.type IN ('reply_user', 'reply_admin')
            AND q.id < p.id
      )
)
"""


def upgrade() -> None:
    op.execute(_FILL)


def downgrade() -> None:
    # The filled values stay: before this revision nothing else wrote the column.
    pass
