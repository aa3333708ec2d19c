"""the e-mail channel: each app's random inbound key, the participants of e-mail
conversations, per-sender counts shared between processes

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 13:00:00

`email_app_keys`: the key of each app's default inbound address
(`<key>@<THREADLINE_MAIL_DOMAIN>`), random rather than the app's id; every existing app gets
one here (new apps get theirs on first use). The `<app id>@` address is not kept: see
the README's e-mail section.
`email_participants`: the addresses on an e-mail conversation's messages (From, To, Cc).
`email_sender_counts`: inbound messages per sender and time window (the per-sender limit,
counted in the database when there is no Redis).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import threadline.db.types

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = threadline.db.types.UTCDateTime(timezone=True)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "email_app_keys",
        sa.Column("app_id", _ID, autoincrement=False, nullable=False),
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_email_app_keys_app_id_apps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("app_id", name=op.f("pk_email_app_keys")),
    )
    with op.batch_alter_table("email_app_keys", schema=None) as batch_op:
        batch_op.create_index("uq_email_app_keys_key", ["key"], unique=True)
    keys = sa.table("email_app_keys", sa.column("app_id"), sa.column("key"))
    bind = op.get_bind()
    app_ids = [int(row[0]) for row in bind.execute(sa.text("SELECT id FROM apps ORDER BY id"))]
    for start in range(0, len(app_ids), 500):
        op.bulk_insert(
            keys,
            [{"app_id": a, "key": secrets.token_hex(10)} for a in app_ids[start : start + 500]],
        )

    op.create_table(
        "email_participants",
        sa.Column("conversation_id", _ID, autoincrement=False, nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("app_id", _ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["apps.id"],
            name=op.f("fk_email_participants_app_id_apps"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_email_participants_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("conversation_id", "address", name=op.f("pk_email_participants")),
    )
    op.create_table(
        "email_sender_counts",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("window_start", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("expires", _TS, nullable=False),
        sa.PrimaryKeyConstraint("key", "window_start", name=op.f("pk_email_sender_counts")),
    )
    with op.batch_alter_table("email_sender_counts", schema=None) as batch_op:
        batch_op.create_index("ix_email_sender_counts_expires", ["expires"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("email_sender_counts", schema=None) as batch_op:
        batch_op.drop_index("ix_email_sender_counts_expires")
    op.drop_table("email_sender_counts")
    op.drop_table("email_participants")
    with op.batch_alter_table("email_app_keys", schema=None) as batch_op:
        batch_op.drop_index("uq_email_app_keys_key")
    op.drop_table("email_app_keys")
