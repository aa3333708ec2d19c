"""The per-sender limit on inbound mail, shared by every process of a deployment.

A flood (a loop with another system, a script) must be stopped whichever process, or
which way in (SMTP, the inbound endpoint), its messages reach. Each limit of
`THREADLINE_MAIL_SENDER_LIMIT` (the `limits` notation, "20/minute;200/hour") is counted
as a sliding window approximated from two fixed ones, as `limits`' sliding-window counter
does: the previous window's count weighed by how much of it still overlaps, plus the
current one's. A message over any limit is refused and counted nowhere.

The counts live in Redis when the deployment has one (THREADLINE_REDIS_URL), else in the
database (`email_sender_counts`); a Redis that fails leaves them to the database, as the
sign-in counts do. Keys name the app and a digest of the sender's address, never the
address itself.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from limits import parse_many
from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError
from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.db.engine import Database
from threadline.db.schema import email_sender_counts as counts_t

log = logging.getLogger("threadline.channels.email")

# Two processes counting one sender at the same instant each retry (Redis); more lost races
# in a row than this means something is wrong.
MAX_RACES = 50
# Expired database counts are dropped at most this often per process.
PURGE_SECONDS = 60.0


class SenderThrottled(Exception):
    """The sender has sent too many messages to the app; retry after `retry_after` s."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many messages from this sender, retry in {retry_after} s")
        self.retry_after = retry_after


# ---------------------------------------------------------------------------
# The rule: pure.


