"""Managing an app through the API: admins, channels and tokens (the `admin` scope).

Each creation takes an optional `random_id`, the client's idempotency key: a retry with the
same key in the same app creates nothing and answers what the first request created,
whatever its other parameters (as a retried conversation write does). Admins, channels,
tokens and webhook endpoints each have their own keys, all through `create_once`. The unique
index on (app_id, random_id) settles concurrent duplicates: the loser's transaction fails and
it answers the winner's object.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from sqlalchemy import Table, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.apps import queries as app_q
from threadline.apps.repository import AppRepository
from threadline.apps.service import (
    ALL_SCOPES,
    check_scopes,
    forget_tokens,
    hash_password,
    hash_token,
    issue_token,
    session_token_name,
    utcnow,
)
from threadline.core.errors import InvalidParameter, NotFound
from threadline.core.passwords import password_problem
from threadline.db.engine import Database
from threadline.db.schema import admins, api_tokens, channels

MAX_NAME_CHARS = 255


def _name(name: str) -> str:
    if not name.strip():
        raise InvalidParameter("name", "must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidParameter("name", f"at most {MAX_NAME_CHARS} characters")
    return name.strip()


async def _made_with(
    conn: AsyncConnection, table: Table, app_id: int, random_id: int | None
) -> int | None:
    """The row of `table` that the app's creation with this key made, if any."""
    if random_id is None:
        return None
    return await app_q.created_with_key(conn, table, app_id, random_id)


async def _created_with(
    db: Database, table: Table, app_id: int, random_id: int | None
) -> int | None:
    """`_made_with` in a transaction of its own: after a failed creation, it sees the
    concurrent duplicate that won."""
    if random_id is None:
        return None
    async with db.read() as conn:
        return await _made_with(conn, table, app_id, random_id)


async def create_once(
    db: Database,
    table: Table,
    app_id: int,
    random_id: int | None,
    create: Callable[[AsyncConnection], Awaitable[int]],
) -> tuple[int, bool]:
    """The id of the row of `table` that the app's creation with `random_id` made, and
    False; or, when there is none (or no key), the id of the row `create` makes now, and
    True. The key is stored on the new row in the same transaction: a concurrent duplicate
    fails on the unique index, its transaction rolls back, and it answers the winner. Any
    other integrity error is raised."""
    try:
        async with db.write() as conn:
            first = await _made_with(conn, table, app_id, random_id)
            if first is not None:
                return first, False
            ident = await create(conn)
            if random_id is not None:
                await conn.execute(
                    update(table).where(table.c.id == ident).values(random_id=random_id)
                )
            return ident, True
    except IntegrityError:
        first = await _created_with(db, table, app_id, random_id)
        if first is None:
            raise
        return first, False


async def _admin(db: Database, app_id: int, ident: int) -> app_q.AdminRow:
    async with db.read() as conn:
        return (await app_q.admins_by_id(conn, app_id, [ident]))[ident]


async def add_admin(
    db: Database,
    app_id: int,
    *,
    name: str,
    email: str | None,
    avatar: str | None,
    password: str | None,
    random_id: int | None = None,
) -> app_q.AdminRow:
    """A new admin. A retry with the first request's `random_id` answers the first admin,
    even when it was removed since (it stays removed: the key never creates a second)."""
    name = _name(name)
    email = email.strip().lower() if email and email.strip() else None
    if password:
        problem = password_problem(password, email=email, name=name)
        if problem is not None:
            raise InvalidParameter("password", problem)
    # A retry skips the password hash, and must not meet its own email as taken.
    first = await _created_with(db, admins, app_id, random_id)
    if first is not None:
        return await _admin(db, app_id, first)
    # argon2 is deliberately slow: keep it off the event loop.
    password_hash = await anyio.to_thread.run_sync(hash_password, password) if password else None

    async def create(conn: AsyncConnection) -> int:
        if email is not None and await app_q.admin_with_email(conn, app_id, email):
            raise InvalidParameter("email", "another admin of the app has it")
        return await AppRepository(conn).create_admin(
            app_id, name, email, password_hash, avatar, utcnow()
        )

    try:
        ident, _ = await create_once(db, admins, app_id, random_id, create)
    except (IntegrityError, InvalidParameter):
        # The email was taken meanwhile (seen by the check, or by its unique index): by a
        # concurrent duplicate of this very request, whose admin is the answer, or by
        # another admin.
        first = await _created_with(db, admins, app_id, random_id)
        if first is None:
            raise InvalidParameter("email", "another admin of the app has it") from None
        ident = first
    return await _admin(db, app_id, ident)


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
    db: Database,
    app_id: int,
    *,
    name: str,
    type_: str,
    avatar: str | None,
    random_id: int | None = None,
) -> app_q.ChannelRow:
    """A new channel. A retry with the first request's `random_id` answers the first channel,
    even when it was removed since (it stays removed: the key never creates a second)."""
    name = _name(name)

    async def create(conn: AsyncConnection) -> int:
        ident = await AppRepository(conn).create_channel(app_id, name, type_, utcnow())
        if avatar:
            await conn.execute(update(channels).where(channels.c.id == ident).values(avatar=avatar))
        return ident

    ident, _ = await create_once(db, channels, app_id, random_id, create)
    async with db.read() as conn:
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
    db: Database, app_id: int, *, name: str, scopes: list[str], random_id: int | None = None
) -> tuple[app_q.TokenRow, str | None]:
    """A new token with the chosen scopes; its text is returned here and never again.

    A retry with the first request's `random_id` answers the first token's record with no
    text (None: only its hash is stored), even when it was revoked since (it stays revoked:
    the key never creates a second).
    """
    name = _name(name)
    if not scopes:
        raise InvalidParameter("scopes", f"choose one or more of {', '.join(ALL_SCOPES)}")
    unique = list(dict.fromkeys(scopes))
    # Checked before the key: a request that is wrong in itself is refused, retry or not.
    check_scopes(unique)
    issued: list[str] = []

    async def create(conn: AsyncConnection) -> int:
        repo = AppRepository(conn)
        issued.append(await issue_token(repo, app_id, name, unique, utcnow()))
        record = await repo.token_by_hash(hash_token(issued[-1]))
        assert record is not None
        return record.id

    ident, created = await create_once(db, api_tokens, app_id, random_id, create)
    async with db.read() as conn:
        row = await app_q.token(conn, app_id, ident, revoked=not created)
    assert row is not None
    return row, issued[-1] if created else None


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
