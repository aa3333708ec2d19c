"""Fan-out between server processes: a small `Bus` with memory, Redis and PostgreSQL backends.

The bus carries two kinds of small JSON messages: `{"kind": "log"}`, a wake-up saying
events were committed (the events themselves are read from the event log, never from the
bus), and `{"kind": "typing", ...}`, a draft being typed (streamed, never stored).

Delivery is at most once: a message published while a subscriber reconnects is lost. That
is why the bus only wakes readers up: every process also reads the log on a timer and
after each reconnection, so a lost wake-up delays events, it never loses them.

Each process subscribes once, whatever its number of clients. `publish` never blocks and
never raises: it is called after a commit, and a write must succeed whether or not the
bus is reachable. Wake-ups waiting to be sent are coalesced into one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import orjson

log = logging.getLogger("threadline.events.bus")

Message = dict[str, Any]
Deliver = Callable[[Message], None]

# Messages waiting to be sent while the backend is slow or away; beyond, new ones are
# dropped (typing drafts are worth nothing late; wake-ups are coalesced anyway).
MAX_OUTBOX = 1000
# Reconnection backoff: quick at first, then once every few seconds.
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 5.0
# PostgreSQL NOTIFY payloads must stay under 8000 bytes.
MAX_NOTIFY_BYTES = 7900


class Bus(ABC):
    """Publish to every process of the deployment (this one included); subscribe once."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        await self._start()

    @abstractmethod
    async def _start(self) -> None: ...

    @abstractmethod
    def publish(self, message: Message) -> None:
        """Send `message` to every subscribed process; never blocks, never raises."""

    @abstractmethod
    async def close(self) -> None: ...

    def _received(self, message: Message) -> None:
        if self._deliver is not None:
            try:
                self._deliver(message)
            except Exception:  # one bad message must not stop the listener
                log.exception("bus message handler failed")


class MemoryBus(Bus):
    """One process (SQLite): publishing is delivering, on the next turn of the event loop."""

    async def _start(self) -> None:
        return None

    def publish(self, message: Message) -> None:
        asyncio.get_running_loop().call_soon(self._received, message)

    async def close(self) -> None:
        return None


class _RemoteBus(Bus):
    """A network backend: an outbox drained by one sender task, one listener task."""

    def __init__(self) -> None:
        super().__init__()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue(MAX_OUTBOX)
        self._wake_queued = False
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.connected = asyncio.Event()
        # The wait before the next subscription attempt (doubling while they fail), and
        # whether this outage was logged already.
        self._delay = RECONNECT_MIN_S
        self._warned = False

    async def _start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="bus-listener"),
            asyncio.create_task(self._send_forever(), name="bus-sender"),
        ]

    def publish(self, message: Message) -> None:
        if message.get("kind") == "log":
            if self._wake_queued:
                return
            self._wake_queued = True
        try:
            self._outbox.put_nowait(message)
        except asyncio.QueueFull:
            if message.get("kind") == "log":
                self._wake_queued = False
            log.warning("bus outbox full: message dropped")

    async def _send_forever(self) -> None:
        failing = False
        while True:
            message = await self._outbox.get()
            if message.get("kind") == "log":
                self._wake_queued = False
            try:
                await self._send(orjson.dumps(message))
                if failing:
                    log.info("bus reachable again")
                failing = False
            except Exception as exc:  # the backend is away: drop, the log is the truth
                if not failing:
                    log.warning("bus publish failed (%s); readers fall back to polling", exc)
                failing = True

    async def _listen_forever(self) -> None:
        while not self._closing:
            try:
                await self._listen(self._on_subscribed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # One warning per outage: the retries after it are logged at debug level.
                log.log(
                    logging.DEBUG if self._warned else logging.WARNING,
                    "bus subscription lost (%s: %s); retrying in %.1f s",
                    type(exc).__name__,
                    exc,
                    self._delay,
                )
                self._warned = True
            self.connected.clear()
            if self._closing:
                return
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, RECONNECT_MAX_S)

    def _on_subscribed(self) -> None:
        if self._warned:
            log.info("bus subscription restored")
        self._warned = False
        self._delay = RECONNECT_MIN_S
        self.connected.set()
        # Anything published while the subscription was down was lost: read the log now.
        self._received({"kind": "log"})

    def _decode(self, payload: bytes | str) -> None:
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("bus: ignored a malformed message")
            return
        if isinstance(message, dict):
            self._received(message)

    @abstractmethod
    async def _send(self, payload: bytes) -> None: ...

    @abstractmethod
    async def _listen(self, subscribed: Callable[[], None]) -> None:
        """Subscribe, call `subscribed`, deliver messages until the connection fails."""

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._disconnect()

    async def _disconnect(self) -> None:
        return None


