"""The per-sender limit on inbound mail: the rule, and its counts shared between processes,
in the database (SQLite and PostgreSQL) and in Redis; a Redis that fails leaves the counting
to the database."""

from __future__ import annotations

import math
import secrets

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select

from tests.conftest import World
from threadline.channels.email.senders import (
    Limit,
    SenderLimiter,
    SenderThrottled,
    parse_limits,
    wait_seconds,
)
from threadline.db.engine import Database
from threadline.db.schema import email_sender_counts

# A moment at the start of a minute and of an hour (both windows begin here).
T0 = 1_800_000_000.0 - (1_800_000_000 % 3600)


def test_limits_are_read_in_the_limits_notation() -> None:
    assert parse_limits("20/minute;200/hour") == (Limit(20, 60), Limit(200, 3600))
    assert parse_limits("  ") == ()


@pytest.mark.parametrize(
    ("previous", "current", "elapsed"),
    [
        (0, 0, 0.0),
        (0, 4, 10.0),
        (0, 5, 10.0),
        (10, 0, 0.0),
        (10, 0, 30.0),
        (4, 0, 30.0),
        (8, 0, 30.0),
        (8, 2, 59.5),
        (3, 3, 45.0),
        (100, 0, 1.0),
    ],
)
def test_the_sliding_window_rule(previous: int, current: int, elapsed: float) -> None:
    limit = Limit(5, 60)
    got = wait_seconds(limit, previous, current, T0 + elapsed)
    # The reference: one more fits while the weighted count stays within the amount.
    if previous * (60 - elapsed) / 60 + current + 1 <= 5:
        assert got is None
        return
    assert got is not None
    assert 1 <= got <= math.ceil(60 - elapsed)
    later = elapsed + got
    if later < 60:  # after the wait one more fits (else a new window decides anew)
        assert previous * (60 - later) / 60 + current + 1 <= 5
        # and not a whole second earlier
        sooner = later - 1
        assert sooner < elapsed or previous * (60 - sooner) / 60 + current + 1 > 5


def test_waits_until_the_previous_window_weighs_little_enough() -> None:
    limit = Limit(5, 60)
    # 10 in the previous window, 30 s into this one: 5 weigh; one more needs 4 or fewer,
    # reached 6 s later (10 * 24 / 60 = 4).
    assert wait_seconds(limit, 10, 0, T0 + 30) == 6
    assert wait_seconds(limit, 10, 0, T0 + 36) is None


async def counted(db: Database) -> int:
    async with db.read() as conn:
        total = await conn.execute(select(func.coalesce(func.sum(email_sender_counts.c.hits), 0)))
        return int(total.scalar_one())


async def test_the_database_count_is_shared_between_processes(
    db: Database, db_url: str, world: World
) -> None:
    other = Database(db_url)  # a second process's engine on the same database
    try:
        one = SenderLimiter("3/minute", db)
        two = SenderLimiter("3/minute", other)
        await one.hit(world.app_id, "flood@example.com", T0)
        await two.hit(world.app_id, "FLOOD@example.com", T0 + 1)
        await one.hit(world.app_id, "flood@example.com", T0 + 2)
        for limiter in (one, two):
            with pytest.raises(SenderThrottled) as refused:
                await limiter.hit(world.app_id, "flood@example.com", T0 + 3)
            assert refused.value.retry_after == 57
        assert await counted(db) == 3  # a refused message counts nowhere
        # Another sender, or the same one to another app, has counts of its own.
        await two.hit(world.app_id, "calm@example.com", T0 + 3)
        await two.hit(world.foreign_app_id, "flood@example.com", T0 + 3)
        # Windows move on: two minutes later the old counts weigh nothing.
        await one.hit(world.app_id, "flood@example.com", T0 + 120)
    finally:
        await other.dispose()


async def test_every_limit_holds_and_old_counts_are_dropped(db: Database, world: World) -> None:
    limiter = SenderLimiter("2/minute;3/hour", db)
    await limiter.hit(world.app_id, "a@example.com", T0)
    await limiter.hit(world.app_id, "a@example.com", T0 + 1)
    with pytest.raises(SenderThrottled):
        await limiter.hit(world.app_id, "a@example.com", T0 + 2)  # the minute's limit
    await limiter.hit(world.app_id, "a@example.com", T0 + 125)
    with pytest.raises(SenderThrottled) as refused:
        await limiter.hit(world.app_id, "a@example.com", T0 + 250)  # the hour's limit
    assert refused.value.retry_after == 3600 - 250
    # Counts whose windows can no longer weigh in are purged (here: the minutes').
    limiter.database._purged = 0.0
    await limiter.hit(world.app_id, "b@example.com", T0 + 7300)
    async with db.read() as conn:
        starts = {
            int(r.window_start)
            for r in await conn.execute(select(email_sender_counts.c.window_start))
        }
    assert T0 not in starts
    assert int(T0 + 7200) in starts


async def test_no_limit_counts_nothing(db: Database, world: World) -> None:
    limiter = SenderLimiter("", db)
    for n in range(30):
        await limiter.hit(world.app_id, "a@example.com", T0 + n)
    assert await counted(db) == 0


async def test_the_redis_count_is_shared_between_processes(
    db: Database, world: World, redis_pair: list[Redis]
) -> None:
    namespace = f"test_{secrets.token_hex(6)}"
    one, two = (SenderLimiter("3/minute", db, c, namespace) for c in redis_pair)
    await one.hit(world.app_id, "flood@example.com", T0)
    await two.hit(world.app_id, "flood@example.com", T0 + 1)
    await two.hit(world.app_id, "flood@example.com", T0 + 2)
    for limiter in (one, two):
        with pytest.raises(SenderThrottled) as refused:
            await limiter.hit(world.app_id, "flood@example.com", T0 + 3)
        assert refused.value.retry_after == 57
    assert await counted(db) == 0  # all in Redis
    names = [n async for n in redis_pair[0].scan_iter(match=f"{namespace}:mail-sender:*")]
    assert len(names) == 1
    assert b"flood" not in names[0]  # a digest of the address, not the address
    assert 0 < await redis_pair[0].ttl(names[0]) <= 121
    # Another deployment (namespace) counts apart.
    elsewhere = SenderLimiter("3/minute", db, redis_pair[0], f"test_{secrets.token_hex(6)}")
    await elsewhere.hit(world.app_id, "flood@example.com", T0 + 3)
    for name in names:
        await redis_pair[0].delete(name)


async def test_a_failing_redis_leaves_the_count_to_the_database(
    db: Database, world: World, unused_tcp_port: int
) -> None:
    dead = Redis.from_url(
        f"redis://127.0.0.1:{unused_tcp_port}/0", socket_connect_timeout=0.5, socket_timeout=0.5
    )
    try:
        limiter = SenderLimiter("2/minute", db, dead, "test_dead")
        await limiter.hit(world.app_id, "a@example.com", T0)
        await limiter.hit(world.app_id, "a@example.com", T0 + 1)
        with pytest.raises(SenderThrottled):
            await limiter.hit(world.app_id, "a@example.com", T0 + 2)
        assert await counted(db) == 2
    finally:
        await dead.aclose()
