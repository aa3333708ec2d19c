"""Presence from the shared count of open streams: a chat widget visitor's stream holds a
slot under the user's presence key (never capped), and any process can ask which of those
keys are held (`Slots.open_keys`). A crashed process's slots stop counting when their
leases run out, in memory, in the database and in Redis."""

from __future__ import annotations

import secrets
from datetime import timedelta

from redis.asyncio import Redis
from sqlalchemy import update

from tests.conftest import World
from threadline.db.engine import Database
from threadline.db.schema import stream_slots
from threadline.events.slots import (
    DatabaseSlots,
    MemorySlots,
    RedisSlots,
    Slots,
    presence_key,
    utcnow,
)

ONE, TWO, THREE = presence_key(1, 10), presence_key(1, 20), presence_key(2, 10)


async def check_presence(first: Slots, second: Slots) -> None:
    """`first` and `second` share one count (two processes; in memory: the same one)."""
    assert await second.open_keys([ONE, TWO, THREE]) == set()
    assert await second.open_keys([]) == set()
    # Presence keys have no cap: any number of streams of one user are counted.
    held = [await first.take({"token:a": 0, ONE: 0}) for _ in range(3)]
    assert all(slot is not None for slot in held)
    other = await second.take({ONE: 0, "address:192.0.2.9": 0})
    assert other is not None
    assert await second.open_keys([ONE, TWO, THREE]) == {ONE}
    assert await first.open_keys([TWO, THREE]) == set()
    # The user stays present until the last of their streams ends.
    for slot in held:
        assert slot is not None
        await first.release(slot)
    assert await first.open_keys([ONE]) == {ONE}
    await second.release(other)
    assert await first.open_keys([ONE, TWO, THREE]) == set()


async def test_memory_presence() -> None:
    slots = MemorySlots()
    await check_presence(slots, slots)


async def test_database_presence_is_shared_and_ends_with_the_lease(
    db_url: str, world: World
) -> None:
    first, second = Database(db_url), Database(db_url)
    try:
        await check_presence(DatabaseSlots(first), DatabaseSlots(second))
        crashed, alive = DatabaseSlots(first), DatabaseSlots(second)
        assert await crashed.take({TWO: 0}) is not None
        assert await alive.open_keys([TWO]) == {TWO}
        # The process dies without releasing: its lease runs out (moved to the past).
        async with second.write() as conn:
            await conn.execute(
                update(stream_slots)
                .where(stream_slots.c.slot.in_(crashed.held))
                .values(expires=utcnow() - timedelta(seconds=1))
            )
        assert await alive.open_keys([TWO]) == set()
    finally:
        await first.dispose()
        await second.dispose()


async def test_redis_presence_is_shared_and_ends_with_the_lease(redis_pair: list[Redis]) -> None:
    namespace = f"test_{secrets.token_hex(6)}"
    first, second = (RedisSlots(c, namespace) for c in redis_pair)
    await check_presence(first, second)
    crashed = RedisSlots(redis_pair[0], namespace)
    slot = await crashed.take({TWO: 0})
    assert slot is not None
    assert await second.open_keys([TWO]) == {TWO}
    past = utcnow().timestamp() - 1
    await redis_pair[1].zadd(f"{namespace}:streams:{TWO}", {slot: past}, xx=True)
    assert await second.open_keys([TWO]) == set()
