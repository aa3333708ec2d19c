"""The chat widget's visitor API over HTTP, and its realtime channels, on both databases.

A visitor session acts as one user only: its own conversations, in the user's projection,
writes safe to retry; everything else is answered like a missing object.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.api.conftest import client_for
from tests.api.helpers import admin, error, ok, started
from tests.conftest import World
from tests.events.live import Live, closed_with, connect, receive
from threadline.api.config import ApiSettings
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import PartType
from threadline.db.engine import Database
from threadline.db.schema import users as users_table
from threadline.widget.routes import NewVisitorLimit

API = "/widget/api"


async def session(app: FastAPI, app_id: int, **signed: str) -> dict[str, Any]:
    async with client_for(app) as anon:
        data: dict[str, Any] = ok(await anon.post(f"{API}/session", json={"app": app_id, **signed}))
    return data


def visitor(app: FastAPI, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://threadline.test",
        headers={"Authorization": f"Bearer {token}"},
    )


def sign(secret: str, user_id: str) -> str:
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


async def test_anonymous_visitor_starts_replies_and_reads_history(
    app: FastAPI, api: httpx.AsyncClient, world: World
) -> None:
    s = await session(app, world.app_id)
    assert s["token"].startswith("tlw_")
    assert s["app"] == {"id": world.app_id}  # never the app's name: anyone may ask
    assert "Acme" not in str(s)
    user = s["user"]
    assert user not in (world.user_id, world.foreign_user_id)
    assert s["channels"] == [
        f"conversation.{world.app_id}.{user}",
        f"conversation_reply.{world.app_id}.{user}",
        f"conversation_typing.{world.app_id}.{user}",
        f"conversation_read.{world.app_id}.{user}",
    ]
    async with visitor(app, s["token"]) as v:
        assert ok(await v.get(f"{API}/conversations")) == []
        first = ok(await v.post(f"{API}/conversations", json={"body": "Hi <b>", "random_id": 7}))
        cid = first["conversation"]["id"]
        assert first["part"]["type"] == "reply_user"
        assert first["part"]["body"] == "Hi <b>"
        assert first["part"]["from"] == user
        # A retry (same random_id) starts nothing new and answers the same part.
        again = ok(await v.post(f"{API}/conversations", json={"body": "Hi <b>", "random_id": 7}))
        assert again["conversation"]["id"] == cid
        assert again["part"]["id"] == first["part"]["id"]
        reply = ok(
            await v.post(
                f"{API}/conversations/{cid}/reply", data={"body": "More", "random_id": "8"}
            )
        )
        retried = ok(
            await v.post(f"{API}/conversations/{cid}/reply", json={"body": "More", "random_id": 8})
        )
        assert retried["part"]["id"] == reply["part"]["id"]
        listed = ok(await v.get(f"{API}/conversations"))
        assert [c["id"] for c in listed] == [cid]
        history = ok(await v.get(f"{API}/conversations/{cid}"))
        assert [p["body"] for p in history["parts"]] == ["Hi <b>", "More"]
        assert [p["random_id"] for p in history["parts"]] == [7, 8]
        assert history["parts"][0]["read"] is False

    # The operators see exactly the two user replies, written as the visitor's user.
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    assert sorted((p["type"], p["body"], p["from"]) for p in parts) == [
        ("reply_user", "Hi <b>", user),
        ("reply_user", "More", user),
    ]
    conversation = ok(await api.get(f"/conversations/{cid}"))
    assert conversation["replied"] is True
    assert conversation["user"]["id"] == user
    assert conversation["admin_unread_count"] == 2


async def test_the_visitor_sees_the_users_projection_and_marks_read(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    s = await session(app, world.app_id)
    async with visitor(app, s["token"]) as v:
        cid = ok(await v.post(f"{API}/conversations", json={"body": "Where is my order?"}))[
            "conversation"
        ]["id"]
        a = admin(world)
        for event in (
            ev.ContentPart(type=PartType.NOTE, author=a, body="secret note: refund fraud?"),
            ev.Assign(world.admin_id, a),
            ev.AddTag("vip", a),
            ev.AdminReply(author=a, body="It ships today."),
        ):
            await service.perform(app_db, world.app_id, cid, event)
        seen = ok(await v.get(f"{API}/conversations/{cid}"))
        text = orjson.dumps(seen).decode()
        assert "secret note" not in text
        assert "vip" not in text
        assert not {"tags", "assignee", "channel", "admin_unread_count", "parts_count"} & set(seen)
        assert [(p["type"], p["body"]) for p in seen["parts"]] == [
            ("reply_user", "Where is my order?"),
            ("reply_admin", "It ships today."),
        ]
        # Answering means the operator read the user's part: the read receipt.
        assert seen["parts"][0]["read"] is True
        assert seen["parts"][1]["from"]["name"] == "Ann"
        assert seen["user_unread_count"] == 1
        (listed,) = ok(await v.get(f"{API}/conversations"))
        assert listed["user_unread_count"] == 1
        read = ok(await v.post(f"{API}/conversations/{cid}/read"))
        assert read["user_unread_count"] == 0
    operators = ok(await api.get(f"/conversations/{cid}"))
    assert operators["user_unread_count"] == 0
    assert operators["tags"] == ["vip"]


async def test_a_signed_user_id_is_accepted_and_a_bad_hash_refused(
    app: FastAPI, api: httpx.AsyncClient, world: World
) -> None:
    settings = ok(await api.get("/ext/apps/$self_app/widget"))
    secret = settings["secret"]
    assert len(secret) == 64
    assert ok(await api.get(f"/ext/apps/{world.app_id}/widget"))["secret"] == secret
    assert f'data-app="{world.app_id}"' in settings["snippet"]
    assert settings["script"].endswith("/widget.js")

    s = await session(app, world.app_id, user_id="u-1", user_hash=sign(secret, "u-1"))
    assert s["user"] == world.user_id
    # Upper-case hex is the same signature.
    s2 = await session(app, world.app_id, user_id="u-1", user_hash=sign(secret, "u-1").upper())
    assert s2["user"] == world.user_id
    # A new site user is created on first contact.
    new = await session(app, world.app_id, user_id="u-new", user_hash=sign(secret, "u-new"))
    assert new["user"] not in (world.user_id, s["user"])

    async with client_for(app) as anon:
        for body in (
            {"user_id": "u-1", "user_hash": sign(secret, "u-2")},
            {"user_id": "u-1", "user_hash": sign("not-the-secret", "u-1")},
            {"user_id": "u-1", "user_hash": "zz"},
        ):
            r = await anon.post(f"{API}/session", json={"app": world.app_id, **body})
            assert "user_hash" in error(r, 401, "AuthenticationFailed")
        r = await anon.post(f"{API}/session", json={"app": world.app_id, "user_id": "u-1"})
        assert error(r, 400, "BadRequest").startswith("user_hash:")
        # Another app's secret signs nothing here.
        r = await anon.post(
            f"{API}/session",
            json={"app": world.foreign_app_id, "user_id": "u-1", "user_hash": sign(secret, "u-1")},
        )
        error(r, 401, "AuthenticationFailed")
    # The secret is an operator's (admin scope) secret.
    async with client_for(app) as anon:
        error(await anon.get("/ext/apps/$self_app/widget"), 401, "AuthenticationFailed")


async def test_a_visitor_reaches_only_its_own_users_conversations(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    theirs = await started(app_db, world, "the signed user's own")
    foreign = (
        await service.start_by_user(
            app_db, world.foreign_app_id, world.foreign_user_id, ev.UserReply(body="other app")
        )
    ).state.id
    other = await session(app, world.app_id)
    async with visitor(app, other["token"]) as o:
        other_cid = ok(await o.post(f"{API}/conversations", json={"body": "another visitor"}))[
            "conversation"
        ]["id"]
    before = [ok(await api.get(f"/conversations/{c}/parts")) for c in (theirs, other_cid)]

    s = await session(app, world.app_id)
    async with visitor(app, s["token"]) as v:
        assert ok(await v.get(f"{API}/conversations")) == []
        for cid in (theirs, foreign, other_cid, 987654321):
            for method, path, body in (
                ("GET", f"/conversations/{cid}", None),
                ("POST", f"/conversations/{cid}/reply", {"body": "mine now"}),
                ("POST", f"/conversations/{cid}/read", {}),
                ("POST", f"/conversations/{cid}/typing", {"body": "x"}),
            ):
                r = await v.request(method, API + path, json=body)
                error(r, 404, "NotFound")
        # An API token is not a visitor token, and a visitor token is not an API token.
    async with visitor(app, world.token) as wrong:
        error(await wrong.get(f"{API}/conversations"), 401, "AuthenticationFailed")
    async with client_for(app, s["token"]) as wrong:
        error(await wrong.get(f"/conversations/{theirs}"), 401, "AuthenticationFailed")
    after = [ok(await api.get(f"/conversations/{c}/parts")) for c in (theirs, other_cid)]
    assert after == before

    # An erased user's sessions stop working.
    ok(await api.delete(f"/ext/users/{s['user']}"))
    async with visitor(app, s["token"]) as v:
        error(await v.get(f"{API}/conversations"), 401, "AuthenticationFailed")


async def test_bad_input_is_a_bad_request_naming_the_parameter(app: FastAPI, world: World) -> None:
    async with client_for(app) as anon:
        for body, name in (
            ({}, "app"),
            ({"app": "abc"}, "app"),
            ({"app": -3}, "app"),
            ({"app": world.app_id, "user_id": "", "user_hash": "ab"}, "user_id"),
            ({"app": world.app_id, "user_id": "x" * 256, "user_hash": "ab"}, "user_id"),
            ({"app": world.app_id, "user_hash": "ab"}, "user_id"),
            ({"app": world.app_id, "user_id": ["a"], "user_hash": "ab"}, "user_id"),
        ):
            r = await anon.post(f"{API}/session", json=body)
            assert error(r, 400, "BadRequest").startswith(f"{name}:"), body
        error(await anon.post(f"{API}/session", json={"app": 987654321}), 404, "NotFound")
        r = await anon.post(
            f"{API}/session", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert error(r, 400, "BadRequest").startswith("body:")
        error(await anon.get(f"{API}/conversations"), 401, "AuthenticationFailed")
        r = await anon.get(f"{API}/conversations", headers={"Authorization": "Bearer tlw_nope"})
        error(r, 401, "AuthenticationFailed")
    s = await session(app, world.app_id)
    async with visitor(app, s["token"]) as v:
        cid = ok(await v.post(f"{API}/conversations", json={"body": "Hello"}))["conversation"]["id"]
        cases: tuple[tuple[str, dict[str, Any], str], ...] = (
            ("/conversations", {"body": ""}, "body"),
            ("/conversations", {"body": "   "}, "body"),
            ("/conversations", {"body": ["a"]}, "body"),
            ("/conversations", {"body": "x", "random_id": -(2**63) - 1}, "random_id"),
            ("/conversations", {"body": "x", "random_id": "abc"}, "random_id"),
            (f"/conversations/{cid}/reply", {"body": ""}, "body"),
            (f"/conversations/{cid}/reply", {"body": "x", "random_id": 2**64}, "random_id"),
            ("/conversations/abc/reply", {"body": "x"}, "id"),
            ("/conversations/0/read", {}, "id"),
            (f"/conversations/{cid}/typing", {"body": {"a": 1}}, "body"),
        )
        for path, body, name in cases:
            r = await v.post(API + path, json=body)
            assert error(r, 400, "BadRequest").startswith(f"{name}:"), (path, body)
        r = await v.post(f"{API}/conversations", json={"body": "x" * 70_000})
        assert r.status_code == 400
        assert "body" in r.json()["meta"]["error_message"]
        # Nothing of the refused writes was stored.
        (only,) = ok(await v.get(f"{API}/conversations"))
        assert only["replies_count"] == 1
        error(await v.delete(f"{API}/conversations"), 405, "MethodNotAllowed")


async def test_the_script_the_demo_page_and_cross_origin_calls(app: FastAPI, world: World) -> None:
    async with client_for(app) as anon:
        script = await anon.get("/widget.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert "attachShadow" in script.text
        assert "innerHTML" not in script.text.replace("template.innerHTML = MARKUP", "")
        cached = await anon.get("/widget.js", headers={"If-None-Match": script.headers["etag"]})
        assert cached.status_code == 304

        page = await anon.get("/demo/site")
        assert page.status_code == 200
        assert f'<script src="/widget.js" data-app="{world.app_id}"' in page.text
        chosen = await anon.get("/demo/site", params={"app": world.foreign_app_id})
        assert f'data-app="{world.foreign_app_id}"' in chosen.text
        assert (await anon.get("/demo/site", params={"app": "<x>"})).status_code == 400
        assert "&lt;x&gt;" not in (await anon.get("/demo/site", params={"app": "1"})).text
        assert (await anon.get("/demo/site", params={"app": 987654321})).status_code == 404

        preflight = await anon.options(
            f"{API}/session",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "Authorization" in preflight.headers["access-control-allow-headers"]
        refused = await anon.get(f"{API}/conversations", headers={"Origin": "https://shop.example"})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "*"


# ---------------------------------------------------------------------------
# Realtime


async def _live_session(live: Live) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=live.http) as anon:
        data: dict[str, Any] = ok(
            await anon.post(f"{API}/session", json={"app": live.world.app_id})
        )
    return data


async def _next(ws: Any) -> dict[str, Any]:
    while True:
        message = await receive(ws)
        if message["channel"] != "ping":
            return message


async def _only_pings(ws: Any, seconds: float = 1.0) -> None:
    """Nothing but pings arrives for `seconds` (the visitor follows `ping` too)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            message = await receive(ws, left)
        except TimeoutError:
            return
        assert message["channel"] == "ping", message


