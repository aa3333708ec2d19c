"""The sign-in limit: attempts are counted before the password is checked, atomically, in
the database (shared by every process), per client address and per account, with a
growing wait that never keeps a correct password out for good."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import World
from tests.events.live import Live, serve
from threadline.api.errors import AuthenticationFailed, Throttled
from threadline.apps import service as apps
from threadline.core import throttle
from threadline.core.throttle import Backoff, Count
from threadline.db.engine import Database
from threadline.ui import service
from threadline.ui.service import LoginGuard, address_key

PASSWORD = "correct horse battery staple"
EMAIL = "olivia@acme.test"
# A password check takes a good part of a second on a busy machine: the waits are longer.
QUICK = Backoff(free=3, base_seconds=1.5, cap_seconds=2.0, forget_seconds=3600)


@pytest.fixture
async def live(db_url: str, tmp_path: Path) -> AsyncIterator[Live]:
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
    await apps.create_admin(live.db, live.world.app_id, "Olivia", email=EMAIL, password=PASSWORD)
    async with httpx.AsyncClient(base_url=live.http, timeout=60) as http:
        answers = await asyncio.gather(
            *(
                http.post("/ui/session", json={"email": EMAIL, "password": f"guess {n}"})
                for n in range(40)
            )
        )
        statuses = Counter(r.status_code for r in answers)
        assert set(statuses) == {401, 429}, statuses
        # Ten attempts are free; every other one was refused before its password was checked.
        assert statuses[401] == service.ADDRESS_BACKOFF.free
        assert statuses[429] == 40 - service.ADDRESS_BACKOFF.free
        throttled = next(r for r in answers if r.status_code == 429)
        assert throttled.json()["meta"]["error"] == "Throttled"
        assert int(throttled.headers["Retry-After"]) >= 1


async def test_the_count_is_shared_between_processes(db_url: str, world: World) -> None:
    """Two processes: two connections to the database, two guards."""
    first, second = Database(db_url), Database(db_url)
    try:
        guards = LoginGuard(QUICK, QUICK), LoginGuard(QUICK, QUICK)
        for n in range(QUICK.free):
            await guards[n % 2].admit((first, second)[n % 2], "203.0.113.7", EMAIL)
        with pytest.raises(Throttled):
            await guards[1].admit(second, "203.0.113.7", EMAIL)
        with pytest.raises(Throttled):
            await guards[0].admit(first, "203.0.113.7", EMAIL)
    finally:
        await first.dispose()
        await second.dispose()


async def test_an_account_is_limited_across_addresses(db: Database, world: World) -> None:
    guard = LoginGuard(
        Backoff(free=100, base_seconds=60, cap_seconds=60, forget_seconds=3600), QUICK
    )
    for n in range(QUICK.free):
        await guard.admit(db, f"198.51.100.{n}", EMAIL)
    with pytest.raises(Throttled):
        await guard.admit(db, "198.51.100.200", EMAIL)
    await guard.admit(db, "198.51.100.200", "someone.else@acme.test")  # another account


async def test_a_flooded_account_still_lets_the_right_password_in_after_the_wait(
    db: Database, world: World
) -> None:
    await apps.create_admin(db, world.app_id, "Olivia", email=EMAIL, password=PASSWORD)
    guard = LoginGuard(QUICK, QUICK)

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
    assert waiting.value.retry_after <= 2  # the cap
    await asyncio.sleep(QUICK.cap_seconds + 0.1)
    session = await sign_in(PASSWORD)
    assert session.token
    # Success clears the account's count: the next attempt is free again.
    await guard.admit(db, "192.0.2.99", EMAIL)


async def test_admins_of_other_apps_sharing_the_email_cannot_lock_it_out(live: Live) -> None:
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
