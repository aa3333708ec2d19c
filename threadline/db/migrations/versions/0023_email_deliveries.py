"""operators' e-mail replies queued for the relay, with their delivery state

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 13:30:00

`email_deliveries`: one row per operator's reply in an e-mail conversation, queued from the
event log by the outbox worker (its cursor: the `email` row of `webhook_state`), with the
Message-ID fixed when queued, the delivery state (`queued`, `sent`, `failed`), the attempts
and the relay's last answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import threadline.db.types

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = threadline.db.types.UTCDateTime(timezone=True)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_INDEXES = (
    ("uq_email_deliveries_part_id", ["part_id"], True),
    ("ix_email_deliveries_order", ["conversation_id", "status", "id"], False),
    ("ix_email_deliveries_due", ["status", "next_attempt_at"], False),
)


def upgrade() -> None:
    op.create_table(
        "email_deliveries",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("app_id", _ID, nullable=False),
        sa.Column("conversation_id", _ID, nullable=False),
        sa.Column("part_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("last_attempt_at", _TS, nullable=True),
        sa.Column("relay_code", sa.Integer(), nullable=True),
        sa.Column("relay_answer", sa.String(length=500), nullable=True),
        sa.Column("created", _TS, nullable=False),
        sa.Column("sent_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["apps.id"],
            name=op.f("fk_email_deliveries_app_id_apps"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_email_deliveries_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_deliveries")),
    )
    with op.batch_alter_table("email_deliveries", schema=None) as batch_op:
        for name, columns, unique in _INDEXES:
            batch_op.create_index(name, columns, unique=unique)


def downgrade() -> None:
    with op.batch_alter_table("email_deliveries", schema=None) as batch_op:
        for name, _, _ in _INDEXES:
            batch_op.drop_index(name)
    op.drop_table("email_deliveries")
