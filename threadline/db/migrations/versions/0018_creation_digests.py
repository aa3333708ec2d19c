"""creation digests: `random_digest` on admins, channels, api tokens and webhook endpoints

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-18 09:00:00

A creation retried with its `random_id` is compared with the first request's content
through this fingerprint (threadline.core.idempotency.content_digest): other content is
refused (409 IdempotencyKeyReused). Existing rows get NULL: their first request is not
known, so a retry of theirs is answered as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("admins", "channels", "api_tokens", "webhook_endpoints")


def upgrade() -> None:
    for table in TABLES:
        # A nullable column without a default: SQLite adds it in place (no table copy).
        op.add_column(table, sa.Column("random_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in reversed(TABLES):
        if sqlite:
            # SQLite 3.35+ drops an unindexed column in place (see 0009).
            op.execute(f"ALTER TABLE {table} DROP COLUMN random_digest")
        else:
            op.drop_column(table, "random_digest")
