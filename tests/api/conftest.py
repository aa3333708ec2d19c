"""API fixtures: the real ASGI app with its lifespan, an HTTP client, and the world in it.

`api` is authorised as the world's app (every scope); `anon` sends no token. The world is
built through the app's own `Database`, so tests and the app share one connection setup.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from tests.conftest import World, _admin_execute, _worker, build_world, postgres_base_url
from threadline.db.engine import Database
from threadline.db.migrate import upgrade
from threadline.settings import Settings
from threadline.web.app import create_app

BASE_URL = "http://threadline.test"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated PostgreSQL database of this test process alone.

    Named by process id as well as xdist worker, so that test runs started at the same
    time on one server (several checkouts, CI jobs) never truncate each other's rows.
    """
    base = postgres_base_url()
    if not base:
        pytest.skip("THREADLINE_TEST_POSTGRES_URL is not set")
    name = f"threadline_test_api_{_worker()}_{os.getpid()}"
    drop = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    asyncio.run(_admin_execute(base, drop, f"CREATE DATABASE {name}"))
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    asyncio.run(_admin_execute(base, drop))


@pytest.fixture
async def app(db_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(Settings(database_url=db_url))
    async with LifespanManager(application):
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
