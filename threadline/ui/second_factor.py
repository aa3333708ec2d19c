"""The optional second factor of an inbox sign-in: one-time codes of an authenticator app.

An operator turns it on from the inbox's settings: `enrol` makes a secret and shows it once
(with its `otpauth://` URI), `confirm` turns it on with a code the app made from it. From
then on signing in needs a code after the password; each code works once. The operator
turns it off with a code or the password; an owner (an administrator, for operators) or
the command line resets it for someone who lost their phone. Every code tried counts as a
sign-in attempt (`LoginGuard`), so codes cannot be guessed faster than passwords.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import segno
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.api.errors import AuthenticationFailed, InvalidParameter
from threadline.apps.service import forget_tokens, session_token_name, utcnow
from threadline.audit import repository as audit
from threadline.core import totp
from threadline.core.access import Actor, ActorKind, Role
from threadline.db.engine import Database
from threadline.db.schema import admins, api_tokens

WRONG_CODE = "the code is wrong or was used already"


@dataclass(frozen=True, slots=True)
class Enrolment:
    secret: str
    uri: str
    # The URI as a QR code (an SVG `data:` URI the page shows as an image).
    qr: str


def qr_code(uri: str) -> str:
    return segno.make(uri, error="m").svg_data_uri(scale=4, border=2)


async def accept_code(
    conn: AsyncConnection, admin_id: int, secret: str, last_step: int | None, code: str
) -> bool:
    """Whether `code` is a fresh code of `secret`; if so its time step is stored as used, in
    one conditional update, so that of two requests with one code only one gets in."""
    step = totp.matching_step(secret, code, utcnow(), last_step)
    if step is None:
        return False
    used = await conn.execute(
        update(admins)
        .where(
            admins.c.id == admin_id,
            admins.c.totp_secret == secret,
            or_(admins.c.totp_last_step.is_(None), admins.c.totp_last_step < step),
        )
        .values(totp_last_step=step)
    )
    return used.rowcount == 1


async def check_sign_in_code(db: Database, admin_id: int, code: str | None) -> bool:
    """After a correct password: the admin's code, when they have a second factor (True
    then). No code: `InvalidParameter` (the inbox then asks for one); a wrong or used one:
    `AuthenticationFailed`."""
    async with db.write() as conn:
        row = (
            await conn.execute(
                select(admins.c.totp_secret, admins.c.totp_last_step).where(admins.c.id == admin_id)
            )
        ).first()
        if row is None or row.totp_secret is None:
            return False
        if code is None or not code.strip():
            raise InvalidParameter("code", "this account needs the code of its authenticator app")
        if not await accept_code(conn, admin_id, row.totp_secret, row.totp_last_step, code):
            raise AuthenticationFailed(f"code: {WRONG_CODE}")
    return True


async def _admin_row(conn: AsyncConnection, app_id: int, admin_id: int) -> tuple[str, Role, bool]:
    """The admin's e-mail (or name), role, and whether a second factor is on."""
    query = select(admins.c.name, admins.c.email, admins.c.role, admins.c.totp_secret).where(
        admins.c.id == admin_id, admins.c.app_id == app_id, admins.c.removed.is_(None)
    )
    row = (await conn.execute(query)).first()
    if row is None:
        raise AuthenticationFailed("the session's admin no longer exists")
    return row.email or row.name, Role(row.role), row.totp_secret is not None


async def enabled(db: Database, app_id: int, admin_id: int) -> bool:
    async with db.read() as conn:
        return (await _admin_row(conn, app_id, admin_id))[2]


async def enrol(db: Database, app_id: int, admin_id: int) -> Enrolment:
    """A new secret for the admin, shown this once; it works once confirmed with a code.
    Refused while a second factor is on (turn it off first)."""
    secret = totp.new_secret()
    async with db.write() as conn:
        account, _role, on = await _admin_row(conn, app_id, admin_id)
        if on:
            raise InvalidParameter("code", "two-step sign-in is on already: turn it off first")
        await conn.execute(
            update(admins).where(admins.c.id == admin_id).values(totp_pending=secret)
        )
    uri = totp.provisioning_uri(secret, account)
    return Enrolment(secret, uri, qr_code(uri))


async def confirm(db: Database, app_id: int, admin_id: int, token_id: int, code: str) -> None:
    """Turn the second factor on with a code of the secret `enrol` showed. The admin's other
    inbox sessions end (they were opened without it)."""
    now = utcnow()
    async with db.write() as conn:
        _account, role, on = await _admin_row(conn, app_id, admin_id)
        pending = (
            await conn.execute(select(admins.c.totp_pending).where(admins.c.id == admin_id))
        ).scalar_one_or_none()
        if on or pending is None:
            raise InvalidParameter("code", "start again: no enrolment is waiting for a code")
        step = totp.matching_step(pending, code, now, None)
        if step is None:
            raise InvalidParameter("code", WRONG_CODE)
        turned_on = await conn.execute(
            update(admins)
            .where(admins.c.id == admin_id, admins.c.totp_pending == pending)
            .values(totp_secret=pending, totp_pending=None, totp_last_step=step)
        )
        if turned_on.rowcount != 1:  # a concurrent enrolment replaced the secret
            raise InvalidParameter("code", "start again: no enrolment is waiting for a code")
        await _end_other_sessions(conn, app_id, admin_id, token_id, now)
        actor = Actor(ActorKind.ADMIN, role, admin_id, token_id)
        await audit.record(conn, app_id, actor, "admin.totp_on", "admin", admin_id, now)
    forget_tokens(db)


async def disable(
    db: Database,
    app_id: int,
    admin_id: int,
    token_id: int,
    *,
    code: str | None,
    password_ok: bool,
) -> None:
    """Turn the second factor off, proved by a fresh code or the password (`password_ok`,
    checked by the caller)."""
    now = utcnow()
    async with db.write() as conn:
        _account, role, _on = await _admin_row(conn, app_id, admin_id)
        row = (
            await conn.execute(
                select(admins.c.totp_secret, admins.c.totp_last_step).where(admins.c.id == admin_id)
            )
        ).one()
        if row.totp_secret is None:
            raise InvalidParameter("code", "two-step sign-in is off already")
        proved = password_ok or (
            code is not None
            and await accept_code(conn, admin_id, row.totp_secret, row.totp_last_step, code)
        )
        if not proved:
            raise InvalidParameter("code", WRONG_CODE)
        await conn.execute(
            update(admins)
            .where(admins.c.id == admin_id)
            .values(totp_secret=None, totp_pending=None, totp_last_step=None)
        )
        actor = Actor(ActorKind.ADMIN, role, admin_id, token_id)
        await audit.record(conn, app_id, actor, "admin.totp_off", "admin", admin_id, now)


async def _end_other_sessions(
    conn: AsyncConnection, app_id: int, admin_id: int, token_id: int, now: datetime
) -> None:
    await conn.execute(
        update(api_tokens)
        .where(
            api_tokens.c.app_id == app_id,
            api_tokens.c.name == session_token_name(admin_id),
            api_tokens.c.id != token_id,
            api_tokens.c.revoked.is_(None),
        )
        .values(revoked=now)
    )
