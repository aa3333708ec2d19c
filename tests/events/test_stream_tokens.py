"""Open streams end when their token stops being valid: an API token revoked, an inbox
session expired, a widget visitor's user erased. The WebSocket closes with 3401 (and a
new connection is refused with it); an SSE response ends (and reconnecting answers 401).
Streams opened with other tokens go on receiving."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import sqlalchemy as sa

from tests.api.helpers import admin
from tests.events.live import WAIT, Live, closed_with, connect, receive_many
from threadline.apps.repository import AppRepository
from threadline.apps.service import issue_token_with_id, utcnow
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db.schema import api_tokens
from threadline.widget import service as widget


async def new_token(live: Live, expires_in: float | None = None) -> tuple[int, str]:
    """A token's id and text. (Not looked up in the app's token list: a token about to
    expire may have left it by then, on a slow machine.)"""
    expires = None if expires_in is None else utcnow() + timedelta(seconds=expires_in)
    async with live.db.write() as conn:
        repo = AppRepository(conn)
        return await issue_token_with_id(
            repo, live.world.app_id, "stream", ["conversations-read"], utcnow(), expires
        )


async def reply(live: Live, cid: int, body: str) -> None:
    w = live.world
    await service.perform(live.db, w.app_id, cid, ev.AdminReply(author=admin(w), body=body))


async def test_a_revoked_tokens_websocket_closes_with_3401_and_others_go_on(live: Live) -> None:
    w = live.world
    channel = f"conversation_reply.{w.app_id}"
    token_id, token = await new_token(live)
    started = await service.start_by_user(live.db, w.app_id, w.user_id, ev.UserReply(body="0"))
    cid = started.state.id
    async with (
        connect(live.ws_url(channel, token)) as doomed,
        connect(live.ws_url(channel)) as other,
    ):
        await reply(live, cid, "before")
        assert [m["message"]["part"]["body"] for m in await receive_many(doomed, 1)] == ["before"]
        assert [m["message"]["part"]["body"] for m in await receive_many(other, 1)] == ["before"]
        async with live.client() as http:
            r = await http.delete(f"/ext/apps/$self_app/tokens/{token_id}")
            assert r.status_code == 200, r.text
        await asyncio.wait_for(doomed.wait_closed(), WAIT)
        assert doomed.close_code == 3401
        await reply(live, cid, "after")
        assert [m["message"]["part"]["body"] for m in await receive_many(other, 1)] == ["after"]
    assert await closed_with(live.ws_url(channel, token)) == 3401


async def test_an_expired_tokens_sse_stream_ends_and_reconnecting_is_refused(live: Live) -> None:
    w = live.world
    token_id, token = await new_token(live, expires_in=3600)
    url = f"{live.http}/sse/conversation_reply.{w.app_id}?auth_token={token}"
    async with httpx.AsyncClient(timeout=WAIT) as http:
        async with http.stream("GET", url) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            # It expires once the stream is open (a deadline set before opening would
            # race the connection on a slow machine).
            async with live.db.write() as conn:
                await conn.execute(
                    sa.update(api_tokens)
                    .where(api_tokens.c.id == token_id)
                    .values(expires=utcnow() - timedelta(seconds=1))
                )

            async def until_the_end() -> None:
                async for _line in lines:
                    pass

            await asyncio.wait_for(until_the_end(), WAIT)  # it ends by itself
        again = await http.get(url)
        assert again.status_code == 401
        assert again.json()["meta"]["code"] == 3401


async def test_an_erased_visitors_widget_stream_closes(live: Live) -> None:
    w = live.world
    session = await widget.open_session(live.db, w.app_id, site_user_id=None, user_hash=None)
    user = session.visitor.user_id
    channel = f"conversation_reply.{w.app_id}.{user}"
    async with connect(live.ws_url(channel, session.token)) as ws:
        await service.start_by_user(live.db, w.app_id, user, ev.UserReply(body="hello"))
        (first,) = await receive_many(ws, 1)
        assert first["message"]["part"]["body"] == "hello"
        async with live.client() as http:
            r = await http.delete(f"/ext/users/{user}")
            assert r.status_code == 200, r.text
        await asyncio.wait_for(ws.wait_closed(), WAIT)
        assert ws.close_code == 3401
