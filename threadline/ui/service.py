"""Operators signing in to the inbox: a password check, then an API token of their own.

The inbox page talks to the same API as any integration. Signing in trades an operator's
e-mail and password for a session token of the operator's app (stored hashed in
`api_tokens` like every token, named after the admin), which the page sends as
`Authorization: Token ...` and as the WebSocket's `auth_token`. Signing out revokes it;
it also expires a set time after signing in (THREADLINE_INBOX_SESSION_HOURS).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from redis.exceptions import RedisError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.api.errors import (
    AuthenticationFailed,
    InvalidParameter,
    PermissionDenied,
    Throttled,
)
from threadline.apps.repository import AppRepository
from threadline.apps.service import (
    forget_tokens,
    hash_password,
    hash_token,
    issue_token_with_id,
    session_token_name,
    utcnow,
    verify_password,
)
from threadline.core import throttle
from threadline.core.access import Actor, ActorKind, Role
from threadline.core.errors import NotFound
from threadline.core.passwords import password_problem
from threadline.core.throttle import Backoff
from threadline.db.engine import Database
from threadline.db.schema import admins, api_tokens, password_resets
from threadline.ui import attempts, second_factor
from threadline.ui.attempts_redis import RedisAttempts

log = logging.getLogger("threadline.ui")

# What the inbox may do. The `admin` scope lists admins and channels; managing the app
# needs, besides, the administrator or owner role: a session acts with its admin's role.
SESSION_SCOPES = ("conversations-read", "conversations-write", "user-read", "admin")
# The same e-mail may belong to admins of several apps; each is one argon2 check.
MAX_ACCOUNTS_PER_EMAIL = 5
# argon2 takes ~64 MiB and a core for a fraction of a second: a burst of sign-ins waits in
# line instead of exhausting the memory and the thread pool.
MAX_CONCURRENT_CHECKS = 2
# Sign-in attempts without a wait, per client address and per account: plenty for a person
# mistyping; then each attempt waits twice as long as the previous one (from 2 s), up to
# 5 minutes per address and 15 per account, so guessing slows to a crawl while the right
# password still gets in after the wait. A count idle for an hour starts afresh.
ADDRESS_BACKOFF = Backoff(free=10, base_seconds=2.0, cap_seconds=300.0, forget_seconds=3600.0)
ACCOUNT_BACKOFF = Backoff(free=10, base_seconds=2.0, cap_seconds=900.0, forget_seconds=3600.0)
# Counts untouched this long are dropped, by one sign-in in PURGE_ONE_IN.
PURGE_AFTER = timedelta(days=1)
PURGE_ONE_IN = 100
MAX_EMAIL_KEY_CHARS = 320
WRONG_CREDENTIALS = "wrong e-mail or password"
SEVERAL_APPS = "this e-mail belongs to admins of several apps: name the app (its id)"


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
    # Whether signing in needs a code of an authenticator app too (threadline.ui.second_factor).
    two_factor: bool = False


@dataclass(frozen=True, slots=True)
class _Account:
    admin_id: int
    app_id: int
    name: str
    email: str | None
    password_hash: str
    role: Role
    two_factor: bool


def address_key(address: str) -> str:
    """The count key of a client address; IPv6 by its /64, which one client holds whole."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"address:{address[:200]}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"address:{ip.ipv4_mapped}"
        return f"address:{ipaddress.IPv6Network((ip, 64), strict=False)}"
    return f"address:{ip}"


def account_key(email: str) -> str:
    return f"account:{email[:MAX_EMAIL_KEY_CHARS]}"


