"""The sign-in limit: attempts are counted before the password is checked, atomically,
per client address and per account, with a growing wait that never keeps a correct password
out for good. The counts live in the database, or in Redis when the deployment has one
(THREADLINE_REDIS_URL); either way every process shares them. Each rule is tested against
both counters; a Redis that fails leaves the counting to the database."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select, update

from tests.conftest import World, redis_url
from tests.events.live import Live, serve
from threadline.api.errors import AuthenticationFailed, Throttled
from threadline.apps import service as apps
from threadline.apps.service import utcnow
from threadline.core import throttle
from threadline.core.throttle import Backoff, Count
from threadline.db.engine import Database
from threadline.db.schema import sign_in_attempts
from threadline.ui import service
from threadline.ui.attempts_redis import RedisAttempts
from threadline.ui.service import LoginGuard, address_key

PASSWORD = "correct horse battery staple"
EMAIL = "olivia@acme.test"
# Waits far longer than a test: an attempt after the free ones is refused however slow the
# machine; `Counting.end_waits` ends a wait by moving it to the past.
QUICK = Backoff(free=3, base_seconds=600, cap_seconds=600, forget_seconds=3600)
COUNTERS = ["database", "redis"]


@dataclass
class Counting:
    """Two processes of one deployment: a database connection and a guard each."""

    kind: str
    dbs: list[Database]
    clients: list[Redis] = field(default_factory=list)
    namespace: str = field(default_factory=lambda: f"test_{secrets.token_hex(6)}")

    def guards(self, address: Backoff = QUICK, account: Backoff = QUICK) -> list[LoginGuard]:
        if self.kind == "database":
            return [LoginGuard(address, account) for _ in self.dbs]
        return [
            LoginGuard(address, account, RedisAttempts(c, self.namespace)) for c in self.clients
        ]

    async def end_waits(self) -> None:
        if self.kind == "database":
            async with self.dbs[0].write() as conn:
                earlier = utcnow() - timedelta(seconds=1)
                await conn.execute(update(sign_in_attempts).values(next_allowed=earlier))
            return
        past = repr(time.time() - 1)
        async for name in self.clients[0].scan_iter(match=f"{self.namespace}:signin:*"):
            await self.clients[0].hset(name, "next_allowed", past)

    async def stored_counts(self) -> int:
        return await stored_counts(self.dbs[0])


async def stored_counts(db: Database) -> int:
    async with db.read() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(sign_in_attempts))).scalar_one()
        )


@pytest.fixture(params=COUNTERS)
async def counting(
    request: pytest.FixtureRequest, db: Database, db_url: str, world: World
) -> AsyncIterator[Counting]:
    if request.param == "database":
        other = Database(db_url)
        try:
            yield Counting("database", [db, other])
        finally:
            await other.dispose()
        return
    url = redis_url()
    clients = [Redis.from_url(url), Redis.from_url(url)]
    try:
        yield Counting("redis", [db, db], clients)
    finally:
        for client in clients:
            await client.aclose()


@pytest.fixture(params=COUNTERS)
async def live(
    request: pytest.FixtureRequest, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Live]:
    """A server counting in the database, or in Redis (a deployment of its own on the
    shared test Redis)."""
    url = None
    if request.param == "redis":
        url = redis_url()
        monkeypatch.setenv("THREADLINE_BUS_CHANNEL", f"test_{secrets.token_hex(6)}")
    async with serve(db_url, tmp_path, redis_url=url) as server:
        assert (server.app.state.login_guard.redis is None) == (url is None)
        yield server


@pytest.fixture
async def one_server(db_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    async with serve(db_url, tmp_path) as server:
        yield server


def test_backoff_grows_to_its_cap_and_forgets_idle_counts() -> None:
    rule = Backoff(free=2, base_seconds=1, cap_seconds=4, forget_seconds=60)
    assert [rule.delay_after(n) for n in range(1, 7)] == [0, 1, 2, 4, 4, 4]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    first = throttle.attempt(rule, None, now)
    assert first.allowed
    assert first.count.attempts == 1
    assert first.count.next_allowed == now
    second = throttle.attempt(rule, first.count, now)
    assert second.allowed
    assert second.count.next_allowed == now + timedelta(seconds=1)
    refused = throttle.attempt(rule, second.count, now + timedelta(seconds=0.5))
    assert not refused.allowed
    assert refused.retry_after == 0.5
    assert refused.count == second.count  # a refused attempt is not counted
    later = throttle.attempt(rule, second.count, now + timedelta(seconds=1))
    assert later.allowed
    assert later.count.attempts == 3
    idle = Count(50, now + timedelta(seconds=4), now)
    fresh = throttle.attempt(rule, idle, now + timedelta(seconds=61))
    assert fresh.allowed
    assert fresh.count.attempts == 1


def test_an_ipv6_client_is_counted_by_its_64() -> None:
    assert address_key("2001:db8:1:2::5") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:3::5") != address_key("2001:db8:1:2::5")
    assert address_key("::ffff:10.0.0.1") == address_key("10.0.0.1")


async def test_forty_wrong_passwords_at_once_are_mostly_refused_unchecked(live: Live) -> None:
    guard = live.app.state.login_guard
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
    # Ten attempts are free; every other one was refused before its password was checked.
    statuses = Counter(r.status_code for r in answers)
    assert statuses == {401: long_waits.free, 429: 40 - long_waits.free}, statuses
    throttled = next(r for r in answers if r.status_code == 429)
    assert throttled.json()["meta"]["error"] == "Throttled"
    assert int(throttled.headers["Retry-After"]) >= 1
    in_redis = guard.redis is not None
    assert await stored_counts(live.db) == (0 if in_redis else 2)  # the address, the account


async def test_the_count_is_shared_between_processes(counting: Counting) -> None:
    guards, dbs = counting.guards(), counting.dbs
    for n in range(QUICK.free):
        await guards[n % 2].admit(dbs[n % 2], "203.0.113.7", EMAIL)
    with pytest.raises(Throttled):
        await guards[1].admit(dbs[1], "203.0.113.7", EMAIL)
    with pytest.raises(Throttled):
        await guards[0].admit(dbs[0], "203.0.113.7", EMAIL)
    # Counted in one place only.
    assert await counting.stored_counts() == (2 if counting.kind == "database" else 0)


async def test_attempts_at_once_are_counted_atomically(counting: Counting) -> None:
    rule = Backoff(free=10, base_seconds=60, cap_seconds=60, forget_seconds=3600)
    guards, dbs = counting.guards(rule, rule), counting.dbs

    async def one(n: int) -> str:
        try:
            await guards[n % 2].admit(dbs[n % 2], "198.51.100.1", EMAIL)
        except Throttled:
            return "refused"
        return "admitted"

    outcomes = Counter(await asyncio.gather(*(one(n) for n in range(40))))
    assert outcomes == {"admitted": 10, "refused": 30}


async def test_an_account_is_limited_across_addresses(counting: Counting) -> None:
    generous = Backoff(free=100, base_seconds=60, cap_seconds=60, forget_seconds=3600)
    guard, db = counting.guards(address=generous)[0], counting.dbs[0]
    for n in range(QUICK.free):
        await guard.admit(db, f"198.51.100.{n}", EMAIL)
    with pytest.raises(Throttled):
        await guard.admit(db, "198.51.100.200", EMAIL)
    await guard.admit(db, "198.51.100.200", "someone.else@acme.test")  # another account


async def test_a_flooded_account_still_lets_the_right_password_in_after_the_wait(
    counting: Counting, world: World
) -> None:
    guard, db = counting.guards()[0], counting.dbs[0]
    await apps.create_admin(db, world.app_id, "Olivia", email=EMAIL, password=PASSWORD)

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
    for n in range(12):  # the attacker keeps trying, as fast as it can
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
    await counting.end_waits()
    assert (await sign_in(PASSWORD)).token
    # Success clears the account's count: the next attempt is free again.
    await guard.admit(db, "192.0.2.99", EMAIL)
    if counting.kind == "redis":  # idle counts vanish by themselves there
        ttl = await counting.clients[0].ttl(f"{counting.namespace}:signin:address:192.0.2.1")
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


async def test_admins_of_other_apps_sharing_the_email_cannot_lock_it_out(
    one_server: Live,
) -> None:
    live = one_server
    """Anyone may add an admin with any e-mail to their own app: six apps do, with their own
    passwords, before the real account exists. Its owner names the app and gets in."""
    for n in range(service.MAX_ACCOUNTS_PER_EMAIL + 1):
        other = await apps.create_app(live.db, f"Squatter {n}")
        await apps.create_admin(live.db, other.app_id, "X", email=EMAIL, password=f"theirs {n}")
    await apps.create_admin(live.db, live.world.app_id, "Olivia", email=EMAIL, password=PASSWORD)
    async with httpx.AsyncClient(base_url=live.http, timeout=60) as http:
        r = await http.post("/ui/session", json={"email": EMAIL, "password": PASSWORD})
        assert r.status_code == 400
        assert r.json()["meta"]["error_message"].startswith("app:")
        body = {"email": EMAIL, "password": PASSWORD, "app": live.world.app_id}
        r = await http.post("/ui/session", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["data"]["app"] == live.world.app_id


async def test_successful_sign_ins_from_one_address_never_wait(db: Database, world: World) -> None:
    """Many operators behind one office address: each success gives its attempt back."""
    await apps.create_admin(db, world.app_id, "Olivia", email=EMAIL, password=PASSWORD)
    guard = LoginGuard(QUICK, QUICK)
    for _ in range(QUICK.free + 3):
        session = await service.log_in(
            db,
            guard,
            email=EMAIL,
            password=PASSWORD,
            app_id=None,
            address="192.0.2.50",
            lifetime=timedelta(hours=1),
        )
        assert session.token


def test_a_refund_gives_one_attempt_back() -> None:
    rule = Backoff(free=2, base_seconds=1, cap_seconds=4, forget_seconds=60)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert throttle.refund(rule, Count(1, now, now)) == Count(0, now, now)
    assert throttle.refund(rule, Count(4, now + timedelta(seconds=4), now)) == Count(
        3, now + timedelta(seconds=2), now
    )


def test_an_attempt_that_read_the_clock_before_the_last_one_counted_is_not_refused() -> None:
    """Two attempts at once: the one that read the clock first may get the lock second. It
    comes after the other; a free attempt is not refused for the microseconds between."""
    rule = Backoff(free=3, base_seconds=60, cap_seconds=60, forget_seconds=3600)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = now + timedelta(microseconds=300)
    counted = throttle.attempt(rule, None, later).count
    verdict = throttle.attempt(rule, counted, now)
    assert verdict.allowed
    assert verdict.count.attempts == 2
    waiting = Count(3, later + timedelta(seconds=60), later)
    refused = throttle.attempt(rule, waiting, now)
    assert not refused.allowed
    assert refused.retry_after == 60
