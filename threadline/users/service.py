"""Users: resolving the path's user id, creating a user on first contact, erasing one.

A path names a user by Threadline's id, or with `by_user_id` by the site's own id.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.apps import queries as app_q
from threadline.apps.service import utcnow
from threadline.conversations import queries as conv_q
from threadline.conversations import service as conversations
from threadline.core import events as ev
from threadline.core.errors import InvalidParameter, LookupFailed, NotFound
from threadline.db.engine import Database
from threadline.db.schema import conversations as conversations_t
from threadline.db.schema import email_contacts, email_participants, users

MAX_SITE_USER_ID_CHARS = 255


def parse_user_ref(ident: str, by_user_id: bool) -> int | str:
    """The path's user id: Threadline's (an integer), or the site's own (any text)."""
    if by_user_id:
        if not ident.strip() or len(ident) > MAX_SITE_USER_ID_CHARS or "\x00" in ident:
            raise InvalidParameter("id", f"a user_id has 1-{MAX_SITE_USER_ID_CHARS} characters")
        return ident
    if not (ident.isascii() and ident.isdigit()) or not 0 < int(ident) < 2**63:
        raise InvalidParameter("id", "must be a user id (or send by_user_id=true)")
    return int(ident)


async def find_user(
    conn: AsyncConnection, app_id: int, ref: int | str, *, include_removed: bool = False
) -> app_q.UserRow:
    """The user, or NotFound (Threadline id) / LookupError (the site's id)."""
    if isinstance(ref, str):
        row = await app_q.user_by_site_id(conn, app_id, ref)
        if row is None or (row.removed is not None and not include_removed):
            raise LookupFailed(f"no user with user_id {ref!r}")
        return row
    row = await app_q.user(conn, app_id, ref)
    if row is None or (row.removed is not None and not include_removed):
        raise NotFound("user", ref)
    return row


async def resolve(db: Database, app_id: int, ref: int | str) -> app_q.UserRow:
    async with db.read() as conn:
        return await find_user(conn, app_id, ref)


async def resolve_or_create(db: Database, app_id: int, ref: int | str) -> int:
    """Like `resolve`, but a site user id nobody has yet creates that user (race-safe)."""
    if isinstance(ref, int):
        return (await resolve(db, app_id, ref)).id
    async with db.read() as conn:
        row = await app_q.user_by_site_id(conn, app_id, ref)
    if row is not None:
        if row.removed is not None:
            raise LookupFailed(f"user {ref!r} was erased")
        return row.id
    async with db.write() as conn:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = (
            insert(users)
            .values(app_id=app_id, user_id=ref, props={}, created=utcnow())
            .on_conflict_do_nothing(index_elements=["app_id", "user_id"])
        )
        await conn.execute(stmt)
        ident = (
            await conn.execute(
                select(users.c.id).where(users.c.app_id == app_id, users.c.user_id == ref)
            )
        ).scalar_one()
    return int(ident)


async def erase(db: Database, app_id: int, ref: int | str) -> list[int]:
    """GDPR erasure: the user's props and site id are wiped, every conversation removed.

    The user is marked removed first, so no conversation can start meanwhile; running it
    again finishes an erasure that was interrupted. Answers the conversations it removed.
    """
    async with db.write() as conn:
        row = await find_user(conn, app_id, ref, include_removed=True)
        await conn.execute(
            update(users)
            .where(users.c.id == row.id, users.c.app_id == app_id)
            .values(props={}, user_id=None, removed=row.removed or utcnow())
        )
        # The e-mail addresses that led to the user are forgotten with them, and those
        # their conversations were written to (colleagues they copied).
        await conn.execute(email_contacts.delete().where(email_contacts.c.user_id == row.id))
        await conn.execute(
            email_participants.delete().where(
                email_participants.c.conversation_id.in_(
                    select(conversations_t.c.id).where(
                        conversations_t.c.app_id == app_id, conversations_t.c.user_id == row.id
                    )
                )
            )
        )
    removed: list[int] = []
    # Two passes: a conversation whose start raced with the erasure is caught by the second.
    for _ in range(2):
        async with db.read() as conn:
            ids = await conv_q.live_conversation_ids(conn, app_id, row.id)
        for conversation_id in ids:
            await conversations.perform(db, app_id, conversation_id, ev.Remove())
        removed.extend(ids)
    return removed