class LoginGuard:
    """Bounds the cost of password checks: few at a time, and attempts per client address
    and per account counted, before any check, in the database or in Redis when the
    deployment has one (every process shares the counts), with a growing wait once the
    free attempts are used."""

    def __init__(
        self,
        address: Backoff = ADDRESS_BACKOFF,
        account: Backoff = ACCOUNT_BACKOFF,
        redis: RedisAttempts | None = None,
    ) -> None:
        self.rules = {"address": address, "account": account}
        self.checks = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)
        self._dummy_hash: str | None = None
        # Set when the deployment has a Redis (THREADLINE_REDIS_URL): counts go there.
        self.redis = redis

    async def admit(self, db: Database, address: str, email: str) -> None:
        """Count one attempt for the address and the account, or refuse it (`Throttled`,
        nothing counted) while either must still wait."""
        keys = {
            address_key(address): self.rules["address"],
            account_key(email): self.rules["account"],
        }
        now = utcnow()
        if self.redis is not None:
            try:
                waiting = await self.redis.admit(keys, now)
            except RedisError as exc:  # Redis away: the database still counts for everyone
                log.warning("sign-in limit: Redis failed, counting in the database (%s)", exc)
            else:
                if waiting is None:
                    return
                raise Throttled(max(1, math.ceil(waiting)))
        async with db.write() as conn:
            if secrets.randbelow(PURGE_ONE_IN) == 0:
                await attempts.forget_older_than(conn, now - PURGE_AFTER)
            counts = await attempts.locked_counts(conn, list(keys))
            verdicts = {k: throttle.attempt(rule, counts.get(k), now) for k, rule in keys.items()}
            if all(v.allowed for v in verdicts.values()):
                await attempts.store_counts(conn, {k: v.count for k, v in verdicts.items()})
                return
        wait = max(v.retry_after for v in verdicts.values())
        raise Throttled(max(1, math.ceil(wait)))

    async def succeeded(self, db: Database, address: str, email: str) -> None:
        """A correct password: the account starts afresh, and the address gets this
        attempt back (not more: one good account must not let a client guess others
        faster, and many operators behind one address must not wait for each other)."""
        key = address_key(address)
        if self.redis is not None:
            try:
                await self.redis.succeeded(account_key(email), key, self.rules["address"], utcnow())
            except RedisError as exc:
                log.warning("sign-in limit: Redis failed, counting in the database (%s)", exc)
            else:
                return
        async with db.write() as conn:
            await attempts.clear(conn, account_key(email))
            counts = await attempts.locked_counts(conn, [key])
            count = counts.get(key)
            if count is not None and count.attempts > 0:
                refunded = throttle.refund(self.rules["address"], count)
                await attempts.store_counts(conn, {key: refunded})

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
            admins.c.totp_secret,
        )
        .where(*conditions)
        .order_by(admins.c.id)
        .limit(MAX_ACCOUNTS_PER_EMAIL + 1)
    )
    return [
        _Account(
            r.id,
            r.app_id,
            r.name,
            r.email,
            r.password_hash,
            Role(r.role),
            r.totp_secret is not None,
        )
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
    code: str | None = None,
) -> Session:
    """A new session for the admin with this e-mail and password (in `app_id` if given),
    valid for `lifetime`; with the `code` of their authenticator app when they turned the
    second factor on.

    Refused the same way whichever part is wrong. The attempt is counted before any check,
    for the client's address and for the account; one that must still wait is `Throttled`.
    A correct password without a needed code is `InvalidParameter` ("code: ..."), and not
    given back to the count: guessing codes is as slow as guessing passwords.
    """
    email = email.strip().lower()
    await guard.admit(db, address, email)
    async with db.read() as conn:
        accounts = await _accounts(conn, email, app_id)
    if len(accounts) > MAX_ACCOUNTS_PER_EMAIL:
        # Admins of other apps may share the address (anyone can add an admin to their own
        # app): rather than check only some of them, and maybe never the right one, ask
        # which app is meant.
        raise InvalidParameter("app", SEVERAL_APPS)
    found: _Account | None = None
    for account in accounts:
        if await guard.verify(account.password_hash, password):
            found = account
            break
    if not accounts:
        await guard.verify(None, password)
    if found is None:
        raise AuthenticationFailed(WRONG_CREDENTIALS)
    two_factor = found.two_factor and await second_factor.check_sign_in_code(
        db, found.admin_id, code
    )
    await guard.succeeded(db, address, email)
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
        found.app_id,
        found.admin_id,
        found.name,
        found.email,
        expires,
        token,
        found.role,
        two_factor,
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
        query = select(
            admins.c.id, admins.c.name, admins.c.email, admins.c.role, admins.c.totp_secret
        ).where(admins.c.id == admin_id, admins.c.app_id == app_id, admins.c.removed.is_(None))
        row = (await conn.execute(query)).first()
    if row is None:
        raise AuthenticationFailed("the session's admin no longer exists")
    return Session(
        app_id,
        row.id,
        row.name,
        row.email,
        expires,
        role=Role(row.role),
        two_factor=row.totp_secret is not None,
    )