@dataclass(frozen=True, slots=True)
class Limit:
    amount: int
    seconds: int

    @property
    def name(self) -> str:
        return f"{self.amount}/{self.seconds}s"

    def window(self, now: float) -> int:
        """The start of the fixed window `now` falls in (Unix seconds)."""
        return int(now // self.seconds) * self.seconds


def parse_limits(spec: str) -> tuple[Limit, ...]:
    """`THREADLINE_MAIL_SENDER_LIMIT` read with `limits`' own parser; empty: no limit."""
    if not spec.strip():
        return ()
    return tuple(Limit(int(i.amount), int(i.get_expiry())) for i in parse_many(spec))


def wait_seconds(limit: Limit, previous: int, current: int, now: float) -> int | None:
    """None when one more message fits the limit, given the previous and the current
    window's counts; else the whole seconds until it fits."""
    elapsed = now - limit.window(now)
    left = limit.seconds - elapsed
    weighted = previous * left / limit.seconds + current
    if weighted + 1 <= limit.amount:
        return None
    if current + 1 > limit.amount or previous == 0:
        # Not before the next window, whose weight of this one's count decides again.
        return max(1, math.ceil(left))
    # The previous window's weight falls until `previous * (left - t) / seconds` leaves room.
    room = limit.amount - current - 1
    return max(1, math.ceil(left - room * limit.seconds / previous))


# ---------------------------------------------------------------------------
# The counts: in the database, or in Redis.


def _insert(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


class DatabaseCounts:
    """Counts in `email_sender_counts`: each key's current window row is locked (PostgreSQL:
    a row lock, keys in sorted order; SQLite: the write transaction is the only one) while
    the rule decides, so processes counting one sender queue rather than both passing."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._purged = 0.0

    async def hit(self, keys: Sequence[tuple[str, Limit]], now: float) -> int | None:
        limit_of = {key: limit for key, limit in keys}
        async with self.db.write() as conn:
            found: dict[str, tuple[int, int]] = {}
            for key in sorted(limit_of):
                limit = limit_of[key]
                start = limit.window(now)
                expires = datetime.fromtimestamp(start + 2 * limit.seconds, UTC)
                await conn.execute(
                    _insert(conn)(counts_t)
                    .values(key=key, window_start=start, hits=0, expires=expires)
                    .on_conflict_do_nothing(index_elements=["key", "window_start"])
                )
                query = select(counts_t.c.window_start, counts_t.c.hits).where(
                    counts_t.c.key == key,
                    counts_t.c.window_start.in_((start, start - limit.seconds)),
                )
                if conn.dialect.name == "postgresql":
                    query = query.with_for_update()
                rows = {int(r.window_start): int(r.hits) for r in await conn.execute(query)}
                found[key] = (rows.get(start - limit.seconds, 0), rows.get(start, 0))
            waits = [
                wait
                for key, (previous, current) in found.items()
                if (wait := wait_seconds(limit_of[key], previous, current, now)) is not None
            ]
            if waits:
                return max(waits)
            for key, limit in limit_of.items():
                await conn.execute(
                    update(counts_t)
                    .where(counts_t.c.key == key, counts_t.c.window_start == limit.window(now))
                    .values(hits=counts_t.c.hits + 1)
                )
            if time.monotonic() - self._purged >= PURGE_SECONDS:
                self._purged = time.monotonic()
                cutoff = datetime.fromtimestamp(now, UTC)
                await conn.execute(delete(counts_t).where(counts_t.c.expires < cutoff))
        return None


class RedisCounts:
    """Counts under `<namespace>:mail-sender:<key>:<window start>`, each expiring once it
    can no longer weigh in. The keys are watched while the rule decides, and the counts
    raised in a MULTI that fails if another process counted meanwhile (then it decides
    again)."""

    def __init__(self, client: Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def _name(self, key: str, start: int) -> str:
        return f"{self.namespace}:mail-sender:{key}:{start}"

    async def hit(self, keys: Sequence[tuple[str, Limit]], now: float) -> int | None:
        async with self.client.pipeline(transaction=True) as pipe:
            for race in range(MAX_RACES):
                if race:
                    now = time.time()
                names = {
                    key: (
                        self._name(key, limit.window(now) - limit.seconds),
                        self._name(key, limit.window(now)),
                    )
                    for key, limit in keys
                }
                try:
                    await pipe.watch(*(n for pair in names.values() for n in pair))
                    waits: list[int] = []
                    for key, limit in keys:
                        before, current = names[key]
                        previous_hits = int(await pipe.get(before) or 0)
                        current_hits = int(await pipe.get(current) or 0)
                        wait = wait_seconds(limit, previous_hits, current_hits, now)
                        if wait is not None:
                            waits.append(wait)
                    if waits:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return max(waits)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    for key, limit in keys:
                        current = names[key][1]
                        pipe.incr(current)
                        pipe.expire(current, 2 * limit.seconds + 1)
                    await pipe.execute()
                    return None
                except WatchError:
                    continue
        raise RuntimeError("mail sender limit: too many concurrent changes of one count")


class SenderLimiter:
    """Messages per (app, sender address), counted where every process sees them."""

    def __init__(
        self,
        spec: str,
        db: Database,
        redis: Redis | None = None,
        namespace: str = "threadline",
    ) -> None:
        self.limits = parse_limits(spec)
        self.database = DatabaseCounts(db)
        self.redis = RedisCounts(redis, namespace) if redis is not None else None

    @staticmethod
    def key(app_id: int, sender: str) -> str:
        digest = hashlib.sha256(sender.strip().lower().encode("utf-8", "surrogatepass"))
        return f"{app_id}:{digest.hexdigest()[:32]}"

    async def hit(self, app_id: int, sender: str, now: float | None = None) -> None:
        """Count one message, or raise `SenderThrottled` (counting nothing)."""
        if not self.limits:
            return
        base = self.key(app_id, sender)
        keys = [(f"{base}:{limit.name}", limit) for limit in self.limits]
        moment = time.time() if now is None else now
        wait: int | None
        if self.redis is not None:
            try:
                wait = await self.redis.hit(keys, moment)
            except RedisError as exc:  # Redis away: the database still counts for everyone
                log.warning("mail sender limit: Redis failed, counting in the database (%s)", exc)
                wait = await self.database.hit(keys, moment)
        else:
            wait = await self.database.hit(keys, moment)
        if wait is not None:
            raise SenderThrottled(wait)
