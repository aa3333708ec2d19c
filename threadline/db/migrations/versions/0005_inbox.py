"""the operators' inbox: view indexes, tag index table, exact counts, full-text search

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 09:00:00

Only additions. Search indexes are written by hand per dialect (autogenerate cannot see
them): on PostgreSQL a GIN `tsvector` index for whole words and a `pg_trgm` GIN index for
parts of words; on SQLite two FTS5 tables over the part bodies (`unicode61` words and
`trigram`), external-content, kept by triggers. Existing data is indexed and counted.
"""

# SQL text here is built from this file's own table and column names, never from input.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import threadline.db.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = threadline.db.types.UTCDateTime(timezone=True)

# PostgreSQL: the words of a body as the tsvector index sees them. Runs of anything but
# letters and digits become a space first, so that the parser finds plain words (no e-mail,
# URL or hyphenated tokens): words are runs of letters and digits, as on SQLite.
# threadline.inbox.search repeats this expression exactly, or the index is not used.
PG_WORDS = (
    "to_tsvector('simple'::regconfig, "
    "regexp_replace(body, '[^[:alnum:]]+'::text, ' '::text, 'g'::text))"
)
# Shards of each count cell (threadline.inbox.counts.PG_SHARDS); readers sum every shard,
# so a different number here would still count right.
_PG_SHARDS = 4

_SQLITE_FTS = {
    # Whole words, no case, accents kept (a search for "e" does not find "é").
    "parts_words": "tokenize = 'unicode61 remove_diacritics 0'",
    # Any three characters: search inside words.
    "parts_trigram": "tokenize = 'trigram'",
}


def _inbox_where(dialect_true: str) -> str:
    return f"replied IS {dialect_true} AND removed IS NULL"


def _create_view_indexes(dialect: str) -> None:
    true, false = ("1", "0") if dialect == "sqlite" else ("true", "false")
    inbox = sa.text(_inbox_where(true))
    snoozed = sa.text(f"{_inbox_where(true)} AND closed IS {false} AND delayed_until IS NOT NULL")
    views = {
        "ix_inbox_status": (
            "app_id", "closed", "last_update", "id", "assignee_id", "channel_id", "important",
            "delayed_until",
        ),
        "ix_inbox_assignee": (
            "app_id", "assignee_id", "closed", "last_update", "id", "channel_id", "important",
            "delayed_until",
        ),
        "ix_inbox_channel": (
            "app_id", "channel_id", "closed", "last_update", "id", "assignee_id", "important",
            "delayed_until",
        ),
    }  # fmt: skip
    for name, columns in views.items():
        op.create_index(
            name, "conversations", list(columns), sqlite_where=inbox, postgresql_where=inbox
        )
    op.create_index(
        "ix_inbox_snoozed",
        "conversations",
        ["app_id", "delayed_until", "channel_id", "assignee_id", "important"],
        sqlite_where=snoozed,
        postgresql_where=snoozed,
    )
    tag_inbox = sa.text(f"inbox IS {true}")
    tag_snoozed = sa.text(f"inbox IS {true} AND closed IS {false} AND delayed_until IS NOT NULL")
    op.create_index(
        "ix_conversation_tags_view",
        "conversation_tags",
        [
            "app_id", "tag", "closed", "last_update", "conversation_id", "assignee_id",
            "channel_id", "important", "delayed_until",
        ],
        sqlite_where=tag_inbox,
        postgresql_where=tag_inbox,
    )  # fmt: skip
    op.create_index(
        "ix_conversation_tags_snoozed",
        "conversation_tags",
        ["app_id", "delayed_until", "tag", "channel_id", "assignee_id", "important"],
        sqlite_where=tag_snoozed,
        postgresql_where=tag_snoozed,
    )


def _fill(dialect: str) -> None:
    """Index and count the conversations that exist already."""
    if dialect == "postgresql":
        each_tag = "jsonb_array_elements_text(c.tags::jsonb) AS t(value)"
        shard = f"c.id % {_PG_SHARDS}"
        by_shard = f", {shard}"
    else:
        each_tag = "json_each(c.tags) AS t"
        shard, by_shard = "0", ""  # one shard: SQLite has a single writer
    true = "true" if dialect == "postgresql" else "1"
    op.execute(
        "INSERT INTO conversation_tags (conversation_id, tag, app_id, inbox, closed, "
        "delayed_until, channel_id, assignee_id, important, last_update) "
        f"SELECT c.id, t.value, c.app_id, (c.replied IS {true} AND c.removed IS NULL), "
        "c.closed, c.delayed_until, c.channel_id, c.assignee_id, c.important, c.last_update "
        f"FROM conversations c, {each_tag}"
    )
    inbox = f"c.replied IS {true} AND c.removed IS NULL"
    columns = "app_id, kind, tag, closed, channel_id, assignee_id, important, shard, n"
    op.execute(
        f"INSERT INTO inbox_counts ({columns}) "
        "SELECT c.app_id, 0, '', c.closed, COALESCE(c.channel_id, 0), "
        f"COALESCE(c.assignee_id, 0), c.important, {shard}, count(*) "
        f"FROM conversations c WHERE {inbox} "
        f"GROUP BY c.app_id, c.closed, COALESCE(c.channel_id, 0), "
        f"COALESCE(c.assignee_id, 0), c.important{by_shard}"
    )
    tagged = f"conversations c JOIN conversation_tags t ON t.conversation_id = c.id WHERE {inbox}"
    op.execute(
        f"INSERT INTO inbox_counts ({columns}) "
        f"SELECT c.app_id, 1, t.tag, c.closed, 0, 0, false, {shard}, count(*) FROM {tagged} "
        f"GROUP BY c.app_id, t.tag, c.closed{by_shard}"
    )
    op.execute(
        f"INSERT INTO inbox_counts ({columns}) "
        "SELECT c.app_id, 2, t.tag, c.closed, COALESCE(c.channel_id, 0), "
        f"COALESCE(c.assignee_id, 0), c.important, {shard}, count(*) FROM {tagged} "
        "GROUP BY c.app_id, t.tag, c.closed, COALESCE(c.channel_id, 0), "
        f"COALESCE(c.assignee_id, 0), c.important{by_shard}"
    )