@dataclass(frozen=True, slots=True)
class SessionAccount:
    """The admin of an inbox session, as a sign-in sees them."""

    admin_id: int
    email_key: str
    name: str
    email: str | None
    password_hash: str | None


async def session_account(db: Database, app_id: int, token_id: int) -> SessionAccount:
    """The session's admin (refused once removed); `email_key` is their count's key in the
    sign-in limit."""
    async with db.read() as conn:
        admin_id, _expires = await _session_admin(conn, app_id, token_id)
        query = select(admins.c.name, admins.c.email, admins.c.password_hash).where(
            admins.c.id == admin_id, admins.c.app_id == app_id, admins.c.removed.is_(None)
        )
        row = (await conn.execute(query)).first()
    if row is None:
        raise AuthenticationFailed("the session's admin no longer exists")
    email = (row.email or "").strip().lower()
    return SessionAccount(
        admin_id, email or f"admin {admin_id}", row.name, row.email, row.password_hash
    )


async def confirm_second_factor(
    db: Database, guard: LoginGuard, *, app_id: int, token_id: int, code: str, address: str
) -> None:
    """Turn the session admin's second factor on with a code (counted as an attempt, given
    back when right, as a sign-in's)."""
    account = await session_account(db, app_id, token_id)
    await guard.admit(db, address, account.email_key)
    await second_factor.confirm(db, app_id, account.admin_id, token_id, code)
    await guard.succeeded(db, address, account.email_key)


async def disable_second_factor(
    db: Database,
    guard: LoginGuard,
    *,
    app_id: int,
    token_id: int,
    code: str | None,
    password: str | None,
    address: str,
) -> None:
    """Turn the session admin's second factor off, proved by a code or the password (either
    counted as an attempt)."""
    if not code and not password:
        raise InvalidParameter("code", "give a code of your authenticator app or your password")
    account = await session_account(db, app_id, token_id)
    await guard.admit(db, address, account.email_key)
    password_ok = False
    if password:
        password_ok = await guard.verify(account.password_hash, password)
        if not password_ok:
            raise InvalidParameter("password", "is not your password")
    await second_factor.disable(
        db, app_id, account.admin_id, token_id, code=code, password_ok=password_ok
    )
    await guard.succeeded(db, address, account.email_key)


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


