"""Managing an app through the API: admins, channels and tokens (the `admin` scope)."""

from __future__ import annotations

import anyio
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from threadline.apps import queries as app_q
from threadline.apps.repository import AppRepository
from threadline.apps.service import (
    ALL_SCOPES,
    forget_tokens,
    hash_password,
    hash_token,
    issue_token,
    session_token_name,
    utcnow,
)
from threadline.core.errors import InvalidParameter, NotFound
from threadline.db.engine import Database
from threadline.db.schema import admins, api_tokens, channels

MAX_NAME_CHARS = 255


def _name(name: str) -> str:
    if not name.strip():
        raise InvalidParameter("name", "must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidParameter("name", f"at most {MAX_NAME_CHARS} characters")
    return name.strip()


async def add_admin(
    db: Database,
    app_id: int,
    *,
    name: str,
    email: str | None,
    avatar: str | None,
    password: str | None,
) -> app_q.AdminRow:
    name = _name(name)
    email = email.strip().lower() if email and email.strip() else None
    # argon2 is deliberately slow: keep it off the event loop.
    password_hash = await anyio.to_thread.run_sync(hash_password, password) if password else None
    try:
        async with db.write() as conn:
            if email is not None and await app_q.admin_with_email(conn, app_id, email):
                raise InvalidParameter("email", "another admin of the app has it")
            ident = await AppRepository(conn).create_admin(
                app_id, name, email, password_hash, avatar, utcnow()
            )
            found = await app_q.admins_by_id(conn, app_id, [ident])
    except IntegrityError:
        raise InvalidParameter("email", "another admin of the app has it") from None
    return found[ident]


async def remove_admin(db: Database, app_id: int, admin_id: int) -> None:
    """The admin can no longer be assigned or write; history keeps their name."""
    async with db.write() as conn:
        result = await conn.execute(
            update(admins)
            .where(admins.c.id == admin_id, admins.c.app_id == app_id, admins.c.removed.is_(None))
            .values(removed=utcnow())
        )
        if not result.rowcount:
            raise NotFound("admin", admin_id)
        # A removed operator is signed out of the inbox everywhere.
        await conn.execute(
            update(api_tokens)
            .where(
                api_tokens.c.app_id == app_id,
                api_tokens.c.name == session_token_name(admin_id),
                api_tokens.c.revoked.is_(None),
            )
            .values(revoked=utcnow())
        )
    forget_tokens(db)


async def add_channel(
    db: Database, app_id: int, *, name: str, type_: str, avatar: str | None
) -> app_q.ChannelRow:
    name = _name(name)
    async with db.write() as conn:
        ident = await AppRepository(conn).create_channel(app_id, name, type_, utcnow())
        if avatar:
            await conn.execute(update(channels).where(channels.c.id == ident).values(avatar=avatar))
        return (await app_q.channels_by_id(conn, app_id, [ident]))[ident]


async def remove_channel(db: Database, app_id: int, channel_id: int) -> None:
    """Conversations keep naming a removed channel; it leaves lists and takes no new ones."""
    async with db.write() as conn:
        default_channel, _ = await app_q.app_defaults(conn, app_id)
        if default_channel == channel_id:
            raise InvalidParameter("id", "the app's default channel cannot be removed")
        result = await conn.execute(
            update(channels)
            .where(
                channels.c.id == channel_id,
                channels.c.app_id == app_id,
                channels.c.removed.is_(None),
            )
            .values(removed=utcnow())
        )
        if not result.rowcount:
            raise NotFound("channel", channel_id)


async def add_token(
    db: Database, app_id: int, *, name: str, scopes: list[str]
) -> tuple[app_q.TokenRow, str]:
    """A new token with the chosen scopes; its text is returned here and never again."""
    name = _name(name)
    if not scopes:
        raise InvalidParameter("scopes", f"choose one or more of {', '.join(ALL_SCOPES)}")
    unique = list(dict.fromkeys(scopes))
    async with db.write() as conn:
        token = await issue_token(AppRepository(conn), app_id, name, unique, utcnow())
        record = await AppRepository(conn).token_by_hash(hash_token(token))
        assert record is not None
        row = await app_q.token(conn, app_id, record.id)
    assert row is not None
    return row, token


async def revoke_token(db: Database, app_id: int, token_id: int) -> None:
    async with db.write() as conn:
        result = await conn.execute(
            update(api_tokens)
            .where(
                api_tokens.c.id == token_id,
                api_tokens.c.app_id == app_id,
                api_tokens.c.revoked.is_(None),
            )
            .values(revoked=utcnow())
        )
        if not result.rowcount:
            raise NotFound("token", token_id)
    forget_tokens(db)


async def default_sender(db: Database, app_id: int) -> int:
    async with db.read() as conn:
        _, sender = await app_q.app_defaults(conn, app_id)
    if sender is None:
        raise NotFound("app", app_id)
    return sender
