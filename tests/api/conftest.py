"""API fixtures: the real ASGI app with its lifespan, an HTTP client, and the world in it.

`api` is authorised as the world's app (every scope); `anon` sends no token. The world is
built through the app's own `Database`, so tests and the app share one connection setup.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tests.conftest import World, build_world
from threadline.api.config import ApiSettings
from threadline.db.engine import Database
from threadline.settings import Settings
from threadline.web.app import create_app

BASE_URL = "http://threadline.test"


@pytest.fixture
async def app(db_url: str, tmp_path: Path) -> AsyncIterator[FastAPI]:
    """The app; rate limiting is off and files go to the test's own directory."""
    application = create_app(Settings(database_url=db_url))
    application.state.api_settings = ApiSettings(data_dir=tmp_path / "data", rate_limit="")
    # Generous limits: the test processes share two cores with browsers and servers.
    async with LifespanManager(application, startup_timeout=30, shutdown_timeout=30):
        yield application


@pytest.fixture
def app_db(app: FastAPI) -> Database:
    db: Database = app.state.db
    return db


@pytest.fixture
async def world(app_db: Database) -> World:
    return await build_world(app_db)


def client_for(app: FastAPI, token: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
    headers = {"Authorization": f"Token {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, **kwargs), base_url=BASE_URL, headers=headers
    )


@pytest.fixture
async def api(app: FastAPI, world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app, world.token) as client:
        yield client


@pytest.fixture
async def anon(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        yield client
