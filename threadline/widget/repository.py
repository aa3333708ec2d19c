"""The widget's reads and writes: the app's widget secret, visitor sessions, a user's list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
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
        .values(app_id=app_id, user_id=user_id, token_hash=token_hash, created=now, last_used=now)
        .returning(widget_sessions.c.id)
    )
    return int(result.scalar_one())


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: int
    app_id: int
    user_id: int
    last_used: datetime


async def session_by_hash(
    conn: AsyncConnection, token_hash: str, used_since: datetime
) -> SessionRow | None:
    """The session of a live user (an erased user's sessions no longer work), used since
    `used_since` (an idle one has ended)."""
    s = widget_sessions.c
    last_used = func.coalesce(s.last_used, s.created)
    query = (
        select(s.id, s.app_id, s.user_id, last_used.label("last_used"))
        .select_from(widget_sessions.join(users, users.c.id == s.user_id))
        .where(s.token_hash == token_hash, users.c.removed.is_(None), last_used >= used_since)
    )
    row = (await conn.execute(query)).first()
    return SessionRow(row.id, row.app_id, row.user_id, row.last_used) if row else None


async def touch_session(conn: AsyncConnection, session_id: int, now: datetime) -> None:
    await conn.execute(
        update(widget_sessions).where(widget_sessions.c.id == session_id).values(last_used=now)
    )


async def rotate_secret(conn: AsyncConnection, app_id: int, secret: str) -> None:
    await conn.execute(update(apps).where(apps.c.id == app_id).values(widget_secret=secret))


async def end_signed_sessions(conn: AsyncConnection, app_id: int) -> None:
    """End the sessions of the app's signed-in site users (anonymous visitors keep theirs)."""
    signed = select(users.c.id).where(users.c.app_id == app_id, users.c.user_id.is_not(None))
    await conn.execute(
        delete(widget_sessions).where(
            widget_sessions.c.app_id == app_id, widget_sessions.c.user_id.in_(signed)
        )
    )


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
