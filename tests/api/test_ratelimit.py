"""Per-token rate limiting: memory and Redis storage, 429 `Throttled` with Retry-After."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import ValidationError

from tests.api.conftest import client_for
from tests.api.helpers import error, ok
from tests.conftest import World, build_world
from threadline.api.config import ApiSettings
from threadline.api.ratelimit import TokenRateLimiter
from threadline.apps.repository import AppRepository
from threadline.apps.service import issue_token, utcnow
from threadline.db.engine import Database
from threadline.settings import Settings
from threadline.web.app import create_app


def redis_url() -> str | None:
    """THREADLINE_TEST_REDIS_URL (as every Redis test reads it); under CI=true, required."""
    url = os.environ.get("THREADLINE_TEST_REDIS_URL")
    if not url and os.environ.get("CI"):
        raise RuntimeError("CI=true but THREADLINE_TEST_REDIS_URL is not set")
    return url or None


async def redis_answers(url: str) -> bool:
    client = aioredis.from_url(url)
    try:
        return bool(await client.ping())
    except (OSError, aioredis.RedisError):  # redis-py 8 raises its own ConnectionError
        return False
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def limited(request: pytest.FixtureRequest, app: FastAPI) -> AsyncIterator[FastAPI]:
    """The app with a limit of 3 requests a minute per token, in either storage."""
    storage = "memory://"
    if request.param == "redis":
        url = redis_url()
        if url is None:
            pytest.skip("THREADLINE_TEST_REDIS_URL is not set")
        if not await redis_answers(url):
            if os.environ.get("CI"):
                raise RuntimeError(f"CI=true but Redis does not answer at {url}")
            pytest.skip(f"no Redis answers at {url}")
        storage = url
    settings: ApiSettings = app.state.api_settings
    app.state.api_settings = settings.model_copy(
        update={"rate_limit": "3/minute", "rate_limit_storage": storage}
    )
    # A prefix of this test's own: runs sharing the Redis server never share counters.
    limiter = TokenRateLimiter(
        "3/minute", storage, key_prefix=f"threadline-test-{uuid.uuid4().hex}"
    )
    app.state.rate_limiter = limiter
    yield app
    await limiter.reset()


async def test_throttled_after_the_limit(
    limited: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    for _ in range(3):
        ok(await api.get("/apps/$self_app/channels"))
    r = await api.get("/apps/$self_app/channels")
    message = error(r, 429, "Throttled")
    assert "retry" in message
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    # Another token of the same app has its own budget.
    async with app_db.write() as conn:
        other = await issue_token(
            AppRepository(conn), world.app_id, "o", ["conversations-read"], utcnow()
        )
    async with client_for(limited, other) as client:
        ok(await client.get("/apps/$self_app/channels"))
    # Failed authentication does not count against anyone.
    async with client_for(limited, "wrong") as client:
        for _ in range(5):
            error(await client.get("/apps/$self_app/channels"), 401, "AuthenticationFailed")


async def test_unreachable_storage_lets_requests_through(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    settings: ApiSettings = app.state.api_settings
    app.state.api_settings = settings.model_copy(
        update={"rate_limit": "1/minute", "rate_limit_storage": "redis://127.0.0.1:1/0"}
    )
    for _ in range(3):
        ok(await api.get("/apps/$self_app/channels"))


async def test_limit_is_off_when_empty_and_on_by_default(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    assert ApiSettings.model_fields["rate_limit"].default == "600/minute"
    assert app.state.api_settings.rate_limit == ""  # the tests' app runs without a limit
    for _ in range(5):
        ok(await api.get("/apps/$self_app/channels"))


def test_a_bad_limit_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THREADLINE_RATE_LIMIT", "lots")
    with pytest.raises(ValueError, match="lots"):
        create_app(Settings(database_url="sqlite:///unused.db"))


async def test_the_default_limit_throttles_the_601st_request_of_a_minute(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production settings, nothing overridden: 600 requests a minute per token, then 429."""
    monkeypatch.delenv("THREADLINE_RATE_LIMIT", raising=False)
    monkeypatch.delenv("THREADLINE_RATE_LIMIT_STORAGE", raising=False)
    application = create_app(Settings(database_url=db_url))
    application.state.api_settings = ApiSettings(data_dir=tmp_path / "data")
    assert application.state.api_settings.rate_limit == "600/minute"
    async with LifespanManager(application, startup_timeout=30, shutdown_timeout=30):
        world = await build_world(application.state.db)
        async with client_for(application, world.token) as client:
            allowed = 0
            for _ in range(1200):
                r = await client.get("/apps/$self_app/channels")
                if r.status_code == 429:
                    break
                ok(r)
                allowed += 1
            error(r, 429, "Throttled")
            assert 1 <= int(r.headers["Retry-After"]) <= 60
    # The limiter counts in a sliding window of a minute: exactly 600 are allowed unless the
    # requests straddle the turn of a minute, when the earlier minute counts in part.
    assert 600 <= allowed < 1200


class SilentServer:
    """A TCP server that accepts connections and never answers: a frozen Redis."""

    def __init__(self) -> None:
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> int:
        async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            self._writers.append(writer)

        self._server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aexit__(self, *_: object) -> None:
        for writer in self._writers:
            writer.transport.abort()
        assert self._server is not None
        self._server.close()


async def test_a_frozen_storage_costs_one_request_its_timeout_then_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    silent = SilentServer()
    async with silent as port:
        limiter = TokenRateLimiter(
            "1/minute",
            f"redis://127.0.0.1:{port}/0",
            key_prefix=f"threadline-test-{uuid.uuid4().hex}",
            redis_options={"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        )
        limiter.retry_seconds = 3600  # the storage is not asked again during this test
        with caplog.at_level(logging.INFO, logger="threadline.api.ratelimit"):
            # Let through (above the limit too): the storage does not answer.
            assert await limiter.hit(7) is None
            asked = silent.accepted
            assert asked >= 1
            assert [await limiter.hit(7) for _ in range(20)] == [None] * 20
        # Only the first request asked the frozen storage; one warning for the outage.
        assert silent.accepted == asked
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "let through" in warnings[0].getMessage()


async def test_the_limiter_counts_again_once_its_storage_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = redis_url()
    if url is None:
        pytest.skip("THREADLINE_TEST_REDIS_URL is not set")
    limiter = TokenRateLimiter(
        "2/minute", url, key_prefix=f"threadline-test-{uuid.uuid4().hex}", redis_options={}
    )
    try:
        assert await limiter.hit(1) is None
        # As if the storage had failed a moment ago and is asked again now.
        limiter._failing_until = 0.0
        with caplog.at_level(logging.INFO, logger="threadline.api.ratelimit"):
            assert await limiter.hit(1) is None
            retry_after = await limiter.hit(1)
        assert retry_after is not None
        assert retry_after >= 1
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    finally:
        await limiter.reset()


def test_redis_timeouts_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.redis_connect_timeout, defaults.redis_timeout) == (1.0, 1.0)
    monkeypatch.setenv("THREADLINE_REDIS_CONNECT_TIMEOUT", "0.5")
    monkeypatch.setenv("THREADLINE_REDIS_TIMEOUT", "2")
    assert Settings().client_options() == {"socket_connect_timeout": 0.5, "socket_timeout": 2.0}
    for bad in ("0", "-1", "abc", "nan", "61"):
        monkeypatch.setenv("THREADLINE_REDIS_TIMEOUT", bad)
        with pytest.raises(ValidationError, match="redis_timeout"):
            Settings()
