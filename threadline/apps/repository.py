"""All SQL about apps, tokens, admins, channels, senders, users and starter messages."""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, bindparam, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.core.access import Role
from threadline.core.model import Admin, Sender
from threadline.db.direct import DirectSelect, DriverConnection
from threadline.db.schema import (
    admins,
    api_tokens,
    apps,
    channels,
    email_app_keys,
    messages,
    senders,
    users,
)


def new_mail_key() -> str:
    """The local part of an app's own e-mail address: random, so that no one reaches an
    app's inbox by guessing (an app's id is a small number); lower-case hex, as mail systems
    may change a local part's case."""
    return secrets.token_hex(10)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    app_id: int
    scopes: frozenset[str]
    expires: datetime | None = None
    # The admin who issued it (for a session: the signed-in admin); None: the command line.
    issuer_admin_id: int | None = None
    # The role it acts with: its issuing admin's, or owner for the command line's tokens.
    role: Role = Role.OWNER
    session: bool = False


def of_app(table: Table, ident: Any, app_id: Any) -> list[ColumnElement[bool]]:
    """Row `ident` of `table`, of app `app_id` and not removed (where the table removes)."""
    conditions = [table.c.id == ident, table.c.app_id == app_id]
    if "removed" in table.c:
        conditions.append(table.c.removed.is_(None))
    return conditions


def person_columns(table: Table) -> list[ColumnElement[Any]]:
    """What answers show of an admin or a sender: the fields of `Admin` or `Sender`."""
    columns: list[ColumnElement[Any]] = [table.c.id, table.c.name, table.c.avatar]
    if table is admins:
        columns += [admins.c.email, admins.c.created]
    elif table is senders:
        # Every e-mail of the app leaves from its default address (`<key>@<domain>`,
        # threadline.channels.email): the part before `@` is each sender's; empty while the
        # app has none yet.
        key = (
            select(email_app_keys.c.key)
            .where(email_app_keys.c.app_id == senders.c.app_id)
            .scalar_subquery()
        )
        columns += [
            func.coalesce(key, "").label("email_name"),
            exists()
            .where(apps.c.id == senders.c.app_id, apps.c.default_sender_id == senders.c.id)
            .label("is_default"),
        ]
    return columns


@functools.cache
def _owned_query(table: Table) -> DirectSelect:
    """Built once per table: every write checks the ids it names this way."""
    return DirectSelect(
        select(table.c.id).where(*of_app(table, bindparam("ident"), bindparam("app_id")))
    )


@functools.cache
def _person_query(table: Table) -> DirectSelect:
    """An admin or sender of the app (not removed), with what answers show of them."""
    conditions = of_app(table, bindparam("ident"), bindparam("app_id"))
    return DirectSelect(select(*person_columns(table)).where(*conditions))


