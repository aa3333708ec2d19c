"""The sign-in limit in Redis (THREADLINE_REDIS_URL): the same rules as in the database,
counted atomically before any password check, shared by every process; a Redis that fails
leaves the counting to the database."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select

from tests.conftest import World
from tests.events.live import Live, serve
from threadline.api.errors import AuthenticationFailed, Throttled
from threadline.apps import service as apps
from threadline.core.throttle import Backoff
from threadline.db.engine import Database
from threadline.db.schema import sign_in_attempts
from threadline.ui import service
from threadline.ui.attempts_redis import RedisAttempts
from threadline.ui.service import LoginGuard

PASSWORD = "correct horse battery staple"
EMAIL = "olivia@acme.test"
# Waits far longer than a test: an attempt after the free ones is refused however slow the
# machine; `wait_over` ends a wait by moving it to the past.
QUICK = Backoff(free=3, base_seconds=600, cap_seconds=600, forget_seconds=3600)


async def wait_over(client: Redis, namespace: str) -> None:
    past = repr(time.time() - 1)
    async for name in client.scan_iter(match=f"{namespace}:signin:*"):
        await client.hset(name, "next_allowed", past)


def redis_url() -> str:
    url = os.environ.get("THREADLINE_TEST_REDIS_URL")
    if not url:
        if os.environ.get("CI"):
            raise RuntimeError("CI=true but THREADLINE_TEST_REDIS_URL is not set")
        pytest.skip("THREADLINE_TEST_REDIS_URL is not set")
    return url


@pytest.fixture
async def clients() -> AsyncIterator[list[Redis]]:
    """Two clients of one Redis: two processes."""
    url = redis_url()
    made = [Redis.from_url(url), Redis.from_url(url)]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()


def guards(clients: list[Redis], address: Backoff = QUICK) -> list[LoginGuard]:
    """A guard per process, on one namespace of their own (a deployment)."""
    namespace = f"test_{secrets.token_hex(6)}"
    return [LoginGuard(address, QUICK, RedisAttempts(c, namespace)) for c in clients]


async def stored_counts(db: Database) -> int:
    async with db.read() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(sign_in_attempts))).scalar_one()
        )


async def test_the_count_is_shared_between_processes(
    db: Database, world: World, clients: list[Redis]
) -> None:
    first, second = guards(clients)
    for n in range(QUICK.free):
        await (first, second)[n % 2].admit(db, "203.0.113.7", EMAIL)
    with pytest.raises(Throttled):
        await second.admit(db, "203.0.113.7", EMAIL)
    with pytest.raises(Throttled):
        await first.admit(db, "203.0.113.7", EMAIL)
    assert await stored_counts(db) == 0  # counted in Redis alone


async def test_attempts_at_once_are_counted_atomically(
    db: Database, world: World, clients: list[Redis]
) -> None:
    rule = Backoff(free=10, base_seconds=60, cap_seconds=60, forget_seconds=3600)
    first, second = guards(clients, rule)
    first.rules["account"] = second.rules["account"] = rule

    async def one(n: int) -> str:
        try:
            await (first, second)[n % 2].admit(db, "198.51.100.1", EMAIL)
        except Throttled:
            return "refused"
        return "admitted"

    outcomes = Counter(await asyncio.gather(*(one(n) for n in range(40))))
    assert outcomes == {"admitted": 10, "refused": 30}


async def test_an_account_is_limited_across_addresses(
    db: Database, world: World, clients: list[Redis]
) -> None:
    generous = Backoff(free=100, base_seconds=60, cap_seconds=60, forget_seconds=3600)
    (guard, _) = guards(clients, generous)
    for n in range(QUICK.free):
        await guard.admit(db, f"198.51.100.{n}", EMAIL)
    with pytest.raises(Throttled):
        await guard.admit(db, "198.51.100.200", EMAIL)
    await guard.admit(db, "198.51.100.200", "someone.else@acme.test")


async def test_a_flooded_account_lets_the_right_password_in_after_the_wait(
    db: Database, world: World, clients: list[Redis]
) -> None:
    await apps.create_admin(db, world.app_id, "Olivia", email=EMAIL, password=PASSWORD)
    (guard, _) = guards(clients)

    async def sign_in(password: str) -> service.Session:
        return await service.log_in(
            db,
            guard,
            email=EMAIL,
            password=password,
            app_id=None,
            address="192.0.2.1",
            lifetime=timedelta(hours=1),
        )

    refused = 0
    for n in range(12):
        try:
            await sign_in(f"guess {n}")
        except Throttled:
            refused += 1
        except AuthenticationFailed:
            pass
    assert refused > 0
    with pytest.raises(Throttled) as waiting:
        await sign_in(PASSWORD)
    assert waiting.value.retry_after <= QUICK.cap_seconds
    assert guard.redis is not None
    await wait_over(clients[0], guard.redis.namespace)
    assert (await sign_in(PASSWORD)).token
    await guard.admit(db, "192.0.2.99", EMAIL)  # the account starts afresh
    # Idle counts vanish by themselves in Redis.
    ttl = await clients[0].ttl(f"{guard.redis.namespace}:signin:address:192.0.2.1")
    assert 0 < ttl <= QUICK.forget_seconds


async def test_a_failing_redis_leaves_the_count_to_the_database(db: Database, world: World) -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        guard = LoginGuard(QUICK, QUICK, RedisAttempts(unreachable, "nowhere"))
        for _ in range(QUICK.free):
            await guard.admit(db, "203.0.113.9", EMAIL)
        with pytest.raises(Throttled):
            await guard.admit(db, "203.0.113.9", EMAIL)
        assert await stored_counts(db) == 2  # the address and the account
    finally:
        await unreachable.aclose()


@pytest.fixture
async def live_redis(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Live]:
    url = redis_url()
    # A deployment of its own on the shared test Redis.
    monkeypatch.setenv("THREADLINE_BUS_CHANNEL", f"test_{secrets.token_hex(6)}")
    async with serve(db_url, tmp_path, redis_url=url) as server:
        yield server


async def test_forty_wrong_passwords_at_once_through_a_server_with_redis(
    live_redis: Live,
) -> None:
    live = live_redis
    guard = live.app.state.login_guard
    assert guard.redis is not None
    # Ten free attempts as in production, then waits no test outlasts.
    long_waits = Backoff(free=10, base_seconds=600, cap_seconds=600, forget_seconds=3600)
    guard.rules = {"address": long_waits, "account": long_waits}
    await apps.create_admin(live.db, live.world.app_id, "Olivia", email=EMAIL, password=PASSWORD)
    async with httpx.AsyncClient(base_url=live.http, timeout=60) as http:
        answers = await asyncio.gather(
            *(
                http.post("/ui/session", json={"email": EMAIL, "password": f"guess {n}"})
                for n in range(40)
            )
        )
    statuses = Counter(r.status_code for r in answers)
    assert statuses == {401: long_waits.free, 429: 40 - long_waits.free}
    assert await stored_counts(live.db) == 0
