"""Managing an app through the API: admins, channels and tokens (the `admin` scope).

Each change names its `actor` (`threadline.core.access`): the rules of who may manage whom
are checked against the actor's role, and changes to admins, roles and tokens are written
to the audit log in the change's own transaction. The default actor is the command line
(whoever runs the server): routes always pass the caller's.

Each creation takes an optional `random_id`, the client's idempotency key: a retry with the
same key in the same app creates nothing and answers what the first request created. A
retry must ask for the same content (compared through a digest of the first request's,
kept on the row): the key reused for other content is refused with `IdempotencyKeyReused`
(409), as a retried conversation write is. Admins, channels, tokens and webhook endpoints
each have their own keys, all through `create_once`. The unique index on (app_id,
random_id) settles concurrent duplicates: the loser's transaction fails and it answers the
winner's object.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from sqlalchemy import Table, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.apps import queries as app_q
from threadline.apps.repository import AppRepository
from threadline.apps.service import (
    ALL_SCOPES,
    check_scopes,
    forget_tokens,
    hash_password,
    issue_token_with_id,
    utcnow,
)
from threadline.audit import repository as audit
from threadline.core.access import (
    CLI,
    Actor,
    Role,
    check_keeps_an_owner,
    check_manage_admin,
    check_manage_token,
    need,
)
from threadline.core.errors import InvalidParameter, NotFound
from threadline.core.idempotency import check_created_retry, content_digest
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
    conn: AsyncConnection, table: Table, app_id: int, random_id: int | None, digest: str | None
) -> int | None:
    """The row of `table` that the app's creation with this key made, if any; refused
    (`IdempotencyKeyReused`) when that creation asked for other content than `digest`."""
    if random_id is None:
        return None
    found = await app_q.created_with_key(conn, table, app_id, random_id)
    if found is None:
        return None
    ident, stored = found
    check_created_retry(stored, digest)
    return ident


async def _created_with(
    db: Database, table: Table, app_id: int, random_id: int | None, digest: str | None
) -> int | None:
    """`_made_with` in a transaction of its own: after a failed creation, it sees the
    concurrent duplicate that won."""
    if random_id is None:
        return None
    async with db.read() as conn:
        return await _made_with(conn, table, app_id, random_id, digest)


async def create_once(
    db: Database,
    table: Table,
    app_id: int,
    random_id: int | None,
    create: Callable[[AsyncConnection], Awaitable[int]],
    digest: str | None = None,
) -> tuple[int, bool]:
    """The id of the row of `table` that the app's creation with `random_id` made, and
    False; or, when there is none (or no key), the id of the row `create` makes now, and
    True. `digest` is the request's content (`content_digest`): a key whose creation had
    other content is refused. The key and digest are stored on the new row in the same
    transaction: a concurrent duplicate fails on the unique index, its transaction rolls
    back, and it answers the winner. Any other integrity error is raised."""
    try:
        async with db.write() as conn:
            first = await _made_with(conn, table, app_id, random_id, digest)
            if first is not None:
                return first, False
            ident = await create(conn)
            if random_id is not None:
                await conn.execute(
                    update(table)
                    .where(table.c.id == ident)
                    .values(random_id=random_id, random_digest=digest)
                )
            return ident, True
    except IntegrityError:
        first = await _created_with(db, table, app_id, random_id, digest)
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
    role: Role = Role.OPERATOR,
    actor: Actor = CLI,
) -> app_q.AdminRow:
    """A new admin with `role`. A retry with the first request's `random_id` answers the
    first admin, even when it was removed since (it stays removed: the key never creates a
    second). The retry's name, e-mail, avatar and role must be the first request's; its
    password is not compared (only a slow hash of it is ever kept)."""
    check_manage_admin(actor, role)
    name = _name(name)
    email = email.strip().lower() if email and email.strip() else None
    if password:
        problem = password_problem(password, email=email, name=name)
        if problem is not None:
            raise InvalidParameter("password", problem)
    digest = content_digest({"name": name, "email": email, "avatar": avatar, "role": role.value})
    # A retry skips the password hash, and must not meet its own email as taken.
    first = await _created_with(db, admins, app_id, random_id, digest)
    if first is not None:
        return await _admin(db, app_id, first)
    # argon2 is deliberately slow: keep it off the event loop.
    password_hash = await anyio.to_thread.run_sync(hash_password, password) if password else None

    async def create(conn: AsyncConnection) -> int:
        if email is not None and await app_q.admin_with_email(conn, app_id, email):
            raise InvalidParameter("email", "another admin of the app has it")
        now = utcnow()
        ident = await AppRepository(conn).create_admin(
            app_id, name, email, password_hash, avatar, now, role
        )
        await audit.record(conn, app_id, actor, "admin.create", "admin", ident, now, role=role)
        return ident

    try:
        ident, _ = await create_once(db, admins, app_id, random_id, create, digest)
    except (IntegrityError, InvalidParameter):
        # The email was taken meanwhile (seen by the check, or by its unique index): by a
        # concurrent duplicate of this very request, whose admin is the answer, or by
        # another admin.
        first = await _created_with(db, admins, app_id, random_id, digest)
        if first is None:
            raise InvalidParameter("email", "another admin of the app has it") from None
        ident = first
    return await _admin(db, app_id, ident)


async def _role_for_update(conn: AsyncConnection, app_id: int, admin_id: int) -> Role:
    """The role of an admin of the app (not removed), its row locked until the commit."""
    query = (
        select(admins.c.role)
        .where(admins.c.id == admin_id, admins.c.app_id == app_id, admins.c.removed.is_(None))
        .with_for_update()
    )
    role = (await conn.execute(query)).scalar_one_or_none()
    if role is None:
        raise NotFound("admin", admin_id)
    return Role(role)


async def _other_owners(conn: AsyncConnection, app_id: int, admin_id: int) -> int:
    """How many owners the app keeps besides `admin_id` (their rows locked: two owners
    removing each other at once cannot both succeed)."""
    query = (
        select(admins.c.id)
        .where(
            admins.c.app_id == app_id,
            admins.c.role == Role.OWNER.value,
            admins.c.removed.is_(None),
            admins.c.id != admin_id,
        )
        .with_for_update()
    )
    return len((await conn.execute(query)).all())


async def remove_admin(db: Database, app_id: int, admin_id: int, actor: Actor = CLI) -> None:
    """The admin can no longer be assigned or write; history keeps their name. Every token
    they issued, their inbox sessions included, is revoked with them."""
    async with db.write() as conn:
        role = await _role_for_update(conn, app_id, admin_id)
        check_manage_admin(actor, role)
        if role is Role.OWNER:
            check_keeps_an_owner(await _other_owners(conn, app_id, admin_id))
        now = utcnow()
        await conn.execute(update(admins).where(admins.c.id == admin_id).values(removed=now))
        revoked = await conn.execute(
            update(api_tokens)
            .where(
                api_tokens.c.app_id == app_id,
                api_tokens.c.issuer_admin_id == admin_id,
                api_tokens.c.revoked.is_(None),
            )
            .values(revoked=now)
        )
        await audit.record(
            conn,
            app_id,
            actor,
            "admin.remove",
            "admin",
            admin_id,
            now,
            role=role,
            tokens_revoked=revoked.rowcount,
        )
    forget_tokens(db)


async def reset_second_factor(
    db: Database, app_id: int, admin_id: int, actor: Actor = CLI
) -> app_q.AdminRow:
    """Turn an admin's second factor off (a lost phone): they sign in with their password
    alone, and may enrol again. Whoever may manage the admin may do it (an owner, or the
    command line, anyone; an administrator, operators)."""
    async with db.write() as conn:
        role = await _role_for_update(conn, app_id, admin_id)
        check_manage_admin(actor, role)
        had = await conn.execute(
            update(admins)
            .where(admins.c.id == admin_id, admins.c.totp_secret.is_not(None))
            .values(totp_secret=None, totp_pending=None, totp_last_step=None)
        )
        if had.rowcount:
            await audit.record(conn, app_id, actor, "admin.totp_reset", "admin", admin_id, utcnow())
    return await _admin(db, app_id, admin_id)


async def cli_reset_second_factor(db: Database, app_id: int, email: str) -> int:
    """`threadline admin reset-2fa`: the admin with this e-mail signs in with the password
    alone again; their id."""
    await _app_exists(db, app_id)
    async with db.read() as conn:
        query = select(admins.c.id).where(
            admins.c.app_id == app_id,
            func.lower(admins.c.email) == email.strip().lower(),
            admins.c.removed.is_(None),
        )
        admin_id = (await conn.execute(query)).scalar_one_or_none()
    if admin_id is None:
        raise NotFound("admin", email)
    await reset_second_factor(db, app_id, int(admin_id), CLI)
    return int(admin_id)


async def set_role(
    db: Database, app_id: int, admin_id: int, role: Role, actor: Actor = CLI
) -> app_q.AdminRow:
    """Give an admin another role: administrators promote and demote operators only; owners
    anyone, as long as an owner remains. Their sessions and tokens act with it at once."""
    async with db.write() as conn:
        current = await _role_for_update(conn, app_id, admin_id)
        check_manage_admin(actor, current)
        check_manage_admin(actor, role)
        if current is Role.OWNER and role is not Role.OWNER:
            check_keeps_an_owner(await _other_owners(conn, app_id, admin_id))
        if current is not role:
            now = utcnow()
            await conn.execute(
                update(admins).where(admins.c.id == admin_id).values(role=role.value)
            )
            await audit.record(
                conn, app_id, actor, "admin.role", "admin", admin_id, now, old=current, new=role
            )
    forget_tokens(db)
    return await _admin(db, app_id, admin_id)


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
    even when it was removed since (it stays removed: the key never creates a second); its
    name, type and avatar must be the first request's."""
    name = _name(name)
    digest = content_digest({"name": name, "type": type_, "avatar": avatar or None})

    async def create(conn: AsyncConnection) -> int:
        ident = await AppRepository(conn).create_channel(app_id, name, type_, utcnow())
        if avatar:
            await conn.execute(update(channels).where(channels.c.id == ident).values(avatar=avatar))
        return ident

    ident, _ = await create_once(db, channels, app_id, random_id, create, digest)
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
    db: Database,
    app_id: int,
    *,
    name: str,
    scopes: list[str],
    random_id: int | None = None,
    actor: Actor = CLI,
) -> tuple[app_q.TokenRow, str | None]:
    """A new token with the chosen scopes; its text is returned here and never again. It is
    issued by `actor`: it acts with the role of the actor's admin and dies with them.

    A retry with the first request's `random_id` answers the first token's record with no
    text (None: only its hash is stored), even when it was revoked since (it stays revoked:
    the key never creates a second). Its name and scopes (as a set) must be the first
    request's.
    """
    need(actor, Role.ADMINISTRATOR, "managing tokens")
    name = _name(name)
    if not scopes:
        raise InvalidParameter("scopes", f"choose one or more of {', '.join(ALL_SCOPES)}")
    unique = list(dict.fromkeys(scopes))
    # Checked before the key: a request that is wrong in itself is refused, retry or not.
    check_scopes(unique)
    digest = content_digest({"name": name, "scopes": sorted(unique)})
    issued: list[str] = []

    async def create(conn: AsyncConnection) -> int:
        now = utcnow()
        ident, text = await issue_token_with_id(
            AppRepository(conn), app_id, name, unique, now, issuer=actor
        )
        issued.append(text)
        await audit.record(
            conn, app_id, actor, "token.create", "token", ident, now, name=name, scopes=unique
        )
        return ident

    ident, created = await create_once(db, api_tokens, app_id, random_id, create, digest)
    async with db.read() as conn:
        row = await app_q.token(conn, app_id, ident, revoked=not created)
    assert row is not None
    return row, issued[-1] if created else None


