"""/health through the ASGI app with its lifespan running, on both databases."""

from __future__ import annotations

from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from threadline import __version__
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
        assert 'data-testid="login-email"' in root.text
        docs = await client.get("/docs")
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()
