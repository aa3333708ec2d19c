"""A real server for realtime tests: uvicorn in the test's event loop, on a free port.

WebSockets and SSE are tested over TCP with real clients (`websockets`, httpx streaming),
since in-memory ASGI transports do not stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import World, build_world
from threadline.api.config import ApiSettings
from threadline.db.engine import Database
from threadline.settings import Settings
from threadline.web.app import create_app

# Seconds a test waits for a message that should come (generous: the machine is shared).
WAIT = 10.0


@dataclass
class Live:
    app: FastAPI
    server: uvicorn.Server
    port: int
    world: World

    @property
    def db(self) -> Database:
        db: Database = self.app.state.db
        return db

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, channels: str, token: str | None = None, **params: Any) -> str:
        query = {"auth_token": token or self.world.token, **params}
        encoded = "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
        return f"ws://127.0.0.1:{self.port}/websocket/{channels}?{encoded}"

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.http,
            headers={"Authorization": f"Token {token or self.world.token}"},
            timeout=WAIT,
        )


@contextlib.asynccontextmanager
async def serve(db_url: str, tmp_path: Path, **settings: Any) -> AsyncIterator[Live]:
    app = create_app(Settings(database_url=db_url, **settings))
    app.state.api_settings = ApiSettings(data_dir=tmp_path / "data", rate_limit="")
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "the server did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        world = await build_world(app.state.db)
        yield Live(app, server, port, world)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def receive(ws: ClientConnection, wait: float = WAIT) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), wait)
    message: dict[str, Any] = orjson.loads(raw)
    return message


async def receive_many(ws: ClientConnection, n: int, skip_pings: bool = True) -> list[Any]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        message = await receive(ws)
        if skip_pings and message["channel"] == "ping":
            continue
        out.append(message)
    return out


async def nothing_more(ws: ClientConnection, wait: float = 0.5) -> None:
    """No message other than a ping arrives within `wait` seconds."""
    with contextlib.suppress(TimeoutError):
        while True:
            message = await receive(ws, wait)
            assert message["channel"] == "ping", message


async def closed_with(url: str) -> int | None:
    """Connect and wait for the server to close; the close code."""
    async with connect(url) as ws:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.recv(), WAIT)
        await asyncio.wait_for(ws.wait_closed(), WAIT)
        return ws.close_code


__all__ = ["Live", "closed_with", "connect", "nothing_more", "receive", "receive_many", "serve"]