async def test_a_visitor_follows_its_own_channels_only(live: Live) -> None:
    w = live.world
    s = await _live_session(live)
    user, token = s["user"], s["token"]
    a = w.app_id
    # Someone else's user, the operators' app-wide channels, another app: 3403. A bad token: 3401.
    for channels in (
        f"conversation.{a}.{w.user_id}",
        f"conversation_reply.{a}.{user}/conversation_typing.{a}.{w.user_id}",
        f"conversation.{a}",
        f"conversation_started_user.{a}",
        f"conversation_typing.{a}",
        f"conversation.{w.foreign_app_id}.{user}",
        f"conversation_assigned.{a}.{user}",
    ):
        assert await closed_with(live.ws_url(channels, token=token)) == 3403, channels
    assert await closed_with(live.ws_url(f"conversation.{a}.{user}", token="tlw_nope")) == 3401
    async with httpx.AsyncClient(base_url=live.http) as http:
        r = await http.get(f"/sse/conversation.{a}", params={"auth_token": token})
        assert r.status_code == 403
        assert r.json()["meta"]["code"] == 3403

    own = "/".join([*s["channels"], "ping"]).replace(f".{a}.", ".$self_app.", 1)
    async with (
        connect(live.ws_url(own, token=token)) as ws,
        connect(live.ws_url(f"conversation_typing.{a}")) as operators,
        httpx.AsyncClient(base_url=live.http, headers={"Authorization": f"Bearer {token}"}) as v,
    ):
        started_ = ok(await v.post(f"{API}/conversations", json={"body": "Hi there"}))
        cid = started_["conversation"]["id"]
        kinds: set[tuple[str, str]] = set()
        while len(kinds) < 3:
            m = await _next(ws)
            kinds.add((m["channel"].split(".")[0], m["message"]["type"]))
        assert kinds == {
            ("conversation", "conversation_started"),
            ("conversation", "conversation_reply"),
            ("conversation_reply", "conversation_reply"),
        }
        aa = admin(w)
        await service.perform(
            live.db, w.app_id, cid, ev.ContentPart(type=PartType.NOTE, author=aa, body="psst")
        )
        await service.perform(live.db, w.app_id, cid, ev.AddTag("vip", aa))
        await service.perform(live.db, w.app_id, cid, ev.AdminReply(author=aa, body="Hello!"))
        got = [await _next(ws) for _ in range(2)]
        text = orjson.dumps(got).decode()
        assert "psst" not in text
        assert "vip" not in text
        assert sorted(m["channel"].split(".")[0] for m in got) == [
            "conversation",
            "conversation_reply",
        ]
        for m in got:
            assert m["message"]["part"]["body"] == "Hello!"
            # Answering means having read: the visitor's read receipt comes with the reply.
            assert m["message"]["read_by"] == "admin"

        # The visitor types: the operators see the draft; the operator types: the visitor
        # sees that (not what) they type.
        ok(await v.post(f"{API}/conversations/{cid}/typing", json={"body": "one more th"}))
        typed = await receive(operators)
        assert typed["message"]["from"] == {"kind": "user", "id": user}
        assert typed["message"]["body"] == "one more th"
        echo = await _next(ws)
        assert echo["channel"].startswith("conversation_typing.")
        async with live.client() as http:
            r = await http.post(
                f"/ext/conversations/{cid}/typing",
                json={"body": "draft", "from_admin": w.admin_id},
            )
            assert r.status_code == 200, r.text
        seen = await _next(ws)
        assert seen["message"]["from"] == {"kind": "admin", "id": w.admin_id}
        assert seen["message"]["body"] is None

        # Another user's conversation never shows up here.
        await started(live.db, w, "someone else's")
        await _only_pings(ws)
        # The visitor reads: the event comes back on the read channel.
        ok(await v.post(f"{API}/conversations/{cid}/read"))
        m = await _next(ws)
        assert m["message"]["read_by"] == "user"
        assert m["message"]["changes"]["user_unread_count"] == 0
        tag = m["tag"]
    # Resuming with the last tag misses nothing.
    await service.perform(live.db, w.app_id, cid, ev.AdminReply(author=admin(w), body="Later"))
    async with connect(live.ws_url(f"conversation.{a}.{user}", token=token, tag=tag)) as ws:
        m = await asyncio.wait_for(_next(ws), 10)
        assert m["message"]["part"]["body"] == "Later"


