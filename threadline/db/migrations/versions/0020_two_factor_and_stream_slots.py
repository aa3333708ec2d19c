"""admins' one-time code secrets (the optional second factor of an inbox sign-in), shared
counts of open realtime streams

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-18 09:00:00

`admins.totp_secret`: the base32 secret of the admin's authenticator app, once enrolment
was confirmed with a code (null: no second factor). `admins.totp_pending`: a secret shown
at enrolment and not yet confirmed. `admins.totp_last_step`: the time step of the last
code accepted; a code works once (threadline.core.totp).

`stream_slots`: open realtime streams per token digest and per client address, leased by
the process that serves them, so that the stream caps hold across processes
(threadline.events.slots; PostgreSQL deployments without Redis).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import threadline.db.types

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("totp_secret", "totp_pending", "totp_last_step")
_TS = threadline.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("admins", schema=None) as batch_op:
        batch_op.add_column(sa.Column("totp_secret", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("totp_pending", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
    op.create_table(
        "stream_slots",
        sa.Column("slot", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("expires", _TS, nullable=False),
        sa.PrimaryKeyConstraint("slot", "key", name=op.f("pk_stream_slots")),
    )
    with op.batch_alter_table("stream_slots", schema=None) as batch_op:
        batch_op.create_index("ix_stream_slots_key_expires", ["key", "expires"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("stream_slots", schema=None) as batch_op:
        batch_op.drop_index("ix_stream_slots_key_expires")
    op.drop_table("stream_slots")
    for column in reversed(_COLUMNS):
        if op.get_bind().dialect.name == "sqlite":
            # As in 0011: SQLite 3.35+ drops a column in place; the batch copy is refused.
            op.execute(f"ALTER TABLE admins DROP COLUMN {column}")
        else:
            op.drop_column("admins", column)