async def _token_for_update(
    conn: AsyncConnection, app_id: int, token_id: int
) -> tuple[Role, int | None, bool]:
    """A working token's role (its issuer's, owner for the command line's), its issuing
    admin and whether it is a session; its row locked until the commit."""
    t = api_tokens.c
    query = (
        select(t.issuer_admin_id, t.session)
        .where(t.id == token_id, t.app_id == app_id, t.revoked.is_(None))
        .with_for_update()
    )
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound("token", token_id)
    if row.issuer_admin_id is None:
        return Role.OWNER, None, bool(row.session)
    role = (
        await conn.execute(
            select(admins.c.role).where(
                admins.c.id == row.issuer_admin_id, admins.c.app_id == app_id
            )
        )
    ).scalar_one_or_none()
    return Role(role or Role.OWNER), row.issuer_admin_id, bool(row.session)


async def revoke_token(db: Database, app_id: int, token_id: int, actor: Actor = CLI) -> None:
    """Revoke a token; not one that acts with a higher role than the actor's."""
    async with db.write() as conn:
        role, issuer, _ = await _token_for_update(conn, app_id, token_id)
        check_manage_token(actor, role)
        now = utcnow()
        await conn.execute(
            update(api_tokens).where(api_tokens.c.id == token_id).values(revoked=now)
        )
        await audit.record(
            conn, app_id, actor, "token.revoke", "token", token_id, now, issuer_admin=issuer
        )
    forget_tokens(db)


