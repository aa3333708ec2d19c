"""The widget secret can be rotated (old user hashes stop working, signed-in site users'
sessions end), and a visitor's session ends once idle too long."""

from __future__ import annotations

from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from tests.api.conftest import client_for
from tests.api.helpers import error, ok
from tests.conftest import World
from tests.widget.test_widget_api import API, session, sign, visitor
from threadline.apps.service import utcnow
from threadline.db.engine import Database
from threadline.db.schema import widget_sessions
from threadline.widget import service as widget

WIDGET = "/ext/apps/$self_app/widget"


async def test_rotating_the_secret_refuses_old_hashes_and_ends_signed_sessions(
    app: FastAPI, api: httpx.AsyncClient, world: World
) -> None:
    old = ok(await api.get(WIDGET))["secret"]
    signed = await session(app, world.app_id, user_id="u-1", user_hash=sign(old, "u-1"))
    anonymous = await session(app, world.app_id)
    rotated = ok(await api.post(f"{WIDGET}/secret"))
    assert rotated["secret"] != old
    assert rotated["snippet"] == ok(await api.get(WIDGET))["snippet"]
    assert ok(await api.get(WIDGET))["secret"] == rotated["secret"]
    async with client_for(app) as anon:
        stale = {"app": world.app_id, "user_id": "u-1", "user_hash": sign(old, "u-1")}
        error(await anon.post(f"{API}/session", json=stale), 401, "AuthenticationFailed")
    fresh = await session(
        app, world.app_id, user_id="u-1", user_hash=sign(rotated["secret"], "u-1")
    )
    assert fresh["user"] == signed["user"]
    async with visitor(app, signed["token"]) as v:
        error(await v.get(f"{API}/conversations"), 401, "AuthenticationFailed")
    async with visitor(app, anonymous["token"]) as v:
        assert ok(await v.get(f"{API}/conversations")) == []
    async with visitor(app, fresh["token"]) as v:
        assert ok(await v.get(f"{API}/conversations")) == []


async def test_rotation_needs_the_admin_scope(app: FastAPI, api: httpx.AsyncClient) -> None:
    async with client_for(app) as anon:
        error(await anon.post(f"{WIDGET}/secret"), 401, "AuthenticationFailed")


async def test_an_idle_visitor_session_ends(app: FastAPI, app_db: Database, world: World) -> None:
    s = await session(app, world.app_id)
    assert await widget.authenticate(app_db, s["token"]) is not None
    idle = widget.session_idle_limit()
    async with app_db.write() as conn:
        await conn.execute(
            update(widget_sessions).values(last_used=utcnow() - idle + timedelta(minutes=5))
        )
    # Still in time: using it moves its last use to now.
    assert await widget.authenticate(app_db, s["token"]) is not None
    async with app_db.write() as conn:
        await conn.execute(update(widget_sessions).values(last_used=utcnow() - idle))
    assert await widget.authenticate(app_db, s["token"]) is None
    async with visitor(app, s["token"]) as v:
        error(await v.get(f"{API}/conversations"), 401, "AuthenticationFailed")


async def test_use_keeps_a_session_alive(app: FastAPI, app_db: Database, world: World) -> None:
    s = await session(app, world.app_id)
    idle = widget.session_idle_limit()
    async with app_db.write() as conn:
        await conn.execute(
            update(widget_sessions).values(last_used=utcnow() - idle + timedelta(minutes=1))
        )
    assert await widget.authenticate(app_db, s["token"]) is not None
    async with app_db.read() as conn:
        (last_used,) = (await conn.execute(widget_sessions.select())).first()[-1:]
    assert utcnow() - last_used < timedelta(minutes=1)
