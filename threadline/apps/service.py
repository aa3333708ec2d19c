"""Creating apps and the things that belong to them; tokens are stored hashed."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from weakref import WeakKeyDictionary

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from threadline.apps.repository import AppRepository, TokenRecord
from threadline.audit import repository as audit
from threadline.core.access import CLI, Actor, ActorKind, Role
from threadline.core.enums import ChannelType
from threadline.core.errors import InvalidParameter
from threadline.db.engine import Database

ALL_SCOPES = (
    "conversations-read",
    "conversations-write",
    "user-read",
    "as-user",
    "messages-manual-send-one",
    "admin",
)
TOKEN_PREFIX = "tl_"  # noqa: S105  (a marker that makes leaked tokens greppable)

_password_hasher = PasswordHasher()


def utcnow() -> datetime:
    return datetime.now(UTC)


def hash_token(token: str) -> str:
    # Tokens are 256-bit random secrets, so a fast hash is enough (no brute force possible).
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    return _password_hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Does `password` match `password_hash`? Slow on purpose (argon2): run it in a thread."""
    try:
        return _password_hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):  # a mismatch, or a hash argon2 cannot read
        return False


def session_token_name(admin_id: int) -> str:
    """The name of the tokens the inbox issues when an operator signs in."""
    return f"inbox session of admin {admin_id}"


@dataclass(frozen=True, slots=True)
class CreatedApp:
    app_id: int
    token: str
    default_channel_id: int
    default_sender_id: int


def check_scopes(scopes: list[str]) -> None:
    unknown = set(scopes) - set(ALL_SCOPES)
    if unknown:
        raise InvalidParameter("scopes", f"unknown scopes: {', '.join(sorted(unknown))}")


async def issue_token(
    repo: AppRepository,
    app_id: int,
    name: str,
    scopes: list[str],
    now: datetime,
    expires: datetime | None = None,
    *,
    issuer: Actor = CLI,
) -> str:
    """A new token; with `expires`, refused from then on, else valid until revoked.

    It records its `issuer`: an inbox session or a token issued by an admin acts with that
    admin's role and dies with that admin's removal; the command line's acts as an owner."""
    return (await issue_token_with_id(repo, app_id, name, scopes, now, expires, issuer=issuer))[1]


async def issue_token_with_id(
    repo: AppRepository,
    app_id: int,
    name: str,
    scopes: list[str],
    now: datetime,
    expires: datetime | None = None,
    *,
    issuer: Actor = CLI,
    session: bool = False,
) -> tuple[int, str]:
    """`issue_token`, answering the new token's id and text."""
    check_scopes(scopes)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ident = await repo.create_token(
        app_id,
        name,
        hash_token(token),
        token[:12],
        scopes,
        now,
        expires,
        issuer_admin_id=issuer.admin_id,
        issuer_token_id=issuer.token_id if issuer.kind is not ActorKind.CLI else None,
        session=session,
    )
    return ident, token


async def create_app(db: Database, name: str) -> CreatedApp:
    """An app with a default channel, a default sender and a token with every scope."""
    if not name.strip():
        raise InvalidParameter("name", "must not be empty")
    now = utcnow()
    async with db.write() as conn:
        repo = AppRepository(conn)
        app_id = await repo.create_app(name, now)
        channel_id = await repo.create_channel(app_id, "Inbox", ChannelType.MANUAL.value, now)
        sender_id = await repo.create_sender(app_id, name)
        await repo.set_defaults(app_id, channel_id, sender_id)
        token_id, token = await issue_token_with_id(repo, app_id, "default", list(ALL_SCOPES), now)
        await audit.record(
            conn, app_id, CLI, "token.create", "token", token_id, now, scopes=list(ALL_SCOPES)
        )
    return CreatedApp(app_id, token, channel_id, sender_id)


# Each process keeps the tokens it authenticated for a few seconds, so that a request costs
# no token query. A revoked token is refused at once by the process that revoked it (see
# `forget_tokens`) and within TOKEN_CACHE_SECONDS by the others. A token that expires is
# kept no longer than until its expiry, so every process refuses it on time.
TOKEN_CACHE_SECONDS = 5.0
_TOKEN_CACHE_SIZE = 10_000
_token_caches: WeakKeyDictionary[Database, dict[str, tuple[float, TokenRecord]]] = (
    WeakKeyDictionary()
)


async def authenticate(db: Database, token: str) -> TokenRecord | None:
    token_hash = hash_token(token)
    cache = _token_caches.setdefault(db, {})
    cached = cache.get(token_hash)
    now = time.monotonic()
    if cached is not None and cached[0] > now:
        return cached[1]
    async with db.read() as conn:
        record = await AppRepository(conn).token_by_hash(token_hash)
    keep = TOKEN_CACHE_SECONDS
    if record is not None and record.expires is not None:
        keep = min(keep, (record.expires - utcnow()).total_seconds())
    # Unknown and expired tokens are never kept (refused alike): guessing costs a query.
    if record is None or keep <= 0:
        cache.pop(token_hash, None)
        return None
    if len(cache) >= _TOKEN_CACHE_SIZE:
        cache.clear()
    cache[token_hash] = (now + keep, record)
    return record


def forget_tokens(db: Database) -> None:
    """After revoking tokens: this process authenticates every token anew."""
    _token_caches.pop(db, None)


async def create_admin(
    db: Database,
    app_id: int,
    name: str,
    *,
    email: str | None = None,
    password: str | None = None,
    avatar: str | None = None,
    role: Role = Role.OPERATOR,
) -> int:
    """An admin, created by whoever runs the server (the command line, the demo, tests)."""
    if not name.strip():
        raise InvalidParameter("name", "must not be empty")
    password_hash = hash_password(password) if password else None
    now = utcnow()
    async with db.write() as conn:
        ident = await AppRepository(conn).create_admin(
            app_id, name, email, password_hash, avatar, now, role
        )
        await audit.record(conn, app_id, CLI, "admin.create", "admin", ident, now, role=role.value)
        return ident


async def create_channel(
    db: Database, app_id: int, name: str, type_: str = ChannelType.MANUAL.value
) -> int:
    if not name.strip():
        raise InvalidParameter("name", "must not be empty")
    async with db.write() as conn:
        return await AppRepository(conn).create_channel(app_id, name, type_, utcnow())


async def create_user(
    db: Database,
    app_id: int,
    *,
    site_user_id: str | None = None,
    props: dict[str, Any] | None = None,
) -> int:
    async with db.write() as conn:
        return await AppRepository(conn).create_user(app_id, site_user_id, props or {}, utcnow())