async def reown_token(
    db: Database, app_id: int, token_id: int, admin_id: int, actor: Actor = CLI
) -> app_q.TokenRow:
    """Make admin `admin_id` the token's issuer: it acts with their role from now on and
    dies with them (not with its former issuer). Inbox sessions cannot be re-owned. Neither
    the token's present role nor the new admin's may be above the actor's."""
    async with db.write() as conn:
        role, issuer, session = await _token_for_update(conn, app_id, token_id)
        if session:
            raise InvalidParameter("id", "an inbox session cannot be re-owned")
        check_manage_token(actor, role)
        check_manage_token(actor, await _role_for_update(conn, app_id, admin_id))
        now = utcnow()
        await conn.execute(
            update(api_tokens).where(api_tokens.c.id == token_id).values(issuer_admin_id=admin_id)
        )
        await audit.record(
            conn, app_id, actor, "token.reown", "token", token_id, now, old=issuer, new=admin_id
        )
        row = await app_q.token(conn, app_id, token_id)
    forget_tokens(db)
    assert row is not None
    return row


async def default_sender(db: Database, app_id: int) -> int:
    async with db.read() as conn:
        _, sender = await app_q.app_defaults(conn, app_id)
    if sender is None:
        raise NotFound("app", app_id)
    return sender


