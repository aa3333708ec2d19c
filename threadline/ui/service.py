"""Operators signing in to the inbox: a password check, then an API token of their own.

The inbox page talks to the same API as any integration. Signing in trades an operator's
e-mail and password for a session token of the operator's app (stored hashed in
`api_tokens` like every token, named after the admin), which the page sends as
`Authorization: Token ...` and as the WebSocket's `auth_token`. Signing out revokes it;
it also expires a set time after signing in (THREADLINE_INBOX_SESSION_HOURS).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.api.errors import AuthenticationFailed, PermissionDenied, Throttled
from threadline.apps.repository import AppRepository
from threadline.apps.service import (
    forget_tokens,
    hash_password,
    issue_token_with_id,
    session_token_name,
    utcnow,
    verify_password,
)
from threadline.core.access import Actor, ActorKind, Role
from threadline.db.engine import Database
from threadline.db.schema import admins, api_tokens

# What the inbox may do. The `admin` scope lists admins and channels; managing the app
# needs, besides, the administrator or owner role: a session acts with its admin's role.
SESSION_SCOPES = ("conversations-read", "conversations-write", "user-read", "admin")
# The same e-mail may belong to admins of several apps; each is one argon2 check.
MAX_ACCOUNTS_PER_EMAIL = 5
# argon2 takes ~64 MiB and a core for a fraction of a second: a burst of sign-ins waits in
# line instead of exhausting the memory and the thread pool.
MAX_CONCURRENT_CHECKS = 2
# Failed sign-ins allowed per client address: plenty for a person mistyping, and a
# password-guessing client is slowed to a crawl.
FAILED_LOGIN_LIMIT = "10/minute"
WRONG_CREDENTIALS = "wrong e-mail or password"


@dataclass(frozen=True, slots=True)
class Session:
    """Who is signed in; `token` is known only at sign-in (it is stored hashed)."""

    app_id: int
    admin_id: int
    name: str
    email: str | None
    expires: datetime | None
    token: str | None = None
    role: Role = Role.OPERATOR


@dataclass(frozen=True, slots=True)
class _Account:
    admin_id: int
    app_id: int
    name: str
    email: str | None
    password_hash: str
    role: Role


class LoginGuard:
    """Bounds the cost of password checks: few at a time, few failures per address."""

    def __init__(self, limit: str = FAILED_LOGIN_LIMIT) -> None:
        self.item = parse(limit)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.checks = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)
        self._dummy_hash: str | None = None

    async def check_allowed(self, address: str) -> None:
        if not await self.limiter.test(self.item, "login", address):
            stats = await self.limiter.get_window_stats(self.item, "login", address)
            raise Throttled(max(1, math.ceil(stats.reset_time - time.time())))

    async def failed(self, address: str) -> None:
        await self.limiter.hit(self.item, "login", address)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """argon2 in a worker thread; with no hash, a check of a throwaway hash instead, so
        an unknown e-mail takes as long to refuse as a wrong password."""
        async with self.checks:
            if password_hash is None:
                if self._dummy_hash is None:
                    self._dummy_hash = await anyio.to_thread.run_sync(
                        hash_password, secrets.token_urlsafe(16)
                    )
                await anyio.to_thread.run_sync(verify_password, self._dummy_hash, password)
                return False
            return await anyio.to_thread.run_sync(verify_password, password_hash, password)


async def _accounts(conn: AsyncConnection, email: str, app_id: int | None) -> list[_Account]:
    conditions = [
        func.lower(admins.c.email) == email,
        admins.c.removed.is_(None),
        admins.c.password_hash.is_not(None),
    ]
    if app_id is not None:
        conditions.append(admins.c.app_id == app_id)
    query = (
        select(
            admins.c.id,
            admins.c.app_id,
            admins.c.name,
            admins.c.email,
            admins.c.password_hash,
            admins.c.role,
        )
        .where(*conditions)
        .order_by(admins.c.id)
        .limit(MAX_ACCOUNTS_PER_EMAIL)
    )
    return [
        _Account(r.id, r.app_id, r.name, r.email, r.password_hash, Role(r.role))
        for r in await conn.execute(query)
    ]


async def log_in(
    db: Database,
    guard: LoginGuard,
    *,
    email: str,
    password: str,
    app_id: int | None,
    address: str,
    lifetime: timedelta,
) -> Session:
    """A new session for the admin with this e-mail and password (in `app_id` if given),
    valid for `lifetime`.

    Refused the same way whichever part is wrong; a client with too many recent failures
    is `Throttled` before any check.
    """
    await guard.check_allowed(address)
    async with db.read() as conn:
        accounts = await _accounts(conn, email.strip().lower(), app_id)
    found: _Account | None = None
    for account in accounts:
        if await guard.verify(account.password_hash, password):
            found = account
            break
    if not accounts:
        await guard.verify(None, password)
    if found is None:
        await guard.failed(address)
        raise AuthenticationFailed(WRONG_CREDENTIALS)
    name = session_token_name(found.admin_id)
    now = utcnow()
    expires = now + lifetime
    issuer = Actor(ActorKind.ADMIN, found.role, found.admin_id)
    async with db.write() as conn:
        _, token = await issue_token_with_id(
            AppRepository(conn),
            found.app_id,
            name,
            list(SESSION_SCOPES),
            now,
            expires,
            issuer=issuer,
            session=True,
        )
    return Session(
        found.app_id, found.admin_id, found.name, found.email, expires, token, found.role
    )


async def _session_admin(
    conn: AsyncConnection, app_id: int, token_id: int
) -> tuple[int, datetime | None]:
    """The admin a session token was issued to, and when it expires; any other token is
    not a session."""
    query = select(api_tokens.c.issuer_admin_id, api_tokens.c.expires).where(
        api_tokens.c.id == token_id,
        api_tokens.c.app_id == app_id,
        api_tokens.c.revoked.is_(None),
        api_tokens.c.session.is_(True),
    )
    row = (await conn.execute(query)).first()
    if row is None or row.issuer_admin_id is None:
        raise PermissionDenied("this token is not an inbox session")
    return int(row.issuer_admin_id), row.expires


async def current(db: Database, app_id: int, token_id: int) -> Session:
    """Who the session token belongs to (refused once that admin is removed)."""
    async with db.read() as conn:
        admin_id, expires = await _session_admin(conn, app_id, token_id)
        query = select(admins.c.id, admins.c.name, admins.c.email, admins.c.role).where(
            admins.c.id == admin_id, admins.c.app_id == app_id, admins.c.removed.is_(None)
        )
        row = (await conn.execute(query)).first()
    if row is None:
        raise AuthenticationFailed("the session's admin no longer exists")
    return Session(app_id, row.id, row.name, row.email, expires, role=Role(row.role))


async def log_out(db: Database, app_id: int, token_id: int) -> None:
    """Revoke the session token; other tokens are refused (the tokens API revokes those)."""
    async with db.write() as conn:
        await _session_admin(conn, app_id, token_id)
        await conn.execute(
            update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.app_id == app_id)
            .values(revoked=utcnow())
        )
    forget_tokens(db)  # this process refuses it at once; others within their cache's seconds