# The subscription is idle this long before it pings Redis; an unanswered ping (within the
# Redis timeout) means the connection is dead or Redis is frozen: it is dropped and made
# again, so the bus comes back by itself once Redis answers.
IDLE_PING_SECONDS = 5.0
# How long one wait for a message lasts (the ping deadline is checked between waits).
LISTEN_WAIT_SECONDS = 1.0


class RedisBus(_RemoteBus):
    """Redis pub/sub: one PUBLISH per message, one SUBSCRIBE connection per process.

    Every wait on Redis is bounded (THREADLINE_REDIS_CONNECT_TIMEOUT and
    THREADLINE_REDIS_TIMEOUT, seconds): a publish after a commit gives up, and the
    subscription is made again, when Redis is down or frozen."""

    def __init__(
        self, url: str, channel: str, *, connect_timeout: float = 1.0, timeout: float = 1.0
    ) -> None:
        super().__init__()
        self.url = url
        self.channel = channel
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._publisher = self._client()

    def _client(self) -> Any:
        from redis.asyncio import Redis

        return Redis.from_url(
            self.url, socket_connect_timeout=self.connect_timeout, socket_timeout=self.timeout
        )

    async def _send(self, payload: bytes) -> None:
        await self._publisher.publish(self.channel, payload)

    async def _listen(self, subscribed: Callable[[], None]) -> None:
        client = self._client()
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            subscribed()
            heard = time.monotonic()
            pinged: float | None = None
            while True:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=LISTEN_WAIT_SECONDS
                )
                now = time.monotonic()
                if message is not None:
                    heard, pinged = now, None
                    if message.get("type") == "message":
                        self._decode(message["data"])
                    continue
                if pinged is not None and now - pinged > self.timeout:
                    raise ConnectionError(f"no answer to a ping within {self.timeout:g} s")
                if pinged is None and now - heard >= IDLE_PING_SECONDS:
                    await pubsub.ping()  # its answer (a "pong" message) proves the link
                    pinged = now
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _disconnect(self) -> None:
        with contextlib.suppress(Exception):
            await self._publisher.aclose()


class PostgresBus(_RemoteBus):
    """PostgreSQL LISTEN/NOTIFY on a connection of its own (never a pooled or PgBouncer
    transaction-mode one: LISTEN needs a session)."""

    def __init__(self, url: str, channel: str) -> None:
        super().__init__()
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        self._connect_args: dict[str, Any] = {
            "host": parsed.host,
            "port": parsed.port,
            "user": parsed.username,
            "password": parsed.password,
            "database": parsed.database,
        }
        self.channel = channel
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> Any:
        import asyncpg

        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(**self._connect_args, timeout=5)
        return self._conn

    async def _send(self, payload: bytes) -> None:
        if len(payload) > MAX_NOTIFY_BYTES:
            log.warning("bus message of %d bytes dropped (NOTIFY limit)", len(payload))
            return
        async with self._lock:
            conn = await self._connection()
            await conn.execute("SELECT pg_notify($1, $2)", self.channel, payload.decode())

    async def _listen(self, subscribed: Callable[[], None]) -> None:
        import asyncpg

        conn = await asyncpg.connect(**self._connect_args, timeout=5)
        lost = asyncio.Event()

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            self._decode(payload)

        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await conn.add_listener(self.channel, on_notify)
            subscribed()
            while not lost.is_set():
                try:
                    async with asyncio.timeout(10):
                        await lost.wait()
                except TimeoutError:
                    await conn.execute("SELECT 1")  # notices a dead connection
            raise ConnectionError("LISTEN connection closed")
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