async def record_as_admin(db: Database, app_id: int, actor: Actor, admin_id: int | None) -> None:
    """The audit log's note that `actor` (a token) writes as admin `admin_id`; nothing for
    an id that is not an admin of the app (the write is refused anyway)."""
    async with db.write() as conn:
        if admin_id is None or not await AppRepository(conn).owned(admins, app_id, admin_id):
            return
        await audit.record(
            conn, app_id, actor, "conversation.as_admin", "admin", admin_id, utcnow()
        )


async def _app_exists(db: Database, app_id: int) -> None:
    async with db.read() as conn:
        if await AppRepository(conn).app(app_id) is None:
            raise NotFound("app", app_id)


async def cli_issue_token(
    db: Database, app_id: int, name: str, scopes: list[str]
) -> tuple[int, str]:
    """`threadline token create`: a token of an existing app, issued by the command line
    (it acts as an owner); its id and text."""
    await _app_exists(db, app_id)
    row, token = await add_token(db, app_id, name=name, scopes=scopes, actor=CLI)
    assert token is not None
    return row.id, token


async def cli_create_admin(
    db: Database, app_id: int, name: str, email: str, password: str, role: Role
) -> int:
    """`threadline admin create`: an admin with an inbox login, added by the command line."""
    if not email.strip():
        raise InvalidParameter("email", "must not be empty")
    await _app_exists(db, app_id)
    row = await add_admin(
        db, app_id, name=name, email=email, avatar=None, password=password, role=role, actor=CLI
    )
    return row.id
