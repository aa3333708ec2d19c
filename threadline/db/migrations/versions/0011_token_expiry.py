"""token expiry: `expires` on api tokens, set for inbox sessions

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-16 09:00:00

Inbox sign-ins (tokens named "inbox session of admin N") now end: existing ones get
created + 168 hours, the default lifetime when this revision was written, so sessions
older than that end at once. Every other token gets NULL and lasts until revoked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

import threadline.db.types

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = threadline.db.types.UTCDateTime(timezone=True)
# threadline.ui.service._SESSION_NAME_PATTERN as of this revision.
_SESSION_NAME = re.compile(r"inbox session of admin (\d+)")
_LIFETIME = timedelta(hours=168)

_tokens = sa.table(
    "api_tokens",
    sa.column("id", sa.BigInteger()),
    sa.column("name", sa.String()),
    sa.column("created", _TS),
    sa.column("expires", _TS),
)


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires", _TS, nullable=True))
    bind = op.get_bind()
    # LIKE narrows the rows; the pattern decides (LIKE's `_` and case rules are looser).
    rows = bind.execute(
        sa.select(_tokens.c.id, _tokens.c.name, _tokens.c.created).where(
            _tokens.c.name.like("inbox session of admin %")
        )
    ).all()
    sessions = [
        {"ident": row.id, "ends": row.created + _LIFETIME}
        for row in rows
        if _SESSION_NAME.fullmatch(row.name)
    ]
    if sessions:
        bind.execute(
            sa.update(_tokens)
            .where(_tokens.c.id == sa.bindparam("ident"))
            .values(expires=sa.bindparam("ends", type_=_TS)),
            sessions,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite 3.35+ drops a column in place. The batch way copies the table and drops
        # the old one, which SQLite refuses ("database table is locked") once data is there.
        op.execute("ALTER TABLE api_tokens DROP COLUMN expires")
    else:
        op.drop_column("api_tokens", "expires")
