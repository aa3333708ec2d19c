"""The outbox worker: everything that leaves Threadline goes through it.

The event log is the transactional outbox. Each consumer (webhooks, e-mail replies, ...)
says which events it takes: in its `ingest` it reads the final events after its own cursor
(threadline.outbox.cursor) and, in one transaction, queues a delivery per event it wants
and moves the cursor. In `send_due` it attempts the deliveries whose time has come; a
failed attempt is retried with capped exponential backoff (threadline.outbox.retry) and,
after the last one, the delivery ends dead (or failed) with what the receiver answered.
Each consumer keeps its deliveries, one row each with its attempts, in its own table.

One worker sends at a time: on PostgreSQL it holds a session advisory lock, and a worker
that cannot take it stands by. It runs inside each server process by default; with
`THREADLINE_WEBHOOK_WORKER=off` the servers leave it to `threadline worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import text

from threadline.db.engine import Database

log = logging.getLogger("threadline.outbox")

# After a wake-up, wait this long so that a burst of commits makes one round.
SETTLE_SECONDS = 0.05
# The worker's PostgreSQL advisory lock, in the two-integer key space (the one-bigint
# space belongs to conversation ids): "TLWH", 1 (taken by the webhook worker first, kept
# so that a worker of an older version and a new one never send at the same time).
_LOCK_PARAMS = {"a": 0x544C5748, "b": 1}
_TRY_LOCK = text("SELECT pg_try_advisory_lock(:a, :b)")
_UNLOCK = text("SELECT pg_advisory_unlock(:a, :b)")


class Consumer(Protocol):
    """One kind of delivery out of the outbox."""

    name: str

    @property
    def idle(self) -> bool:
        """Nothing can be due (the last round saw no receiver and nothing pending): the
        round skips sending."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ingest(self) -> int:
        """Queue a delivery for each wanted final event after the consumer's cursor."""
        ...

    async def send_due(self) -> int:
        """Attempt the due deliveries; how many attempts were made."""
        ...

    async def next_due(self) -> datetime | None:
        """When the next pending delivery is due (None: none is pending)."""
        ...


class OutboxWorker:
    def __init__(self, db: Database, consumers: Sequence[Consumer], poll_seconds: float) -> None:
        self.db = db
        self.consumers = list(consumers)
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock_conn: Any = None
        self.leader = False

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        for consumer in self.consumers:
            await consumer.open()
        self.db.commit_listeners.append(self._committed)
        self._task = asyncio.create_task(self._run(), name="outbox-worker")

    def _committed(self, _app_id: int) -> None:
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._committed in self.db.commit_listeners:
            self.db.commit_listeners.remove(self._committed)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._release()
        for consumer in self.consumers:
            await consumer.close()

    async def _run(self) -> None:
        failing = False
        while True:
            delay = self.poll_seconds
            try:
                delay = await self.round(delay)
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: try again later
                if not failing:
                    log.warning("outbox worker: round failed (%s)", exc, exc_info=True)
                failing = True
                await self._release()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
                # Let a burst of commits settle into one round.
                await asyncio.sleep(SETTLE_SECONDS)
            self._wake.clear()

    async def round(self, ceiling: float) -> float:
        """One round: when this worker leads, each consumer queues what the new events owe
        it and attempts what is due; the seconds (at most `ceiling`) until the next is due."""
        if not await self._lead():
            return ceiling
        delay = ceiling
        for consumer in self.consumers:
            await consumer.ingest()
            if consumer.idle:
                continue
            await consumer.send_due()
            when = await consumer.next_due()
            if when is not None:
                wait = (when - datetime.now(UTC)).total_seconds()
                delay = min(max(wait, 0.0), delay)
        return delay

    async def _lead(self) -> bool:
        """Whether this worker may send: always on SQLite; with the advisory lock on PG."""
        if self.db.is_sqlite:
            self.leader = True
            return True
        if self._lock_conn is not None:
            try:  # still holding it? (a lost session loses its lock)
                await self._lock_conn.execute(text("SELECT 1"))
                await self._lock_conn.commit()
            except Exception:
                await self._release()
        if self._lock_conn is None:
            conn = await self.db.write_engine.connect()
            try:
                got = (await conn.execute(_TRY_LOCK, _LOCK_PARAMS)).scalar_one()
                await conn.commit()
            except BaseException:
                await conn.close()
                raise
            if not got:
                await conn.close()
                self.leader = False
                return False
            self._lock_conn = conn
        self.leader = True
        return True

    async def _release(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        self.leader = False
        if conn is None:
            return
        try:
            # A pooled connection outlives close(): unlock explicitly.
            await conn.execute(_UNLOCK, _LOCK_PARAMS)
            await conn.commit()
            await conn.close()
        except Exception:
            with contextlib.suppress(Exception):
                await conn.invalidate()  # ends the session, and the lock with it
