"""channels made by the app itself are of the vendor's type `manual`

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-21 09:00:00

Channels were created with the type `default`, which is not among the vendor's channel
types (its Channel page: email, mobile, manual, vk, facebook, instagram, telegram, viber,
whatsapp). A channel an app makes for itself, its default one included, is `manual`: the
stored `default` rows become `manual`, and so does the column's default on PostgreSQL.
SQLite cannot change a column's default in place, and copying the table would trip the
foreign keys that name it (they are on during migrations); its column keeps `default`,
which nothing relies on: every insert names the type. Other values (a type a client chose)
are left as they are. The downgrade turns `manual` back into `default` (no channel was
`manual` before this revision).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_channels = sa.table("channels", sa.column("type", sa.String(32)))


def _retype(old: str, new: str) -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "channels",
            "type",
            existing_type=sa.String(length=32),
            existing_nullable=False,
            server_default=new,
        )
    op.execute(_channels.update().where(_channels.c.type == old).values(type=new))


def upgrade() -> None:
    _retype("default", "manual")


def downgrade() -> None:
    _retype("manual", "default")
