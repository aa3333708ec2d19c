"""deployment id, sign-in attempts, password resets, widget session use

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-17 09:00:00

`deployment` holds one row, `id`: a random name of this database, made here once. The
processes that share the database share it, and deployments that share a Redis tell their
bus messages apart by it (threadline.events.realtime).

`sign_in_attempts` counts sign-in attempts per client address and per account, shared by
every process (threadline.ui.service.LoginGuard).

`password_resets`: one-time links to set an admin's password, issued by
`threadline password reset` (stored hashed, with an expiry).

`widget_sessions.last_used`: when a visitor's session was last used (existing sessions:
their creation), so that sessions idle too long end.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import threadline.db.types

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = threadline.db.types.UTCDateTime(timezone=True)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    deployment = op.create_table(
        "deployment",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_deployment")),
    )
    op.bulk_insert(deployment, [{"key": "id", "value": secrets.token_hex(8)}])
    op.create_table(
        "sign_in_attempts",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_allowed", _TS, nullable=False),
        sa.Column("updated", _TS, nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_sign_in_attempts")),
    )
    with op.batch_alter_table("sign_in_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_sign_in_attempts_updated", ["updated"], unique=False)
    op.create_table(
        "password_resets",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("app_id", _ID, nullable=False),
        sa.Column("admin_id", _ID, nullable=False),
        sa.Column("created", _TS, nullable=False),
        sa.Column("expires", _TS, nullable=False),
        sa.Column("used", _TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["apps.id"],
            name=op.f("fk_password_resets_app_id_apps"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["admin_id"],
            ["admins.id"],
            name=op.f("fk_password_resets_admin_id_admins"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_password_resets")),
    )
    with op.batch_alter_table("widget_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_used", _TS, nullable=True))
    op.execute("UPDATE widget_sessions SET last_used = created")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # As in 0011: SQLite 3.35+ drops a column in place; the batch copy is refused.
        op.execute("ALTER TABLE widget_sessions DROP COLUMN last_used")
    else:
        op.drop_column("widget_sessions", "last_used")
    op.drop_table("password_resets")
    with op.batch_alter_table("sign_in_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_sign_in_attempts_updated")
    op.drop_table("sign_in_attempts")
    op.drop_table("deployment")