async def test_new_anonymous_visitors_are_limited_per_address(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    app.state.new_visitor_limit = NewVisitorLimit("3/minute")

    async def users() -> int:
        async with app_db.read() as conn:
            return int(await conn.scalar(select(func.count()).select_from(users_table)) or 0)

    for _ in range(3):
        await session(app, world.app_id)
    before = await users()
    async with client_for(app) as anon:
        r = await anon.post(f"{API}/session", json={"app": world.app_id})
    error(r, 429, "Throttled")
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["access-control-allow-origin"] == "*"
    assert await users() == before
    # A site's own signed-in users are not new anonymous visitors: never limited here.
    secret = ok(await api.get("/ext/apps/$self_app/widget"))["secret"]
    signed = await session(app, world.app_id, user_id="u-1", user_hash=sign(secret, "u-1"))
    assert signed["user"] == world.user_id


async def test_each_visitor_has_the_api_rate_limit_of_its_own(
    app: FastAPI, api: httpx.AsyncClient, world: World
) -> None:
    """A visitor's requests count against the API limit under a key of its session; another
    visitor, and the app's API token, keep their own budgets."""
    settings: ApiSettings = app.state.api_settings
    app.state.api_settings = settings.model_copy(
        update={"rate_limit": "3/minute", "rate_limit_storage": "memory://"}
    )
    first = await session(app, world.app_id)
    second = await session(app, world.app_id)
    async with visitor(app, first["token"]) as v:
        for _ in range(3):
            assert ok(await v.get(f"{API}/conversations")) == []
        r = await v.get(f"{API}/conversations")
        error(r, 429, "Throttled")
        assert int(r.headers["retry-after"]) >= 1
        # Refused before anything is written.
        error(await v.post(f"{API}/conversations", json={"body": "Hi"}), 429, "Throttled")
    async with visitor(app, second["token"]) as v:
        assert ok(await v.get(f"{API}/conversations")) == []
    ok(await api.get("/apps/$self_app/channels"))
    # The refused POST started nothing.
    assert ok(await api.get(f"/users/{first['user']}/conversations")) == []
