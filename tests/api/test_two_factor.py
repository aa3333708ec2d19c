"""Two-step sign-in (TOTP): an operator enrols from the inbox and confirms with a code;
signing in then needs a code, each code works once, wrong codes are counted like wrong
passwords; the operator turns it off with a code or the password; whoever may manage the
admin (and the command line) resets it. Codes are made here with pyotp, from the secret
the server showed (RFC 6238), not with the server's own code."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import httpx
import pyotp
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from typer.testing import CliRunner

from tests.api.conftest import client_for
from tests.api.helpers import error, ok
from tests.conftest import World
from threadline.api.errors import AuthenticationFailed, InvalidParameter, Throttled
from threadline.apps import service as apps
from threadline.cli import cli
from threadline.core.access import Role
from threadline.core.throttle import Backoff
from threadline.db.engine import Database
from threadline.db.schema import admins, audit_log, sign_in_attempts
from threadline.ui import service
from threadline.ui.service import LoginGuard

PASSWORD = "correct horse battery staple"
EMAIL = "olivia@acme.test"
# Waits far longer than a test: an attempt after the free ones is refused however slow
# the machine; `wait_over` ends a wait by moving it to the past.
SLOW = Backoff(free=3, base_seconds=600, cap_seconds=600, forget_seconds=3600)


async def wait_over(db: Database) -> None:
    async with db.write() as conn:
        past = datetime.now(UTC) - timedelta(seconds=1)
        await conn.execute(sign_in_attempts.update().values(next_allowed=past))


def code(secret: str, steps_ahead: int = 0) -> str:
    """The authenticator app's code, `steps_ahead` 30-second steps from now (the server
    accepts one step either side, each step once)."""
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead)


def wrong_code(secret: str) -> str:
    """Six digits that are none of the codes the server accepts now."""
    accepted = {code(secret, n) for n in (-1, 0, 1, 2)}
    return next(c for c in ("000000", "111111", "222222", "333333", "444444") if c not in accepted)


async def sign_in(http: httpx.AsyncClient, **extra: Any) -> httpx.Response:
    return await http.post("/ui/session", json={"email": EMAIL, "password": PASSWORD, **extra})


async def audit_actions(db: Database, app_id: int) -> list[str]:
    async with db.read() as conn:
        query = select(audit_log.c.action).where(audit_log.c.app_id == app_id)
        return [r.action for r in await conn.execute(query.order_by(audit_log.c.id))]


async def stored(db: Database, admin_id: int) -> Any:
    async with db.read() as conn:
        query = select(admins.c.totp_secret, admins.c.totp_pending, admins.c.totp_last_step)
        return (await conn.execute(query.where(admins.c.id == admin_id))).one()


async def enrolled(app: FastAPI, db: Database, world: World, role: Role = Role.OPERATOR) -> Any:
    """Olivia, with two-step sign-in on; her admin id, secret and a session token."""
    admin_id = await apps.create_admin(
        db, world.app_id, "Olivia", email=EMAIL, password=PASSWORD, role=role
    )
    async with client_for(app) as anon:
        token = ok(await sign_in(anon))["token"]
    async with client_for(app, token) as me:
        secret = ok(await me.post("/ui/two-factor"))["secret"]
        ok(await me.post("/ui/two-factor/confirm", json={"code": code(secret)}))
    return admin_id, secret, token


async def test_an_operator_enrols_and_then_signs_in_with_a_code(
    app: FastAPI, app_db: Database, world: World
) -> None:
    admin_id = await apps.create_admin(
        app_db, world.app_id, "Olivia", email=EMAIL, password=PASSWORD
    )
    async with client_for(app) as anon:
        first = ok(await sign_in(anon))
        other = ok(await sign_in(anon))["token"]
    assert first["two_factor"] is False
    async with client_for(app, first["token"]) as me:
        enrolment = ok(await me.post("/ui/two-factor"))
        secret = enrolment["secret"]
        uri = urlparse(enrolment["uri"])
        assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
        assert unquote(uri.path) == f"/Threadline:{EMAIL}"
        assert parse_qs(uri.query)["secret"] == [secret]
        assert parse_qs(uri.query)["issuer"] == ["Threadline"]
        assert enrolment["qr"].startswith("data:image/svg+xml")
        # Not on before a code confirms it: signing in needs no code yet.
        assert ok(await me.get("/ui/session"))["two_factor"] is False
        r = await me.post("/ui/two-factor/confirm", json={"code": wrong_code(secret)})
        message = error(r, 400, "BadRequest")
        assert message.startswith("code:")
        assert ok(await me.get("/ui/session"))["two_factor"] is False
        ok(await me.post("/ui/two-factor/confirm", json={"code": code(secret)}))
        assert ok(await me.get("/ui/session"))["two_factor"] is True
        # The secret is never shown again, and no admin listing carries it.
        listing = (await me.get("/ext/apps/$self_app/admins")).text
        assert secret not in listing
    # The session opened before the second factor ends; this one goes on.
    async with client_for(app, other) as stale:
        error(await stale.get("/ui/session"), 401, "AuthenticationFailed")
    async with client_for(app) as anon:
        message = error(await sign_in(anon), 400, "BadRequest")
        assert message.startswith("code:")
        error(await sign_in(anon, code=wrong_code(secret)), 401, "AuthenticationFailed")
        fresh = code(secret, 1)  # the confirming code used this step already
        session = ok(await sign_in(anon, code=fresh))
        assert session["two_factor"] is True
        assert session["admin"] == admin_id
        # The same code again: refused, even though it is still within its time.
        message = error(await sign_in(anon, code=fresh), 401, "AuthenticationFailed")
        assert message.startswith("code:")
    assert (await audit_actions(app_db, world.app_id))[-1] == "admin.totp_on"


async def test_a_code_used_by_two_sign_ins_at_once_lets_one_in(
    app: FastAPI, app_db: Database, world: World
) -> None:
    _admin_id, secret, _token = await enrolled(app, app_db, world)
    fresh = code(secret, 1)
    async with client_for(app) as anon:
        answers = await asyncio.gather(*(sign_in(anon, code=fresh) for _ in range(4)))
    assert sorted(r.status_code for r in answers) == [200, 401, 401, 401]


async def test_wrong_codes_are_throttled_like_passwords(
    app: FastAPI, app_db: Database, world: World
) -> None:
    admin_id, secret, _token = await enrolled(app, app_db, world)
    guard = LoginGuard(SLOW, SLOW)

    async def attempt(one_time: str | None) -> service.Session:
        return await service.log_in(
            app_db,
            guard,
            email=EMAIL,
            password=PASSWORD,
            app_id=None,
            address="192.0.2.10",
            lifetime=timedelta(hours=1),
            code=one_time,
        )

    outcomes: list[str] = []
    for n in range(SLOW.free + 2):
        try:
            await attempt(str(100000 + n))
            outcomes.append("in")
        except AuthenticationFailed:
            outcomes.append("wrong")
        except Throttled:
            outcomes.append("throttled")
    # The free attempts were checked and refused; the next ones were not even checked.
    assert outcomes == ["wrong"] * SLOW.free + ["throttled"] * 2
    with pytest.raises(Throttled):
        await attempt(code(secret, 1))  # even the right code waits
    await wait_over(app_db)
    # A missing code is not a way round: it counts, and the password alone does not sign in.
    with pytest.raises(InvalidParameter):
        await attempt(None)
    with pytest.raises(Throttled):
        await attempt(code(secret, 1))
    await wait_over(app_db)
    session = await attempt(code(secret, 1))
    assert session.admin_id == admin_id
    assert session.two_factor


async def test_turning_it_off_needs_a_code_or_the_password(
    app: FastAPI, app_db: Database, world: World
) -> None:
    admin_id, secret, token = await enrolled(app, app_db, world)
    async with client_for(app, token) as me:
        r = await me.request("DELETE", "/ui/two-factor", json={})
        assert error(r, 400, "BadRequest").startswith("code:")
        r = await me.request("DELETE", "/ui/two-factor", json={"password": "not it at all"})
        assert error(r, 400, "BadRequest").startswith("password:")
        r = await me.request("DELETE", "/ui/two-factor", json={"code": "12345"})
        assert error(r, 400, "BadRequest").startswith("code:")
        r = await me.request("DELETE", "/ui/two-factor?code=123456", json={})
        assert error(r, 400, "BadRequest").startswith("code:")
        r = await me.request("DELETE", "/ui/two-factor", json={"code": "1" * 21})
        assert r.status_code == 400
        assert ok(await me.get("/ui/session"))["two_factor"] is True  # nothing changed
        ok(await me.request("DELETE", "/ui/two-factor", json={"code": code(secret, 1)}))
        assert ok(await me.get("/ui/session"))["two_factor"] is False
        assert tuple(await stored(app_db, admin_id)) == (None, None, None)
        # Again, off by the password this time.
        again = ok(await me.post("/ui/two-factor"))["secret"]
        assert again != secret
        ok(await me.post("/ui/two-factor/confirm", json={"code": code(again)}))
        r = await me.post("/ui/two-factor")
        assert error(r, 400, "BadRequest").startswith("code:")  # on already
        ok(await me.request("DELETE", "/ui/two-factor", json={"password": PASSWORD}))
        assert ok(await me.get("/ui/session"))["two_factor"] is False
    async with client_for(app) as anon:
        assert ok(await sign_in(anon))["admin"] == admin_id  # the password alone again
    actions = await audit_actions(app_db, world.app_id)
    assert actions.count("admin.totp_on") == 2
    assert actions.count("admin.totp_off") == 2


async def test_only_a_session_has_a_second_factor(app: FastAPI, world: World) -> None:
    async with client_for(app, world.token) as api:
        r = await api.post("/ui/two-factor")
        error(r, 403, "PermissionDenied")
        r = await api.post("/ui/two-factor/confirm", json={"code": "123456"})
        error(r, 403, "PermissionDenied")
    async with client_for(app) as anon:
        error(await anon.post("/ui/two-factor"), 401, "AuthenticationFailed")


async def test_whoever_manages_the_admin_resets_it(
    app: FastAPI, app_db: Database, world: World
) -> None:
    from tests.api.test_roles import session_of

    admin_id, _secret, _token = await enrolled(app, app_db, world)
    _op, operator = await session_of(app_db, world.app_id, Role.OPERATOR, "op@acme.test")
    _ad, administrator = await session_of(app_db, world.app_id, Role.ADMINISTRATOR, "ad@acme.test")
    path = f"/ext/apps/$self_app/admins/{admin_id}/two-factor"
    async with client_for(app, operator) as op:
        error(await op.delete(path), 403, "PermissionDenied")
    assert (await stored(app_db, admin_id)).totp_secret is not None
    async with client_for(app, world.token) as api:
        foreign = f"/ext/apps/$self_app/admins/{world.foreign_admin_id}/two-factor"
        error(await api.delete(foreign), 404, "NotFound")
    async with client_for(app, administrator) as ad:
        record = ok(await ad.delete(path))
        assert record["id"] in (admin_id, str(admin_id))
    assert tuple(await stored(app_db, admin_id)) == (None, None, None)
    assert (await audit_actions(app_db, world.app_id))[-1] == "admin.totp_reset"


async def test_an_administrator_cannot_reset_an_owners(
    app: FastAPI, app_db: Database, world: World
) -> None:
    from tests.api.test_roles import session_of

    admin_id, _secret, _token = await enrolled(app, app_db, world, Role.OWNER)
    _ad, administrator = await session_of(app_db, world.app_id, Role.ADMINISTRATOR, "ad@acme.test")
    async with client_for(app, administrator) as ad:
        r = await ad.delete(f"/ext/apps/$self_app/admins/{admin_id}/two-factor")
        error(r, 403, "PermissionDenied")
    assert (await stored(app_db, admin_id)).totp_secret is not None


async def test_the_command_line_resets_it(
    app: FastAPI, app_db: Database, world: World, db_url: str
) -> None:
    admin_id, _secret, _token = await enrolled(app, app_db, world, Role.OWNER)
    runner = CliRunner()
    args = ["admin", "reset-2fa", str(world.app_id), EMAIL.upper(), "--database-url", db_url]
    result = await asyncio.to_thread(runner.invoke, cli, args)
    assert result.exit_code == 0, result.output
    assert f'"admin": {admin_id}' in result.output
    assert tuple(await stored(app_db, admin_id)) == (None, None, None)
    missing = await asyncio.to_thread(
        runner.invoke,
        cli,
        ["admin", "reset-2fa", str(world.app_id), "nobody@acme.test", "--database-url", db_url],
    )
    assert missing.exit_code == 1
    assert (await audit_actions(app_db, world.app_id))[-1] == "admin.totp_reset"
