"""Realtime streams (outside the OpenAPI document) by every kind of caller of the role
matrix (tests/api/test_roles.py): a stream is opened by token and channel, never by role,
so every inbox session opens the inbox's channels; a token whose issuer was removed, or no
token, is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.api.test_roles import principals
from tests.events.live import Live, closed_with, serve

READ = "conversations-read"


@pytest.fixture
async def live(db_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    async with serve(db_url, tmp_path) as server:
        yield server


async def test_streams_by_every_caller_of_the_role_matrix(live: Live) -> None:
    app = live.world.app_id
    channel = f"conversation.{app}"
    opened = refused = 0
    for principal in await principals(live.db, live.world):
        allowed = principal.valid and READ in principal.scopes
        if principal.token is None:
            url = f"ws://127.0.0.1:{live.port}/websocket/{channel}"
        else:
            url = live.ws_url(channel, token=principal.token)
        if allowed:
            async with connect(url) as ws:
                await ws.send('{"action": "ping"}')
                assert ws.close_code is None, principal.name
            async with (
                live.client(principal.token) as http,
                http.stream("GET", f"/sse/{channel}") as r,
            ):
                assert r.status_code == 200, principal.name
                assert r.headers["content-type"].startswith("text/event-stream")
            opened += 1
            continue
        refused += 1
        expected = 3401 if not principal.valid else 3403
        assert await closed_with(url) == expected, principal.name
        headers = {"Authorization": f"Token {principal.token}"} if principal.token else {}
        async with live.client() as http:
            http.headers.pop("Authorization", None)
            r = await http.get(f"/sse/{channel}", headers=headers)
        assert r.status_code == (401 if not principal.valid else 403), principal.name
    # Three sessions, the command line's token, its read-only token, the administrator's.
    assert opened == 6
    assert refused == 7
