"""widget: the app's secret for signed user ids, visitor sessions

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import threadline.db.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = threadline.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("widget_secret", sa.String(length=64), nullable=True))
    op.create_table(
        "widget_sessions",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("app_id", _ID, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["apps.id"],
            name=op.f("fk_widget_sessions_app_id_apps"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_widget_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_widget_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_widget_sessions_token_hash")),
    )
    with op.batch_alter_table("widget_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_widget_sessions_user", ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("widget_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_widget_sessions_user")
    op.drop_table("widget_sessions")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite 3.35+ drops a column in place. The batch way copies `apps` and drops the
        # old table, which SQLite refuses ("database table is locked") once data is there.
        op.execute("ALTER TABLE apps DROP COLUMN widget_secret")
    else:
        op.drop_column("apps", "widget_secret")