class AppRepository:
    def __init__(self, conn: AsyncConnection, driver: DriverConnection | None = None) -> None:
        self.conn = conn
        self.driver = driver or DriverConnection(conn)

    async def _insert(self, table: Table, **values: Any) -> int:
        result = await self.conn.execute(table.insert().values(**values).returning(table.c.id))
        return int(result.scalar_one())

    async def create_app(self, name: str, now: datetime) -> int:
        return await self._insert(apps, name=name, created=now)

    async def set_defaults(self, app_id: int, channel_id: int, sender_id: int) -> None:
        await self.conn.execute(
            update(apps)
            .where(apps.c.id == app_id)
            .values(default_channel_id=channel_id, default_sender_id=sender_id)
        )

    async def app(self, app_id: int) -> dict[str, Any] | None:
        row = (await self.conn.execute(select(apps).where(apps.c.id == app_id))).first()
        return dict(row._mapping) if row else None

    async def create_token(
        self,
        app_id: int,
        name: str,
        token_hash: str,
        prefix: str,
        scopes: list[str],
        now: datetime,
        expires: datetime | None = None,
        *,
        issuer_admin_id: int | None = None,
        issuer_token_id: int | None = None,
        session: bool = False,
    ) -> int:
        return await self._insert(
            api_tokens,
            app_id=app_id,
            name=name,
            token_hash=token_hash,
            prefix=prefix,
            scopes=scopes,
            created=now,
            expires=expires,
            issuer_admin_id=issuer_admin_id,
            issuer_token_id=issuer_token_id,
            session=session,
        )

    async def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        """The token unless revoked or its issuing admin is removed; an expired one too
        (the caller compares `expires`). Its role is its issuer's, read now."""
        t = api_tokens.c
        issuer = (admins.c.id == t.issuer_admin_id) & (admins.c.app_id == t.app_id)
        query = (
            select(
                t.id,
                t.app_id,
                t.scopes,
                t.expires,
                t.issuer_admin_id,
                t.session,
                admins.c.role,
                admins.c.removed,
            )
            .select_from(api_tokens.outerjoin(admins, issuer))
            .where(t.token_hash == token_hash, t.revoked.is_(None))
        )
        row = (await self.conn.execute(query)).first()
        if row is None:
            return None
        if row.issuer_admin_id is not None and (row.role is None or row.removed is not None):
            return None  # the token died with its issuer
        role = Role(row.role) if row.issuer_admin_id is not None else Role.OWNER
        return TokenRecord(
            row.id,
            row.app_id,
            frozenset(row.scopes),
            row.expires,
            row.issuer_admin_id,
            role,
            bool(row.session),
        )

    async def create_admin(
        self,
        app_id: int,
        name: str,
        email: str | None,
        password_hash: str | None,
        avatar: str | None,
        now: datetime,
        role: Role = Role.OPERATOR,
    ) -> int:
        return await self._insert(
            admins,
            app_id=app_id,
            name=name,
            email=email,
            password_hash=password_hash,
            avatar=avatar,
            created=now,
            role=role.value,
        )

    async def create_channel(self, app_id: int, name: str, type_: str, now: datetime) -> int:
        return await self._insert(channels, app_id=app_id, name=name, type=type_, created=now)

    async def create_sender(self, app_id: int, name: str) -> int:
        return await self._insert(senders, app_id=app_id, name=name)

    async def create_user(
        self, app_id: int, site_user_id: str | None, props: dict[str, Any], now: datetime
    ) -> int:
        return await self._insert(
            users, app_id=app_id, user_id=site_user_id, props=props, created=now
        )

    async def user_by_site_id(self, app_id: int, site_user_id: str) -> int | None:
        query = select(users.c.id).where(users.c.app_id == app_id, users.c.user_id == site_user_id)
        ident = (await self.conn.execute(query)).scalar_one_or_none()
        return int(ident) if ident is not None else None

    async def create_message(
        self,
        app_id: int,
        *,
        type_: str,
        reply_type: str,
        recipient_type: str,
        sender_id: int | None,
        admin_id: int | None,
        body: str,
        now: datetime,
    ) -> int:
        return await self._insert(
            messages,
            app_id=app_id,
            type=type_,
            reply_type=reply_type,
            recipient_type=recipient_type,
            sender_id=sender_id,
            admin_id=admin_id,
            body=body,
            created=now,
        )

    async def owned(self, table: Table, app_id: int, ident: int) -> bool:
        """Does object `ident` of `table` exist in app `app_id` (and is it not removed)?"""
        params = {"ident": ident, "app_id": app_id}
        return bool(await self.driver.fetch(_owned_query(table), params))

    async def admin(self, app_id: int, ident: int) -> Admin | None:
        rows = await self.driver.select(_person_query(admins), {"ident": ident, "app_id": app_id})
        return Admin(**rows[0]) if rows else None

    async def sender(self, app_id: int, ident: int) -> Sender | None:
        rows = await self.driver.select(_person_query(senders), {"ident": ident, "app_id": app_id})
        return Sender(**rows[0]) if rows else None

    async def admin_ids(self, app_id: int) -> list[int]:
        query = select(admins.c.id).where(admins.c.app_id == app_id).order_by(admins.c.id)
        return [int(i) for i in (await self.conn.execute(query)).scalars()]

    async def channel_ids(self, app_id: int) -> list[int]:
        query = select(channels.c.id).where(channels.c.app_id == app_id).order_by(channels.c.id)
        return [int(i) for i in (await self.conn.execute(query)).scalars()]
