"""/health through the ASGI app with its lifespan running, on both databases."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from threadline import __version__
from threadline.db.migrate import upgrade
from threadline.settings import Settings
from threadline.web.app import create_app

# Nothing listens on port 1: the connection is refused at once.
UNREACHABLE_POSTGRES = "postgresql://postgres@127.0.0.1:1/test"


async def get_health(database_url: str) -> httpx.Response:
    app = create_app(Settings(database_url=database_url))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://threadline.test"
        ) as client,
    ):
        return await client.get("/health")


async def test_health_is_ok(db_url: str) -> None:
    response = await get_health(db_url)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == ("sqlite" if db_url.startswith("sqlite") else "postgresql")
    assert body["version"] == __version__


async def test_health_is_503_when_the_database_is_unreachable() -> None:
    response = await get_health(UNREACHABLE_POSTGRES)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"] == "postgresql"
    assert body["error"]


async def test_root_serves_the_inbox_and_docs_the_api_explorer(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'root.db'}"))
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        root = await client.get("/")
        assert root.status_code == 200
        assert root.headers["content-type"].startswith("text/html")
        # The inbox's screens (sign-in first) render into #root from app.js.
        assert '<div id="root"></div>' in root.text
        assert re.search(r'<script type="module" src="/ui/static/[0-9a-f]{16}/app\.js">', root.text)
        docs = await client.get("/docs")
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()


async def get(settings: Settings, path: str) -> httpx.Response:
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://threadline.test"
        ) as client,
    ):
        started = time.monotonic()
        response = await client.get(path)
        assert time.monotonic() - started < 1.0
        return response


async def test_live_and_ready(db_url: str) -> None:
    live = await get(Settings(database_url=db_url), "/health/live")
    assert live.status_code == 200
    assert live.json()["status"] == "ok"
    ready = await get(Settings(database_url=db_url), "/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}


async def test_ready_says_the_schema_is_behind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    await asyncio.to_thread(upgrade, url, "0008")
    ready = await get(Settings(database_url=url), "/health/ready")
    assert ready.status_code == 503
    assert "migrations not current" in ready.json()["error"]
    assert (await get(Settings(database_url=url), "/health/live")).status_code == 200


async def test_ready_says_redis_is_unreachable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    await asyncio.to_thread(upgrade, url)
    settings = Settings(database_url=url, redis_url="redis://127.0.0.1:1/0")
    ready = await get(settings, "/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["redis"] != "ok"
    assert ready.headers["Retry-After"]
