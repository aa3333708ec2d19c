"""Stream tokens stay out of URLs and logs: the inbox and the widget send theirs as a
WebSocket subprotocol (`token.<token>` next to `threadline`); the vendor's `auth_token`
query still works for API clients, and every log line (uvicorn's access log included)
shows it redacted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect

from tests.conftest import build_world
from tests.events.live import WAIT, Live, receive_many, serve
from tests.waiting import until
from threadline.api.config import ApiSettings
from threadline.conversations import service
from threadline.core import events as ev
from threadline.settings import Settings
from threadline.web.app import create_app
from threadline.web.logs import REDACTED, install_redaction, redact
from threadline.widget import service as widget


def ws(live: Live, channels: str) -> str:
    return f"ws://127.0.0.1:{live.port}/websocket/{channels}"


async def start(live: Live) -> int:
    w = live.world
    outcome = await service.start_by_user(live.db, w.app_id, w.user_id, ev.UserReply(body="hi"))
    return outcome.state.id


async def test_a_token_in_the_subprotocol_opens_the_stream(live: Live) -> None:
    w = live.world
    protocols = ["threadline", f"token.{w.token}"]
    async with connect(ws(live, f"conversation.{w.app_id}"), subprotocols=protocols) as sock:  # type: ignore[arg-type]
        assert sock.subprotocol == "threadline"
        await start(live)
        (first,) = await receive_many(sock, 1)
        assert first["message"]["type"] == "conversation_started"


async def test_a_visitor_token_in_the_subprotocol_opens_the_users_channel(live: Live) -> None:
    w = live.world
    visitor = await widget.open_session(live.db, w.app_id, site_user_id=None, user_hash=None)
    channels = f"conversation.{w.app_id}.{visitor.visitor.user_id}"
    protocols = ["threadline", f"token.{visitor.token}"]
    async with connect(ws(live, channels), subprotocols=protocols) as sock:  # type: ignore[arg-type]
        assert sock.subprotocol == "threadline"


async def test_a_bad_token_in_the_subprotocol_is_closed_with_3401(live: Live) -> None:
    protocols = ["threadline", "token.tl_nope"]
    async with connect(
        ws(live, f"conversation.{live.world.app_id}"), subprotocols=protocols
    ) as sock:  # type: ignore[arg-type]
        assert sock.subprotocol == "threadline"  # the handshake completes; then the code
        await asyncio.wait_for(sock.wait_closed(), WAIT)
        assert sock.close_code == 3401


def test_redact_hides_tokens_and_secret_parameters() -> None:
    line = (
        '127.0.0.1:5 - "GET /websocket/conversation.1?auth_token=tl_abcdefghijklmnop&tag=5 '
        'HTTP/1.1" 101 password=hunter2 tlw_0123456789abcdef whsec_AAAABBBBCCCC== user_hash=ff00'
    )
    out = redact(line)
    for secret in ("tl_abcdefghijklmnop", "hunter2", "tlw_0123456789", "whsec_AAAA", "ff00"):
        assert secret not in out
    assert f"auth_token={REDACTED}" in out
    assert "tag=5" in out
    # Snake_case names ending in a secret's name, a sign-in code, a reset link's token.
    form = "new_password=s3cret-one&current_password=s3cret-two&code=123456&t=tlr_abcdefghijkl"
    out = redact(f"POST /ui/password?{form} status_code=400")
    for secret in ("s3cret-one", "s3cret-two", "123456", "tlr_abcdefghijkl"):
        assert secret not in out
    assert "status_code=400" in out


@pytest.fixture
async def logged_server(db_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    """A server whose access log is on and goes to the root logger (where caplog listens)."""
    app = create_app(Settings(database_url=db_url))
    app.state.api_settings = ApiSettings(data_dir=tmp_path / "data", rate_limit="")
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=None,
        log_level="info",
        access_log=True,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Live(app, server, port, await build_world(app.state.db))
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def test_access_logs_carry_no_token(
    logged_server: Live, caplog: pytest.LogCaptureFixture
) -> None:
    install_redaction()
    live = logged_server
    token = live.world.token
    with caplog.at_level(logging.INFO):
        async with httpx.AsyncClient(base_url=live.http) as http:
            r = await http.get("/conversations/1", params={"auth_token": token})
            assert r.status_code in (200, 404)
        url = f"{ws(live, f'conversation.{live.world.app_id}')}?auth_token={token}"
        async with connect(url) as sock:
            await sock.close()

        def redacted_lines() -> int:
            return sum(f"auth_token={REDACTED}" in r.getMessage() for r in caplog.records)

        # Both requests' lines are logged (the GET's and the socket's), then checked.
        await until(lambda: redacted_lines() >= 2, "the GET's and the socket's log lines")
    access = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any("/conversations/1" in line for line in access), access
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert token not in everything
    assert token.removeprefix("tl_") not in everything
    assert f"auth_token={REDACTED}" in everything


@pytest.fixture
async def capped(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Live]:
    monkeypatch.setenv("THREADLINE_REALTIME_MAX_STREAMS_PER_TOKEN", "3")
    monkeypatch.setenv("THREADLINE_REALTIME_MAX_STREAMS_PER_ADDRESS", "5")
    async with serve(db_url, tmp_path) as server:
        yield server


async def test_streams_per_token_and_per_address_are_capped(capped: Live) -> None:
    live = capped
    w = live.world
    first = await widget.open_session(live.db, w.app_id, site_user_id=None, user_hash=None)
    channels = f"conversation.{w.app_id}.{first.visitor.user_id}"
    protocols = ["threadline", f"token.{first.token}"]
    async with contextlib.AsyncExitStack() as stack:
        socks = [
            await stack.enter_async_context(connect(ws(live, channels), subprotocols=protocols))  # type: ignore[arg-type]
            for _ in range(3)
        ]
        async with connect(ws(live, channels), subprotocols=protocols) as extra:  # type: ignore[arg-type]
            await asyncio.wait_for(extra.wait_closed(), WAIT)
            assert extra.close_code == 3429
        # SSE counts too, and answers 429 in the envelope.
        async with httpx.AsyncClient(base_url=live.http, timeout=WAIT) as http:
            r = await http.get(
                f"/sse/{channels}", headers={"Authorization": f"Token {first.token}"}
            )
            assert r.status_code == 429
            assert r.json()["meta"]["error"] == "Throttled"
        # Another token from the same address: up to the address's limit (5 in all).
        second = await widget.open_session(live.db, w.app_id, site_user_id=None, user_hash=None)
        other = f"conversation.{w.app_id}.{second.visitor.user_id}"
        more = ["threadline", f"token.{second.token}"]
        socks += [
            await stack.enter_async_context(connect(ws(live, other), subprotocols=more))  # type: ignore[arg-type]
            for _ in range(2)
        ]
        async with connect(ws(live, other), subprotocols=more) as extra:  # type: ignore[arg-type]
            await asyncio.wait_for(extra.wait_closed(), WAIT)
            assert extra.close_code == 3429
        await socks[0].close()

        # A closed stream frees its place (once the server has seen it close).
        async def admitted() -> bool:
            async with connect(ws(live, channels), subprotocols=protocols) as again:  # type: ignore[arg-type]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(again.recv(), 0.5)
                return again.close_code is None

        await until(admitted, "a closed stream's place to come free", WAIT)
