"""roles and audit: admins' roles, tokens' issuers, the audit log

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-21 09:00:00

Every admin gets a role. In each app, the first admin (lowest id) that is not removed and
has a password (an inbox login) becomes the owner; an app whose admins have no password
makes its first admin that is not removed the owner. Every other admin becomes an operator:
before this revision any operator could manage the app, and the owner now decides who
administers it. Tokens issued from the command line, which existing integration tokens are
taken to be, act as owners.

Tokens record their issuer. Inbox sessions ("inbox session of admin N" with an expiry, see
revision 0011) are marked as sessions issued by admin N; every other existing token gets no
issuing admin (as if issued from the command line).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import threadline.db.types

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = threadline.db.types.UTCDateTime(timezone=True)
_JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
# threadline.ui.service's session name as of this revision.
_SESSION_NAME = re.compile(r"inbox session of admin (\d+)")

_admins = sa.table(
    "admins",
    sa.column("id", sa.BigInteger()),
    sa.column("app_id", sa.BigInteger()),
    sa.column("password_hash", sa.String()),
    sa.column("removed", _TS),
    sa.column("role", sa.String()),
)
_tokens = sa.table(
    "api_tokens",
    sa.column("id", sa.BigInteger()),
    sa.column("name", sa.String()),
    sa.column("expires", _TS),
    sa.column("issuer_admin_id", sa.BigInteger()),
    sa.column("session", sa.Boolean()),
)


def _owners(bind: sa.Connection) -> list[int]:
    """Per app, the admin that becomes its owner."""
    rows = bind.execute(
        sa.select(_admins.c.id, _admins.c.app_id, _admins.c.password_hash)
        .where(_admins.c.removed.is_(None))
        .order_by(_admins.c.app_id, _admins.c.id)
    ).all()
    chosen: dict[int, tuple[bool, int]] = {}
    for row in rows:
        login = row.password_hash is not None
        if row.app_id not in chosen or (login and not chosen[row.app_id][0]):
            chosen[row.app_id] = (login, row.id)
    return sorted(ident for _, ident in chosen.values())


def upgrade() -> None:
    with op.batch_alter_table("admins", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("role", sa.String(length=16), server_default="operator", nullable=False)
        )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("issuer_admin_id", _ID, nullable=True))
        batch_op.add_column(sa.Column("issuer_token_id", _ID, nullable=True))
        batch_op.add_column(
            sa.Column("session", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "audit_log",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("app_id", _ID, nullable=False),
        sa.Column("created", _TS, nullable=False),
        sa.Column("actor_kind", sa.String(length=8), nullable=False),
        sa.Column("actor_admin_id", _ID, nullable=True),
        sa.Column("actor_token_id", _ID, nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("object_type", sa.String(length=32), nullable=False),
        sa.Column("object_id", _ID, nullable=True),
        sa.Column("details", _JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_audit_log_app_id_apps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_app_id_id", "audit_log", ["app_id", "id"], unique=False)

    bind = op.get_bind()
    owners = _owners(bind)
    if owners:
        bind.execute(sa.update(_admins).where(_admins.c.id.in_(owners)).values(role="owner"))
    rows = bind.execute(
        sa.select(_tokens.c.id, _tokens.c.name).where(
            _tokens.c.name.like("inbox session of admin %"), _tokens.c.expires.is_not(None)
        )
    ).all()
    sessions = [
        {"ident": row.id, "admin": int(matched.group(1))}
        for row in rows
        if (matched := _SESSION_NAME.fullmatch(row.name))
    ]
    if sessions:
        bind.execute(
            sa.update(_tokens)
            .where(_tokens.c.id == sa.bindparam("ident"))
            .values(issuer_admin_id=sa.bindparam("admin"), session=True),
            sessions,
        )


def downgrade() -> None:
    op.drop_index("ix_audit_log_app_id_id", table_name="audit_log")
    op.drop_table("audit_log")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite 3.35+ drops a column in place. The batch way copies the table and drops
        # the old one, which SQLite refuses ("database table is locked") once data is there.
        for column in ("session", "issuer_token_id", "issuer_admin_id"):
            op.execute(f"ALTER TABLE api_tokens DROP COLUMN {column}")
        op.execute("ALTER TABLE admins DROP COLUMN role")
    else:
        for column in ("session", "issuer_token_id", "issuer_admin_id"):
            op.drop_column("api_tokens", column)
        op.drop_column("admins", "role")
