"""The real ASGI app on the test database, for the inbox's HTTP tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from threadline.api.config import ApiSettings
from threadline.db.engine import Database
from threadline.settings import Settings
from threadline.web.app import create_app


@pytest.fixture
async def app(db_url: str, tmp_path: Path) -> AsyncIterator[FastAPI]:
    application = create_app(Settings(database_url=db_url))
    application.state.api_settings = ApiSettings(data_dir=tmp_path / "data", rate_limit="")
    async with LifespanManager(application):
        yield application


@pytest.fixture
def app_db(app: FastAPI) -> Database:
    db: Database = app.state.db
    return db


def client(app: FastAPI, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://threadline.test",
        headers={"Authorization": f"Token {token}"},
    )
