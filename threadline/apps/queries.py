"""Read-side queries about an app's admins, senders, channels, users and tokens.

Every query is scoped by `app_id`: an id of another app reads as absent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Table, any_, bindparam, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.apps.repository import person_columns
from threadline.core.model import Admin, Channel, Sender, User
from threadline.db.direct import DirectSelect, DriverConnection
from threadline.db.schema import admins, api_tokens, apps, channels, senders, users

# The read side returns the core's entities under the names its callers use.
AdminRow = Admin
SenderRow = Sender
ChannelRow = Channel
UserRow = User


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: int
    name: str
    prefix: str
    scopes: list[str]
    created: datetime
    # Inbox sign-ins expire; tokens made through the API do not (None).
    expires: datetime | None
    # The admin who issued it (None: the command line), and whether it is their session.
    issuer_admin_id: int | None = None
    session: bool = False


def _ids(ids: Iterable[int | None]) -> list[int]:
    return sorted({i for i in ids if i is not None})


async def created_with_key(
    conn: AsyncConnection, table: Table, app_id: int, random_id: int
) -> tuple[int, str | None] | None:
    """The id of the row of `table` (admins, channels, api_tokens, webhook_endpoints) that
    the app's creation with idempotency key `random_id` made, removed or revoked ones
    included, and the digest of that creation's content (None for rows made without one)."""
    query = select(table.c.id, table.c.random_digest).where(
        table.c.app_id == app_id, table.c.random_id == random_id
    )
    row = (await conn.execute(query)).first()
    return (int(row.id), row.random_digest) if row is not None else None


async def app_defaults(conn: AsyncConnection, app_id: int) -> tuple[int | None, int | None]:
    """The app's (default channel, default sender)."""
    query = select(apps.c.default_channel_id, apps.c.default_sender_id).where(apps.c.id == app_id)
    row = (await conn.execute(query)).first()
    return (row.default_channel_id, row.default_sender_id) if row else (None, None)


_ADMIN_COLUMNS = person_columns(admins)
_SENDER_COLUMNS = person_columns(senders)
_IDS = bindparam("ids", type_=postgresql.ARRAY(BigInteger))
_ADMINS_BY_ID = DirectSelect(
    select(*_ADMIN_COLUMNS).where(admins.c.app_id == bindparam("app_id"), admins.c.id == any_(_IDS))
)
_SENDERS_BY_ID = DirectSelect(
    select(*_SENDER_COLUMNS).where(
        senders.c.app_id == bindparam("app_id"), senders.c.id == any_(_IDS)
    )
)


async def admins_by_id(
    conn: AsyncConnection, app_id: int, ids: Iterable[int | None]
) -> dict[int, AdminRow]:
    """Admins of the app by id, removed ones included (they still appear in history)."""
    wanted = _ids(ids)
    if not wanted:
        return {}
    if conn.dialect.name == "postgresql":  # precompiled: it runs for every event streamed
        params = {"app_id": app_id, "ids": wanted}
        rows = await DriverConnection(conn).select(_ADMINS_BY_ID, params)
        return {r["id"]: AdminRow(**r) for r in rows}
    query = select(*_ADMIN_COLUMNS).where(admins.c.app_id == app_id, admins.c.id.in_(wanted))
    return {
        r.id: AdminRow(r.id, r.name, r.avatar, r.email, r.created)
        for r in await conn.execute(query)
    }


async def list_admins(conn: AsyncConnection, app_id: int) -> list[AdminRow]:
    query = (
        select(admins.c.id, admins.c.name, admins.c.avatar, admins.c.email, admins.c.created)
        .where(admins.c.app_id == app_id, admins.c.removed.is_(None))
        .order_by(admins.c.id)
    )
    return [AdminRow(r.id, r.name, r.avatar, r.email, r.created) for r in await conn.execute(query)]


async def admin_roles(conn: AsyncConnection, app_id: int, ids: Iterable[int]) -> dict[int, str]:
    """The roles of admins of the app, by id (removed ones included)."""
    wanted = _ids(ids)
    if not wanted:
        return {}
    query = select(admins.c.id, admins.c.role).where(
        admins.c.app_id == app_id, admins.c.id.in_(wanted)
    )
    return {int(r.id): str(r.role) for r in await conn.execute(query)}


async def admin_with_email(conn: AsyncConnection, app_id: int, email: str) -> int | None:
    query = select(admins.c.id).where(admins.c.app_id == app_id, admins.c.email == email)
    ident = (await conn.execute(query)).scalar_one_or_none()
    return int(ident) if ident is not None else None


