"""Fan-out between real server processes on one PostgreSQL database (and one Redis).

Two uvicorn processes: a change written through one reaches WebSocket and SSE clients of
the other, through Redis pub/sub or PostgreSQL LISTEN/NOTIFY. With Redis gone (cut by a
proxy in front of it), writes still succeed; once Redis is back, the other process's
clients catch up from the event log, in order, without a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import World, build_world
from tests.events.live import WAIT, connect, nothing_more, receive_many
from threadline.db.engine import Database

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60


def redis_url() -> str | None:
    url = os.environ.get("THREADLINE_TEST_REDIS_URL")
    if not url and os.environ.get("CI"):
        raise RuntimeError("CI=true but THREADLINE_TEST_REDIS_URL is not set")
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Proxy:
    """A TCP proxy to Redis that the test can cut and restore (Redis itself is shared)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.links -= {writer, up_writer}

    async def cut(self) -> None:
        """Redis goes away: no new connections, and the open ones are reset."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for link in list(self.links):
            link.transport.abort()
        self.links.clear()

    async def restore(self) -> None:
        await self.start()


@dataclass
class Process:
    port: int
    proc: asyncio.subprocess.Process

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, channels: str, token: str, **params: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"auth_token": token, **params}.items())
        return f"ws://127.0.0.1:{self.port}/websocket/{channels}?{query}"


@contextlib.asynccontextmanager
async def servers(env: dict[str, str], count: int = 2) -> AsyncIterator[list[Process]]:
    started: list[Process] = []
    try:
        for _ in range(count):
            port = free_port()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "uvicorn",
                "threadline.web.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--ws",
                "websockets-sansio",
                "--log-level",
                "warning",
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            started.append(Process(port, proc))
        async with httpx.AsyncClient() as http:
            for server in started:
                for _ in range(START_TIMEOUT_S * 10):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"{server.http}/health")).status_code == 200:
                            break
                    if server.proc.returncode is not None:
                        assert server.proc.stderr is not None
                        err = await server.proc.stderr.read()
                        raise AssertionError(f"server exited: {err.decode()[-2000:]}")
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("server did not start")
        yield started
    finally:
        for server in started:
            if server.proc.returncode is None:
                server.proc.terminate()
        for server in started:
            try:
                await asyncio.wait_for(server.proc.wait(), 20)
            except TimeoutError:
                server.proc.kill()
                await server.proc.wait()


@pytest.fixture
def pg_url(db_url: str) -> str:
    if not db_url.startswith("postgresql"):
        pytest.skip("several processes share one PostgreSQL database (SQLite: one process)")
    return db_url


@pytest.fixture
async def world(pg_url: str) -> AsyncIterator[World]:
    db = Database(pg_url)
    try:
        yield await build_world(db)
    finally:
        await db.dispose()


def base_env(url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "THREADLINE_DATABASE_URL": url,
        "THREADLINE_RATE_LIMIT": "",
        "THREADLINE_DATA_DIR": str(tmp_path / "data"),
        "THREADLINE_BUS_CHANNEL": f"threadline_test_{uuid.uuid4().hex[:12]}",
        "THREADLINE_REALTIME_HEARTBEAT_SECONDS": "5",
    }


async def reply(server: Process, token: str, cid: int, body: str) -> None:
    async with httpx.AsyncClient(base_url=server.http, timeout=WAIT) as http:
        r = await http.post(
            f"/conversations/{cid}/reply",
            json={"body": body},
            headers={"Authorization": f"Token {token}"},
        )
        assert r.status_code == 200, r.text


async def start_conversation(server: Process, world: World) -> int:
    async with httpx.AsyncClient(base_url=server.http, timeout=WAIT) as http:
        r = await http.post(
            f"/users/{world.user_id}/startconversation",
            json={"body": "Hello"},
            headers={"Authorization": f"Token {world.token}"},
        )
        assert r.status_code == 200, r.text
        cid: int = r.json()["data"]["id"]
        return cid


async def sse_data(lines: AsyncIterator[str], n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async for line in lines:
        if line.startswith("data: "):
            message = orjson.loads(line[6:])
            if message["channel"] != "ping":
                out.append(message)
            if len(out) == n:
                return out
    raise AssertionError("the stream ended")


@pytest.fixture(params=["redis", "postgres"])
def bus(request: pytest.FixtureRequest) -> str:
    if request.param == "redis" and not redis_url():
        pytest.skip("THREADLINE_TEST_REDIS_URL is not set")
    kind: str = request.param
    return kind


@pytest.fixture
def redis_target() -> Iterator[tuple[str, int]]:
    url = redis_url()
    if not url:
        pytest.skip("THREADLINE_TEST_REDIS_URL is not set")
    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or 6379


async def test_a_write_in_one_process_reaches_the_clients_of_the_other(
    pg_url: str, world: World, tmp_path: Path, bus: str
) -> None:
    env = base_env(pg_url, tmp_path)
    # Polling far apart: what arrives within the test's wait came through the bus.
    env |= {"THREADLINE_BUS": bus, "THREADLINE_REALTIME_POLL_SECONDS": "60"}
    if bus == "redis":
        env["THREADLINE_REDIS_URL"] = redis_url() or ""
    async with servers(env) as (a, b):
        channels = f"conversation.{world.app_id}/conversation_reply.{world.app_id}"
        async with (
            connect(b.ws(channels, world.token)) as ws,
            httpx.AsyncClient(base_url=b.http, timeout=WAIT) as http,
            http.stream(
                "GET",
                f"/sse/conversation_reply.{world.app_id}",
                headers={"Authorization": f"Token {world.token}"},
            ) as sse,
        ):
            cid = await start_conversation(a, world)
            await reply(a, world.token, cid, "through A")
            got = await receive_many(ws, 5)
            assert [(m["channel"].split(".")[0], m["message"]["type"]) for m in got] == [
                ("conversation", "conversation_started"),
                ("conversation", "conversation_reply"),
                ("conversation_reply", "conversation_reply"),
                ("conversation", "conversation_reply"),
                ("conversation_reply", "conversation_reply"),
            ]
            assert got[-1]["message"]["part"]["body"] == "through A"
            streamed = await sse_data(sse.aiter_lines(), 2)
            assert [m["message"]["part"]["body"] for m in streamed] == ["Hello", "through A"]
            # Typing goes through the bus too.
            async with connect(b.ws(f"conversation_typing.{world.app_id}", world.token)) as t:
                async with httpx.AsyncClient(base_url=a.http, timeout=WAIT) as http_a:
                    r = await http_a.post(
                        f"/ext/conversations/{cid}/typing",
                        json={"body": "hm"},
                        headers={"Authorization": f"Token {world.token}"},
                    )
                    assert r.status_code == 200, r.text
                (typing,) = await receive_many(t, 1)
                assert typing["message"]["body"] == "hm"


async def test_writes_survive_redis_going_away_and_clients_catch_up(
    pg_url: str, world: World, tmp_path: Path, redis_target: tuple[str, int]
) -> None:
    proxy = Proxy(*redis_target)
    await proxy.start()
    env = base_env(pg_url, tmp_path) | {
        "THREADLINE_BUS": "redis",
        "THREADLINE_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0",
        "THREADLINE_REALTIME_POLL_SECONDS": "60",
    }
    try:
        async with servers(env) as (a, b):
            cid = await start_conversation(a, world)
            channel = f"conversation_reply.{world.app_id}"
            async with connect(b.ws(channel, world.token)) as ws:
                await reply(a, world.token, cid, "before")
                (before,) = await receive_many(ws, 1)
                assert before["message"]["part"]["body"] == "before"

                await proxy.cut()
                for i in range(3):
                    await reply(a, world.token, cid, f"while away {i}")  # still 200
                await nothing_more(ws, 1.0)

                await proxy.restore()
                got = await receive_many(ws, 3)
                assert [m["message"]["part"]["body"] for m in got] == [
                    f"while away {i}" for i in range(3)
                ]
                await reply(a, world.token, cid, "after")
                (after,) = await receive_many(ws, 1)
                assert after["message"]["part"]["body"] == "after"
                await nothing_more(ws, 0.5)
            tags = [int(m["tag"]) for m in (before, *got, after)]
            assert tags == sorted(set(tags))
    finally:
        await proxy.cut()
