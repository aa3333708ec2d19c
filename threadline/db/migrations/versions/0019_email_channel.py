"""the e-mail channel: inbound addresses, contacts, reply addresses, Message-IDs

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 10:20:00

`email_addresses`: addresses an app receives mail at besides its default one.
`email_contacts`: the user an e-mail address belongs to, per app.
`email_threads`: each e-mail conversation's reply token (`reply+<token>@<domain>`).
`email_messages`: the Message-IDs received and sent, unique per app (a replayed message
creates nothing new).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import threadline.db.types

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = threadline.db.types.UTCDateTime(timezone=True)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _app_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["app_id"], ["apps.id"], name=op.f(f"fk_{table}_app_id_apps"), ondelete="CASCADE"
    )


def _conversation_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["conversation_id"],
        ["conversations.id"],
        name=op.f(f"fk_{table}_conversation_id_conversations"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "email_addresses",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("app_id", _ID, nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("created", _TS, nullable=False),
        _app_fk("email_addresses"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_addresses")),
    )
    with op.batch_alter_table("email_addresses", schema=None) as batch_op:
        batch_op.create_index("uq_email_addresses_address", ["address"], unique=True)
    op.create_table(
        "email_contacts",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("app_id", _ID, nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        _app_fk("email_contacts"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_email_contacts_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_contacts")),
    )
    with op.batch_alter_table("email_contacts", schema=None) as batch_op:
        batch_op.create_index(
            "uq_email_contacts_app_id_address", ["app_id", "address"], unique=True
        )
    op.create_table(
        "email_threads",
        sa.Column("conversation_id", _ID, nullable=False),
        sa.Column("app_id", _ID, nullable=False),
        sa.Column("reply_token", sa.String(length=32), nullable=False),
        _app_fk("email_threads"),
        _conversation_fk("email_threads"),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_email_threads")),
    )
    with op.batch_alter_table("email_threads", schema=None) as batch_op:
        batch_op.create_index("uq_email_threads_reply_token", ["reply_token"], unique=True)
    op.create_table(
        "email_messages",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("app_id", _ID, nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=False),
        sa.Column("conversation_id", _ID, nullable=True),
        sa.Column("part_id", _ID, nullable=True),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("created", _TS, nullable=False),
        _app_fk("email_messages"),
        _conversation_fk("email_messages"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_messages")),
    )
    with op.batch_alter_table("email_messages", schema=None) as batch_op:
        batch_op.create_index(
            "uq_email_messages_app_id_message_id", ["app_id", "message_id"], unique=True
        )


def downgrade() -> None:
    for table, index in (
        ("email_messages", "uq_email_messages_app_id_message_id"),
        ("email_threads", "uq_email_threads_reply_token"),
        ("email_contacts", "uq_email_contacts_app_id_address"),
        ("email_addresses", "uq_email_addresses_address"),
    ):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(index)
        op.drop_table(table)