async def senders_by_id(
    conn: AsyncConnection, app_id: int, ids: Iterable[int | None]
) -> dict[int, SenderRow]:
    wanted = _ids(ids)
    if not wanted:
        return {}
    if conn.dialect.name == "postgresql":
        params = {"app_id": app_id, "ids": wanted}
        rows = await DriverConnection(conn).select(_SENDERS_BY_ID, params)
        return {r["id"]: SenderRow(**r) for r in rows}
    query = select(*_SENDER_COLUMNS).where(senders.c.app_id == app_id, senders.c.id.in_(wanted))
    return {
        r.id: SenderRow(r.id, r.name, r.avatar, r.email_name, bool(r.is_default))
        for r in await conn.execute(query)
    }


async def channels_by_id(
    conn: AsyncConnection, app_id: int, ids: Iterable[int | None]
) -> dict[int, ChannelRow]:
    wanted = _ids(ids)
    if not wanted:
        return {}
    query = select(channels.c.id, channels.c.name, channels.c.type, channels.c.avatar).where(
        channels.c.app_id == app_id, channels.c.id.in_(wanted)
    )
    return {r.id: ChannelRow(r.id, r.name, r.type, r.avatar) for r in await conn.execute(query)}


async def list_channels(conn: AsyncConnection, app_id: int) -> list[ChannelRow]:
    query = (
        select(channels.c.id, channels.c.name, channels.c.type, channels.c.avatar)
        .where(channels.c.app_id == app_id, channels.c.removed.is_(None))
        .order_by(channels.c.id)
    )
    return [ChannelRow(r.id, r.name, r.type, r.avatar) for r in await conn.execute(query)]


def _user(row: Any) -> UserRow:
    return UserRow(row.id, row.user_id, row.props or {}, row.created, row.removed)


_USER_COLUMNS = (users.c.id, users.c.user_id, users.c.props, users.c.created, users.c.removed)


async def users_by_id(
    conn: AsyncConnection, app_id: int, ids: Iterable[int | None]
) -> dict[int, UserRow]:
    wanted = _ids(ids)
    if not wanted:
        return {}
    query = select(*_USER_COLUMNS).where(users.c.app_id == app_id, users.c.id.in_(wanted))
    return {r.id: _user(r) for r in await conn.execute(query)}


async def user(conn: AsyncConnection, app_id: int, user_id: int) -> UserRow | None:
    query = select(*_USER_COLUMNS).where(users.c.app_id == app_id, users.c.id == user_id)
    row = (await conn.execute(query)).first()
    return _user(row) if row else None


async def user_by_site_id(conn: AsyncConnection, app_id: int, site_user_id: str) -> UserRow | None:
    query = select(*_USER_COLUMNS).where(users.c.app_id == app_id, users.c.user_id == site_user_id)
    row = (await conn.execute(query)).first()
    return _user(row) if row else None


_TOKEN_COLUMNS = (
    api_tokens.c.id,
    api_tokens.c.name,
    api_tokens.c.prefix,
    api_tokens.c.scopes,
    api_tokens.c.created,
    api_tokens.c.expires,
    api_tokens.c.issuer_admin_id,
    api_tokens.c.session,
)


def _token(r: Any) -> TokenRow:
    return TokenRow(
        r.id,
        r.name,
        r.prefix,
        list(r.scopes),
        r.created,
        r.expires,
        r.issuer_admin_id,
        bool(r.session),
    )


async def list_tokens(conn: AsyncConnection, app_id: int, now: datetime) -> list[TokenRow]:
    """The tokens that still work at `now`: neither revoked nor expired."""
    t = api_tokens.c
    query = (
        select(*_TOKEN_COLUMNS)
        .where(
            t.app_id == app_id,
            t.revoked.is_(None),
            or_(t.expires.is_(None), t.expires > now),
        )
        .order_by(t.id)
    )
    return [_token(r) for r in await conn.execute(query)]


async def token(
    conn: AsyncConnection, app_id: int, token_id: int, *, revoked: bool = False
) -> TokenRow | None:
    """One token of the app; a revoked one only with `revoked`."""
    t = api_tokens.c
    query = select(*_TOKEN_COLUMNS).where(t.app_id == app_id, t.id == token_id)
    if not revoked:
        query = query.where(t.revoked.is_(None))
    r = (await conn.execute(query)).first()
    return _token(r) if r else None