async def change_password(
    db: Database,
    guard: LoginGuard,
    *,
    app_id: int,
    token_id: int,
    current_password: str,
    new_password: str,
    address: str,
) -> None:
    """The session's admin sets a new password, proving the current one (counted like a
    sign-in attempt). The admin's other inbox sessions end; this one goes on."""
    async with db.read() as conn:
        admin_id, _expires = await _session_admin(conn, app_id, token_id)
        query = select(admins.c.name, admins.c.email, admins.c.password_hash).where(
            admins.c.id == admin_id, admins.c.app_id == app_id, admins.c.removed.is_(None)
        )
        row = (await conn.execute(query)).first()
    if row is None:
        raise AuthenticationFailed("the session's admin no longer exists")
    email = (row.email or "").strip().lower()
    await guard.admit(db, address, email or f"admin {admin_id}")
    if not await guard.verify(row.password_hash, current_password):
        raise InvalidParameter("current_password", "is not your password")
    problem = password_problem(new_password, email=row.email, name=row.name)
    if problem is not None:
        raise InvalidParameter("new_password", problem)
    if new_password == current_password:
        raise InvalidParameter("new_password", "must differ from the current one")
    password_hash = await anyio.to_thread.run_sync(hash_password, new_password)
    async with db.write() as conn:
        await conn.execute(
            update(admins)
            .where(admins.c.id == admin_id, admins.c.app_id == app_id)
            .values(password_hash=password_hash)
        )
        await conn.execute(
            update(api_tokens)
            .where(
                api_tokens.c.app_id == app_id,
                api_tokens.c.name == session_token_name(admin_id),
                api_tokens.c.id != token_id,
                api_tokens.c.revoked.is_(None),
            )
            .values(revoked=utcnow())
        )
    forget_tokens(db)


# A reset link works once, for this long (the person who runs the server hands it over).
DEFAULT_RESET_HOURS = 24.0
RESET_PREFIX = "tlr_"


async def issue_password_reset(
    db: Database, app_id: int, email: str, lifetime: timedelta
) -> tuple[str, datetime]:
    """A one-time token to set the password of the app's admin with this e-mail (for
    `threadline password reset`); and when it expires. Earlier unused ones stop working."""
    email = email.strip().lower()
    now = utcnow()
    token = RESET_PREFIX + secrets.token_urlsafe(32)
    async with db.write() as conn:
        query = select(admins.c.id).where(
            admins.c.app_id == app_id,
            func.lower(admins.c.email) == email,
            admins.c.removed.is_(None),
        )
        admin_id = (await conn.execute(query)).scalar_one_or_none()
        if admin_id is None:
            raise NotFound("admin", email)
        await conn.execute(
            update(password_resets)
            .where(password_resets.c.admin_id == admin_id, password_resets.c.used.is_(None))
            .values(used=now)
        )
        await conn.execute(
            password_resets.insert().values(
                token_hash=hash_token(token),
                app_id=app_id,
                admin_id=admin_id,
                created=now,
                expires=now + lifetime,
            )
        )
    return token, now + lifetime


async def reset_password(db: Database, token: str, new_password: str) -> None:
    """Set the password a reset token was issued for, once; every inbox session of that
    admin ends."""
    now = utcnow()
    async with db.read() as conn:
        query = (
            select(
                password_resets.c.token_hash,
                password_resets.c.app_id,
                password_resets.c.admin_id,
                admins.c.name,
                admins.c.email,
            )
            .select_from(password_resets.join(admins, admins.c.id == password_resets.c.admin_id))
            .where(
                password_resets.c.token_hash == hash_token(token),
                password_resets.c.used.is_(None),
                password_resets.c.expires > now,
                admins.c.removed.is_(None),
            )
        )
        row = (await conn.execute(query)).first()
    if row is None:
        raise InvalidParameter("token", "the link is not valid (used, expired or unknown)")
    problem = password_problem(new_password, email=row.email, name=row.name)
    if problem is not None:
        raise InvalidParameter("new_password", problem)
    password_hash = await anyio.to_thread.run_sync(hash_password, new_password)
    async with db.write() as conn:
        used = await conn.execute(
            update(password_resets)
            .where(password_resets.c.token_hash == row.token_hash, password_resets.c.used.is_(None))
            .values(used=now)
        )
        if used.rowcount != 1:  # a concurrent use won
            raise InvalidParameter("token", "the link is not valid (used, expired or unknown)")
        await conn.execute(
            update(admins).where(admins.c.id == row.admin_id).values(password_hash=password_hash)
        )
        await conn.execute(
            update(api_tokens)
            .where(
                api_tokens.c.app_id == row.app_id,
                api_tokens.c.name == session_token_name(row.admin_id),
                api_tokens.c.revoked.is_(None),
            )
            .values(revoked=now)
        )
    forget_tokens(db)
