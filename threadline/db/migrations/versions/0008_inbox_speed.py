"""inbox counts read in constant time: per-assignee and per-channel cells, snoozed cells

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-11 09:00:00

Only new rows of `inbox_counts` (threadline.inbox.maintain): kinds 3 and 4 (every inbox
conversation by closed, assignee, importance / by closed, channel, importance), summed
from the kind 0 cells; kinds 5, 6 and 7 (snoozed conversations, none of them swept yet:
every conversation not closed that has a `delayed_until`). No watermark row: readers then
correct for every ended snooze until the first sweep.
"""

# SQL text here is built from this file's own table and column names, never from input.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Shards of each count cell on PostgreSQL (threadline.inbox.maintain.PG_SHARDS).
_PG_SHARDS = 4
_COLUMNS = "app_id, kind, tag, closed, channel_id, assignee_id, important, shard, n"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    postgres = dialect == "postgresql"
    true, false = ("true", "false") if postgres else ("1", "0")
    shard = f"c.id % {_PG_SHARDS}" if postgres else "0"
    by_shard = f", {shard}" if postgres else ""
    op.execute(
        f"INSERT INTO inbox_counts ({_COLUMNS}) "
        "SELECT app_id, 3, '', closed, 0, assignee_id, important, shard, sum(n) "
        "FROM inbox_counts WHERE kind = 0 GROUP BY app_id, closed, assignee_id, important, shard"
    )
    op.execute(
        f"INSERT INTO inbox_counts ({_COLUMNS}) "
        "SELECT app_id, 4, '', closed, channel_id, 0, important, shard, sum(n) "
        "FROM inbox_counts WHERE kind = 0 GROUP BY app_id, closed, channel_id, important, shard"
    )
    snoozed = (
        f"c.replied IS {true} AND c.removed IS NULL AND c.closed IS {false} "
        "AND c.delayed_until IS NOT NULL"
    )
    op.execute(
        f"INSERT INTO inbox_counts ({_COLUMNS}) "
        f"SELECT c.app_id, 5, '', {false}, COALESCE(c.channel_id, 0), "
        f"COALESCE(c.assignee_id, 0), c.important, {shard}, count(*) "
        f"FROM conversations c WHERE {snoozed} "
        "GROUP BY c.app_id, COALESCE(c.channel_id, 0), COALESCE(c.assignee_id, 0), "
        f"c.important{by_shard}"
    )
    tagged = f"conversations c JOIN conversation_tags t ON t.conversation_id = c.id WHERE {snoozed}"
    op.execute(
        f"INSERT INTO inbox_counts ({_COLUMNS}) "
        f"SELECT c.app_id, 6, t.tag, {false}, 0, 0, {false}, {shard}, count(*) FROM {tagged} "
        f"GROUP BY c.app_id, t.tag{by_shard}"
    )
    op.execute(
        f"INSERT INTO inbox_counts ({_COLUMNS}) "
        f"SELECT c.app_id, 7, t.tag, {false}, COALESCE(c.channel_id, 0), "
        f"COALESCE(c.assignee_id, 0), c.important, {shard}, count(*) FROM {tagged} "
        "GROUP BY c.app_id, t.tag, COALESCE(c.channel_id, 0), COALESCE(c.assignee_id, 0), "
        f"c.important{by_shard}"
    )


def downgrade() -> None:
    op.execute("DELETE FROM inbox_counts WHERE kind >= 3")
