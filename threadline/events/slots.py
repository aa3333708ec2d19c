"""Open realtime streams, counted per token and per client address, for the caps
(THREADLINE_REALTIME_MAX_STREAMS_PER_TOKEN / _PER_ADDRESS).

With several processes (`serve --workers`) a cap must hold across them, so the count is
shared: in Redis when the deployment has one, else in the database (table
`stream_slots`); a SQLite deployment is one process and counts in memory. A shared slot
is a lease: the process holding it renews it every `RENEW_SECONDS`, and one that crashed
stops renewing, so its slots come free within `LEASE_SECONDS` instead of leaking.

A chat widget visitor's streams are also counted under the user's own key, without a cap:
the users with a slot there have the widget open somewhere, which is their presence.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections import Counter
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol

from redis.asyncio import Redis
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.db.engine import Database
from threadline.db.schema import stream_slots

log = logging.getLogger("threadline.events")


def utcnow() -> datetime:
    return datetime.now(UTC)


# A crashed process's slots come free after this; a live one renews its own well before.
LEASE_SECONDS = 60.0
RENEW_SECONDS = 20.0


class Slots(Protocol):
    async def take(self, limits: Mapping[str, int]) -> str | None:
        """A slot under every key whose limit (0: none) is not reached yet, or None (nothing
        taken) when one is."""

    async def release(self, slot: str) -> None: ...

    async def renew(self) -> None:
        """Extend the leases of this process's open slots."""

    async def open_keys(self, keys: Collection[str]) -> set[str]:
        """Those of `keys` that some process holds an open slot under."""


def presence_key(app_id: int, user_id: int) -> str:
    """The key a chat widget visitor's streams are also counted under (never capped): a
    user with a slot there is on the site (threadline.events.realtime.online_users)."""
    return f"presence:{app_id}:{user_id}"


def _new_slot() -> str:
    return secrets.token_hex(16)


class MemorySlots:
    """One process's own count (SQLite: the deployment is one process)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.held: dict[str, list[str]] = {}

    async def take(self, limits: Mapping[str, int]) -> str | None:
        if any(limit and self.counts[key] >= limit for key, limit in limits.items()):
            return None
        slot = _new_slot()
        for key in limits:
            self.counts[key] += 1
        self.held[slot] = list(limits)
        return slot

    async def release(self, slot: str) -> None:
        for key in self.held.pop(slot, []):
            self.counts[key] -= 1
            if self.counts[key] <= 0:
                del self.counts[key]

    async def renew(self) -> None:
        return None

    async def open_keys(self, keys: Collection[str]) -> set[str]:
        return {key for key in keys if self.counts[key] > 0}


def _lock_id(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


class DatabaseSlots:
    """Slots as rows of `stream_slots` (PostgreSQL without Redis). Taking one locks its keys
    (transaction-scoped advisory locks, in key order), so two processes never both take the
    last slot."""

    def __init__(self, db: Database, lease_seconds: float = LEASE_SECONDS) -> None:
        self.db = db
        self.lease = timedelta(seconds=lease_seconds)
        self.held: set[str] = set()

    async def take(self, limits: Mapping[str, int]) -> str | None:
        keys = sorted(limits)
        now = utcnow()
        slot = _new_slot()
        async with self.db.write() as conn:
            await self._lock(conn, keys)
            await conn.execute(
                delete(stream_slots).where(
                    stream_slots.c.key.in_(keys), stream_slots.c.expires < now
                )
            )
            query = (
                select(stream_slots.c.key, func.count())
                .where(stream_slots.c.key.in_(keys))
                .group_by(stream_slots.c.key)
            )
            counts = {row[0]: int(row[1]) for row in await conn.execute(query)}
            if any(limit and counts.get(key, 0) >= limit for key, limit in limits.items()):
                return None
            expires = now + self.lease
            await conn.execute(
                stream_slots.insert(),
                [{"slot": slot, "key": key, "expires": expires} for key in keys],
            )
        self.held.add(slot)
        return slot

    async def _lock(self, conn: AsyncConnection, keys: list[str]) -> None:
        if self.db.is_sqlite:
            return  # the write transaction is the database's only one
        for key in keys:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _lock_id(key)})

    async def release(self, slot: str) -> None:
        self.held.discard(slot)
        async with self.db.write() as conn:
            await conn.execute(delete(stream_slots).where(stream_slots.c.slot == slot))

    async def open_keys(self, keys: Collection[str]) -> set[str]:
        if not keys:
            return set()
        query = (
            select(stream_slots.c.key)
            .where(stream_slots.c.key.in_(sorted(keys)), stream_slots.c.expires >= utcnow())
            .distinct()
        )
        async with self.db.read() as conn:
            return {row[0] for row in await conn.execute(query)}

    async def renew(self) -> None:
        if not self.held:
            return
        expires = utcnow() + self.lease
        async with self.db.write() as conn:
            await conn.execute(
                update(stream_slots)
                .where(stream_slots.c.slot.in_(sorted(self.held)))
                .values(expires=expires)
            )


# Atomic in Redis: drop expired members of every key, refuse if one is full, else add the
# slot to each with its lease's end as score. KEYS: the keys; ARGV: now, lease end, slot,
# then each key's limit.
_TAKE = """
local now = tonumber(ARGV[1])
local ends = tonumber(ARGV[2])
local slot = ARGV[3]
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local limit = tonumber(ARGV[3 + i])
  if limit > 0 and redis.call('ZCARD', key) >= limit then
    return 0
  end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, ends, slot)
  redis.call('EXPIRE', key, math.ceil(ends - now) + 1)
end
return 1
"""


class RedisSlots:
    """Slots as members of one sorted set per key, scored by when their lease ends."""

    def __init__(self, client: Redis, namespace: str, lease_seconds: float = LEASE_SECONDS) -> None:
        self.client = client
        self.namespace = namespace
        self.lease = lease_seconds
        self.held: dict[str, list[str]] = {}
        self._take = client.register_script(_TAKE)

    def _key(self, key: str) -> str:
        return f"{self.namespace}:streams:{key}"

    async def take(self, limits: Mapping[str, int]) -> str | None:
        names = [self._key(k) for k in limits]
        now = utcnow().timestamp()
        slot = _new_slot()
        args: list[str | float | int] = [now, now + self.lease, slot, *limits.values()]
        if not await self._take(keys=names, args=args):
            return None
        self.held[slot] = names
        return slot

    async def release(self, slot: str) -> None:
        names = self.held.pop(slot, [])
        if names:
            async with self.client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.zrem(name, slot)
                await pipe.execute()

    async def open_keys(self, keys: Collection[str]) -> set[str]:
        ordered = sorted(keys)
        if not ordered:
            return set()
        now = utcnow().timestamp()
        async with self.client.pipeline(transaction=False) as pipe:
            for key in ordered:
                pipe.zcount(self._key(key), now, "+inf")
            counts = await pipe.execute()
        return {key for key, count in zip(ordered, counts, strict=True) if count}

    async def renew(self) -> None:
        if not self.held:
            return
        ends = utcnow().timestamp() + self.lease
        async with self.client.pipeline(transaction=False) as pipe:
            for slot, names in list(self.held.items()):
                for name in names:
                    pipe.zadd(name, {slot: ends}, xx=True)
            await pipe.execute()


def default_slots(db: Database) -> Slots:
    """Without a Redis: the database for PostgreSQL (several processes), memory for SQLite."""
    return MemorySlots() if db.is_sqlite else DatabaseSlots(db)