def _create_search(dialect: str) -> None:
    if dialect == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(
            "CREATE INDEX ix_conversation_parts_words ON conversation_parts "
            f"USING gin ({PG_WORDS}) WHERE body <> ''"
        )
        op.execute(
            "CREATE INDEX ix_conversation_parts_trigram ON conversation_parts "
            "USING gin (body gin_trgm_ops) WHERE body <> ''"
        )
        return
    for table, options in _SQLITE_FTS.items():
        op.execute(
            f"CREATE VIRTUAL TABLE {table} USING fts5(body, content = 'conversation_parts', "
            f"content_rowid = 'id', {options})"
        )
        # Only parts with a body are indexed; erasing a conversation empties its bodies,
        # which takes them out of the index in the same transaction.
        op.execute(
            f"CREATE TRIGGER {table}_insert AFTER INSERT ON conversation_parts "
            f"WHEN new.body <> '' BEGIN "
            f"INSERT INTO {table} (rowid, body) VALUES (new.id, new.body); END"
        )
        op.execute(
            f"CREATE TRIGGER {table}_delete AFTER DELETE ON conversation_parts "
            f"WHEN old.body <> '' BEGIN "
            f"INSERT INTO {table} ({table}, rowid, body) VALUES ('delete', old.id, old.body); END"
        )
        # One trigger for both halves of an update: the old text must leave the index
        # before the new text enters it, and SQLite does not order separate triggers.
        op.execute(
            f"CREATE TRIGGER {table}_update AFTER UPDATE OF body ON conversation_parts BEGIN "
            f"INSERT INTO {table} ({table}, rowid, body) "
            f"SELECT 'delete', old.id, old.body WHERE old.body <> ''; "
            f"INSERT INTO {table} (rowid, body) SELECT new.id, new.body WHERE new.body <> ''; "
            "END"
        )
        op.execute(
            f"INSERT INTO {table} (rowid, body) "
            "SELECT id, body FROM conversation_parts WHERE body <> ''"
        )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "conversation_tags",
        sa.Column("conversation_id", _ID, autoincrement=False, nullable=False),
        sa.Column("tag", sa.String(length=255), nullable=False),
        sa.Column("app_id", _ID, nullable=False),
        sa.Column("inbox", sa.Boolean(), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("delayed_until", _TS, nullable=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("assignee_id", sa.BigInteger(), nullable=True),
        sa.Column("important", sa.Boolean(), nullable=False),
        sa.Column("last_update", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["apps.id"],
            name=op.f("fk_conversation_tags_app_id_apps"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_conversation_tags_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("conversation_id", "tag", name=op.f("pk_conversation_tags")),
    )
    op.create_table(
        "inbox_counts",
        sa.Column("app_id", _ID, autoincrement=False, nullable=False),
        sa.Column("kind", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("tag", sa.String(length=255), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("assignee_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("important", sa.Boolean(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_inbox_counts_app_id_apps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(
            "app_id",
            "kind",
            "tag",
            "closed",
            "channel_id",
            "assignee_id",
            "important",
            "shard",
            name=op.f("pk_inbox_counts"),
        ),
    )
    _create_view_indexes(dialect)
    _fill(dialect)
    _create_search(dialect)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_conversation_parts_trigram")
        op.execute("DROP INDEX IF EXISTS ix_conversation_parts_words")
    else:
        for table in _SQLITE_FTS:
            for suffix in ("insert", "delete", "update"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_{suffix}")
            op.execute(f"DROP TABLE IF EXISTS {table}")
    for name in ("ix_inbox_snoozed", "ix_inbox_channel", "ix_inbox_assignee", "ix_inbox_status"):
        op.drop_index(name, table_name="conversations")
    op.drop_table("inbox_counts")
    op.drop_table("conversation_tags")
