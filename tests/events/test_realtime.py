"""Realtime streams over real connections: WebSocket and SSE on a live server.

Channels and their token checks (3401, 3403), the message shape, the user's projection,
typing (streamed, never stored), resuming with the last tag (and SSE's Last-Event-ID)
without a gap or a duplicate, heartbeats, and one bus subscription per process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tests.api.helpers import admin
from tests.events.live import (
    WAIT,
    Live,
    closed_with,
    connect,
    nothing_more,
    receive,
    receive_many,
)
from threadline.apps import service as apps
from threadline.apps.repository import AppRepository
from threadline.apps.service import issue_token, utcnow
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import PartType


async def token(live: Live, *scopes: str, app_id: int | None = None) -> str:
    async with live.db.write() as conn:
        return await issue_token(
            AppRepository(conn), app_id or live.world.app_id, "t", list(scopes), utcnow()
        )


async def start(live: Live, body: str = "Hello") -> int:
    w = live.world
    out = await service.start_by_user(live.db, w.app_id, w.user_id, ev.UserReply(body=body))
    return out.state.id


async def test_token_and_channel_checks(live: Live) -> None:
    w = live.world
    app = w.app_id
    assert await closed_with(live.ws_url(f"conversation.{app}", token="nope")) == 3401
    assert await closed_with(live.ws_url(f"conversation.{w.foreign_app_id}")) == 3403
    assert await closed_with(live.ws_url("conversation_nonsense.1")) == 3403
    assert await closed_with(live.ws_url(f"conversation_assigned.{app}.{w.user_id}")) == 3403
    assert await closed_with(live.ws_url("/".join(["ping"] * 3 + [f"x{i}" for i in range(50)])))
    as_user = await token(live, "as-user")
    assert await closed_with(live.ws_url(f"conversation.{app}", token=as_user)) == 3403
    writer = await token(live, "conversations-write")
    assert await closed_with(live.ws_url(f"conversation.{app}.{w.user_id}", token=writer)) == 3403
    # The same refusals for SSE, as JSON errors.
    async with live.client("nope") as http:
        r = await http.get(f"/sse/conversation.{app}")
        assert r.status_code == 401
        assert r.json()["meta"]["code"] == 3401
    async with live.client() as http:
        r = await http.get(f"/sse/conversation.{w.foreign_app_id}")
        assert r.status_code == 403
        assert r.json()["meta"]["error"] == "PermissionDenied"
    # A user-only token may follow that user's own channels.
    async with connect(live.ws_url(f"conversation.{app}.{w.user_id}", token=as_user)) as ws:
        await start(live)
        (first,) = await receive_many(ws, 1)
        assert first["message"]["type"] == "conversation_started"


async def test_messages_per_channel_in_order(live: Live) -> None:
    w = live.world
    channels = (
        f"conversation.{w.app_id}/conversation_reply.$self_app/conversation_closed.{w.app_id}"
    )
    async with connect(live.ws_url(channels)) as ws:
        cid = await start(live)
        await service.perform(live.db, w.app_id, cid, ev.AdminReply(author=admin(w), body="Hi!"))
        await service.perform(live.db, w.app_id, cid, ev.Close(admin(w)))
        got = await receive_many(ws, 7)
        await nothing_more(ws)
    assert [(m["channel"], m["message"]["type"]) for m in got] == [
        (f"conversation.{w.app_id}", "conversation_started"),
        (f"conversation.{w.app_id}", "conversation_reply"),
        ("conversation_reply.$self_app", "conversation_reply"),
        (f"conversation.{w.app_id}", "conversation_reply"),
        ("conversation_reply.$self_app", "conversation_reply"),
        (f"conversation.{w.app_id}", "conversation_closed"),
        (f"conversation_closed.{w.app_id}", "conversation_closed"),
    ]
    for m in got:
        assert set(m) == {"id", "channel", "message", "tag", "time"}
        assert m["tag"] == str(m["id"]) == str(m["message"]["id"])
        # Whole seconds, in the envelope as in the objects (the order is the tag's).
        assert type(m["time"]) is int
        assert m["time"] == m["message"]["created"]
    assert got[1]["message"]["part"]["body"] == "Hello"
    assert got[3]["message"]["part"]["from"]["id"] == w.admin_id
    ids = [m["id"] for m in got]
    assert ids == sorted(ids)


async def test_a_users_channels_carry_the_users_view_only(live: Live) -> None:
    w = live.world
    channels = f"conversation.{w.app_id}.{w.user_id}/conversation_reply.{w.app_id}.{w.user_id}"
    async with connect(live.ws_url(channels)) as ws:
        cid = await start(live)
        a = admin(w)
        for event in (
            ev.ContentPart(type=PartType.NOTE, author=a, body="secret note"),
            ev.Assign(w.admin_id, a),
            ev.AddTag("vip", a),
            ev.AdminReply(author=a, body="visible answer"),
            ev.Close(a),
        ):
            await service.perform(live.db, w.app_id, cid, event)
        stranger = await apps.create_user(live.db, w.app_id, site_user_id="stranger")
        await service.start_by_user(live.db, w.app_id, stranger, ev.UserReply(body="not yours"))
        other = await service.start_by_user(
            live.db, w.app_id, w.user_id, ev.UserReply(body="mine too")
        )
        got = await receive_many(ws, 8)
        await nothing_more(ws)
    types = [(m["channel"].split(".")[0], m["message"]["type"]) for m in got]
    assert types == [
        ("conversation", "conversation_started"),
        ("conversation", "conversation_reply"),
        ("conversation_reply", "conversation_reply"),
        ("conversation", "conversation_reply"),
        ("conversation_reply", "conversation_reply"),
        ("conversation", "conversation_started"),
        ("conversation", "conversation_reply"),
        ("conversation_reply", "conversation_reply"),
    ]
    text = orjson.dumps(got).decode()
    assert "secret note" not in text
    assert "vip" not in text
    assert "not yours" not in text
    for m in got:
        changes = m["message"]["changes"]
        assert not {"tags", "assignee", "part_last", "parts_count"} & set(changes)
    assert got[3]["message"]["part"]["body"] == "visible answer"
    assert got[5]["message"]["conversation"] == other.state.id


async def test_typing_is_streamed_not_stored(live: Live) -> None:
    w = live.world
    cid = await start(live)
    async with (
        connect(live.ws_url(f"conversation_typing.{w.app_id}")) as operators,
        connect(live.ws_url(f"conversation_typing.{w.app_id}.{w.user_id}")) as user,
        live.client() as http,
    ):
        r = await http.post(f"/ext/conversations/{cid}/typing", json={"body": "Let me ch"})
        assert r.status_code == 200, r.text
        seen = await receive(operators)
        assert seen["channel"] == f"conversation_typing.{w.app_id}"
        assert seen["message"]["conversation"] == cid
        assert seen["message"]["body"] == "Let me ch"
        assert seen["message"]["from"]["kind"] == "sender"
        hidden = await receive(user)
        assert hidden["message"]["body"] is None  # a user sees that an operator types
        r = await http.post(
            f"/ext/conversations/{cid}/typing", json={"body": "when", "from_user": w.user_id}
        )
        assert r.status_code == 200, r.text
        assert (await receive(operators))["message"]["from"] == {"kind": "user", "id": w.user_id}
        assert (await receive(user))["message"]["body"] == "when"
        # Refused typing is not streamed.
        r = await http.post(f"/ext/conversations/{cid}/typing", json={"from_admin": 987654})
        assert r.status_code == 400
        await nothing_more(operators)
        events = (await http.get("/ext/apps/$self_app/events")).json()["data"]
        assert {e["type"] for e in events} == {"conversation_started", "conversation_reply"}


async def test_vendor_settyping_is_streamed_like_ext_typing(live: Live) -> None:
    """The vendor's documented curl: a urlencoded `body` with `from_user=true`, then as an
    admin; under /v1/ and with a trailing slash, as clients send it."""
    w = live.world
    cid = await start(live)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    async with (
        connect(live.ws_url(f"conversation_typing.{w.app_id}")) as operators,
        live.client() as http,
    ):
        r = await http.post(
            f"/v1/conversations/{cid}/settyping",
            content=b"body=My%20Message&from_user=true",
            headers=form,
        )
        assert r.json() == {"meta": {"status": 200}, "data": {}}
        seen = await receive(operators)
        assert seen["message"]["body"] == "My Message"
        assert seen["message"]["from"] == {"kind": "user", "id": w.user_id}
        r = await http.post(
            f"/conversations/{cid}/settyping/",
            content=f"body=Hi&from_admin={w.admin_id}".encode(),
            headers=form,
        )
        assert r.status_code == 200, r.text
        assert (await receive(operators))["message"]["from"] == {"kind": "admin", "id": w.admin_id}
        # `from_user=false` is not "as the user": the app's sender types.
        r = await http.post(f"/conversations/{cid}/settyping", data={"from_user": "false"})
        assert r.status_code == 200, r.text
        assert (await receive(operators))["message"]["from"]["kind"] == "sender"
        # Any other word is the vendor boolean's true: the user types.
        r = await http.post(f"/conversations/{cid}/settyping", data={"from_user": "maybe"})
        assert r.status_code == 200, r.text
        assert (await receive(operators))["message"]["from"] == {"kind": "user", "id": w.user_id}
        # A number is a user id, and no user has this one: refused, nothing streamed.
        r = await http.post(f"/conversations/{cid}/settyping", data={"from_user": "-5"})
        assert r.status_code == 400
        await nothing_more(operators)


async def test_resume_with_the_last_tag_misses_nothing_and_repeats_nothing(live: Live) -> None:
    w = live.world
    cid = await start(live)
    a = admin(w)
    channel = f"conversation.{w.app_id}"
    async with connect(live.ws_url(channel)) as ws:
        await service.perform(live.db, w.app_id, cid, ev.AdminReply(author=a, body="1"))
        (first,) = await receive_many(ws, 1)
    last = first["tag"]
    # Offline: other things happen.
    for i in range(3):
        await service.perform(live.db, w.app_id, cid, ev.UserReply(body=f"offline {i}"))
    async with connect(live.ws_url(channel, tag=last)) as ws:
        missed = await receive_many(ws, 3)
        assert [m["message"]["part"]["body"] for m in missed] == [f"offline {i}" for i in range(3)]
        await service.perform(live.db, w.app_id, cid, ev.AdminReply(author=a, body="live"))
        (now,) = await receive_many(ws, 1)
        assert now["message"]["part"]["body"] == "live"
        await nothing_more(ws)
    tags = [int(m["tag"]) for m in (first, *missed, now)]
    assert tags == sorted(set(tags))
    # With no tag, only what happens from now on.
    async with connect(live.ws_url(channel)) as ws:
        await nothing_more(ws, 0.3)
        await service.perform(live.db, w.app_id, cid, ev.Close(a))
        (closed,) = await receive_many(ws, 1)
        assert closed["message"]["type"] == "conversation_closed"
    assert await closed_with(live.ws_url(channel, tag="abc")) == 3400


async def sse_messages(lines: AsyncIterator[str], n: int) -> list[tuple[str | None, Any]]:
    """The next `n` data messages of an SSE stream, with their `id:` (comments skipped)."""
    out: list[tuple[str | None, Any]] = []
    ident: str | None = None
    async for line in lines:
        if line.startswith("id: "):
            ident = line[4:]
        elif line.startswith("data: "):
            out.append((ident, orjson.loads(line[6:])))
            ident = None
            if len(out) == n:
                return out
    raise AssertionError("the stream ended")


async def test_sse_stream_and_last_event_id(live: Live) -> None:
    w = live.world
    cid = await start(live)
    a = admin(w)
    path = f"/sse/conversation_reply.{w.app_id}/ping"
    async with live.client() as http:
        async with http.stream("GET", path) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = r.aiter_lines()
            await service.perform(live.db, w.app_id, cid, ev.AdminReply(author=a, body="one"))
            got = await sse_messages(lines, 3)
            replies = [(i, m) for i, m in got if m["channel"] != "ping"]
            pings = [m for i, m in got if m["channel"] == "ping"]
            if not replies:
                got = await sse_messages(lines, 1)
                replies = [(i, m) for i, m in got if m["channel"] != "ping"]
            ident, first = replies[0]
            assert ident == first["tag"]
            assert first["message"]["part"]["body"] == "one"
            assert all(p["id"] is None for p in pings)
        for i in range(2):
            await service.perform(live.db, w.app_id, cid, ev.UserReply(body=f"gap {i}"))
        headers = {"Last-Event-ID": first["tag"]}
        async with http.stream("GET", path, headers=headers) as r:
            got = await sse_messages(r.aiter_lines(), 4)
            replies = [m for _, m in got if m["channel"] != "ping"]
            while len(replies) < 2:
                replies += [m for _, m in await sse_messages(r.aiter_lines(), 1)
                            if m["channel"] != "ping"]  # fmt: skip
        assert [m["message"]["part"]["body"] for m in replies[:2]] == ["gap 0", "gap 1"]


async def test_heartbeats_and_one_subscription_per_process(live: Live) -> None:
    w = live.world
    hub = live.app.state.realtime.hub
    async with (
        connect(live.ws_url(f"ping/conversation.{w.app_id}")) as one,
        connect(live.ws_url(f"conversation.{w.app_id}")) as two,
        connect(live.ws_url(f"conversation_reply.{w.app_id}")) as three,
    ):
        ping = await receive(one)
        assert ping["channel"] == "ping"
        assert set(ping) == {"id", "channel", "message", "tag", "time"}
        assert len(hub.clients) == 3
        await start(live)
        assert (await receive_many(two, 1))[0]["message"]["type"] == "conversation_started"
        assert (await receive_many(three, 1))[0]["message"]["type"] == "conversation_reply"
    for _ in range(100):
        if not hub.clients:
            break
        await asyncio.sleep(0.05)
    assert not hub.clients
    bus = live.app.state.realtime.bus
    assert len(getattr(bus, "_tasks", [])) in (0, 2), "one listener (and one sender) at most"


async def test_ids_as_strings_in_messages(live: Live) -> None:
    w = live.world
    async with connect(live.ws_url(f"conversation.{w.app_id}", id_as_string="true")) as ws:
        cid = await start(live)
        await service.perform(live.db, w.app_id, cid, ev.ChangeChannel(w.channel_id, admin(w)))
        got = await receive_many(ws, 3)
    assert got[2]["message"]["part"]["body_json"] == {"channel": str(w.channel_id)}
    assert got[0]["id"] == got[0]["tag"]
    assert got[0]["message"]["conversation"] == str(cid)
    assert got[0]["message"]["changes"]["channel"] == str(w.default_channel_id)
    assert isinstance(got[1]["message"]["part"]["id"], str)


def _kinds(messages: list[dict[str, Any]]) -> list[str]:
    return [m["message"]["type"] for m in messages]


__all__ = ["WAIT"]
