"""The widget's reads and writes: the app's widget secret, visitor sessions, a user's list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.conversations.repository import state_from_row
from threadline.core.model import ConversationState
from threadline.db.schema import apps, conversations, users, widget_sessions


@dataclass(frozen=True, slots=True)
class AppWidget:
    name: str
    secret: str | None


async def app_widget(conn: AsyncConnection, app_id: int) -> AppWidget | None:
    query = select(apps.c.name, apps.c.widget_secret).where(apps.c.id == app_id)
    row = (await conn.execute(query)).first()
    return AppWidget(row.name, row.widget_secret) if row else None


async def set_secret_once(conn: AsyncConnection, app_id: int, secret: str) -> str:
    """Store `secret` unless the app has one already (a concurrent first use); the kept one."""
    await conn.execute(
        update(apps)
        .where(apps.c.id == app_id, apps.c.widget_secret.is_(None))
        .values(widget_secret=secret)
    )
    kept = (
        await conn.execute(select(apps.c.widget_secret).where(apps.c.id == app_id))
    ).scalar_one()
    return str(kept)


async def create_session(
    conn: AsyncConnection, app_id: int, user_id: int, token_hash: str, now: datetime
) -> int:
    result = await conn.execute(
        widget_sessions.insert()
        .values(app_id=app_id, user_id=user_id, token_hash=token_hash, created=now)
        .returning(widget_sessions.c.id)
    )
    return int(result.scalar_one())


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: int
    app_id: int
    user_id: int


async def session_by_hash(conn: AsyncConnection, token_hash: str) -> SessionRow | None:
    """The session of a live user (an erased user's sessions no longer work)."""
    s = widget_sessions.c
    query = (
        select(s.id, s.app_id, s.user_id)
        .select_from(widget_sessions.join(users, users.c.id == s.user_id))
        .where(s.token_hash == token_hash, users.c.removed.is_(None))
    )
    row = (await conn.execute(query)).first()
    return SessionRow(row.id, row.app_id, row.user_id) if row else None


async def user_conversations(
    conn: AsyncConnection, app_id: int, user_id: int, limit: int
) -> list[ConversationState]:
    """The user's conversations, newest `last_update` first, removed ones left out."""
    c = conversations.c
    query = (
        select(conversations)
        .where(c.app_id == app_id, c.user_id == user_id, c.removed.is_(None))
        .order_by(c.last_update.desc(), c.id.desc())
        .limit(limit)
    )
    return [state_from_row(row) for row in await conn.execute(query)]


async def first_app_id(conn: AsyncConnection) -> int | None:
    """The oldest app: the one a fresh `threadline demo` created."""
    found = (await conn.execute(select(apps.c.id).order_by(apps.c.id).limit(1))).scalar()
    return int(found) if found is not None else None
