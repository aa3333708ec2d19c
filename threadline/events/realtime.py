"""A process's realtime machinery: its bus, its hub, and the hook that wakes them on commit."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from threadline.db.engine import Database
from threadline.events import repository as log_store
from threadline.events.bus import Bus, MemoryBus, Message, PostgresBus, RedisBus
from threadline.events.config import RealtimeSettings
from threadline.events.hub import Client, Hub
from threadline.events.slots import RENEW_SECONDS, Slots, default_slots, presence_key
from threadline.settings import RedisSettings

log = logging.getLogger("threadline.events")


# The bus channel's name without a deployment id (a database from before migration 0015).
BASE_CHANNEL = "threadline_events"


def bus_channel(settings: RealtimeSettings, deployment_id: str | None) -> str:
    """The configured channel, else one named after the deployment's database."""
    if settings.bus_channel:
        return settings.bus_channel
    return f"{BASE_CHANNEL}_{deployment_id}" if deployment_id else BASE_CHANNEL


async def deployment_channel(db: Database, settings: RealtimeSettings) -> str:
    if settings.bus_channel:
        return settings.bus_channel
    async with db.read() as conn:
        return bus_channel(settings, await log_store.deployment_id(conn))


def bus_kind(settings: RealtimeSettings, database_url: str, redis_url: str | None) -> str:
    """`redis`, `postgres` or `memory`: THREADLINE_BUS, or what the deployment has."""
    kind = settings.bus
    if kind == "auto":
        if redis_url:
            kind = "redis"
        elif database_url.startswith(("postgresql", "postgres")):
            kind = "postgres"
        else:
            kind = "memory"
    return kind


async def channel_for(
    db: Database, settings: RealtimeSettings, database_url: str, redis_url: str | None
) -> str:
    """The bus channel of this deployment. Only a Redis bus is shared between deployments
    (PostgreSQL's notifications stay in their database, a memory bus in its process), so the
    database is asked for its id for that one alone."""
    if bus_kind(settings, database_url, redis_url) == "redis":
        return await deployment_channel(db, settings)
    return settings.bus_channel or BASE_CHANNEL


def make_bus(
    settings: RealtimeSettings,
    database_url: str,
    redis_url: str | None,
    channel: str = BASE_CHANNEL,
) -> Bus:
    """The bus between the processes of one deployment, on `channel` (see `bus_channel`)."""
    kind = bus_kind(settings, database_url, redis_url)
    if kind == "redis":
        if not redis_url:
            raise ValueError("THREADLINE_BUS=redis needs THREADLINE_REDIS_URL")
        redis = RedisSettings()
        return RedisBus(
            redis_url,
            channel,
            connect_timeout=redis.redis_connect_timeout,
            timeout=redis.redis_timeout,
        )
    if kind == "postgres":
        if not database_url.startswith(("postgresql", "postgres")):
            raise ValueError("THREADLINE_BUS=postgres needs a PostgreSQL database")
        return PostgresBus(database_url, channel)
    return MemoryBus()


# Whether a stream's token still opens streams (set by threadline.events.stream, which
# knows the kinds of token).
TokenCheck = Callable[[Database, str], Awaitable[bool]]


class Realtime:
    """Started by the app's lifespan; `hub` serves the streams, `bus` links the processes."""

    def __init__(self, db: Database, bus: Bus, settings: RealtimeSettings) -> None:
        self.db = db
        self.bus = bus
        self.settings = settings
        # Also woken when another process commits events (the webhook worker).
        self.wakers: list[Callable[[], None]] = []
        # Open streams end when this says their token no longer is valid.
        self.token_valid: TokenCheck | None = None
        self._watch: asyncio.Task[None] | None = None
        # Open streams per token and per client address (threadline.events.stream),
        # shared by the deployment's processes (the app's lifespan puts Redis's here).
        self.slots: Slots = default_slots(db)
        self._renew: asyncio.Task[None] | None = None
        # When this process last told the others of a commit, and whether it will again.
        self._told = 0.0
        self._tell_pending = False
        self.hub = Hub(
            db,
            poll_interval=settings.realtime_poll_seconds,
            queue_size=settings.realtime_queue_size,
            gather=settings.realtime_gather_ms / 1000,
        )

    async def start(self) -> None:
        await self.hub.start()
        await self.bus.start(self._on_bus)
        self.db.commit_listeners.append(self._committed)
        self._watch = asyncio.create_task(self._watch_tokens(), name="realtime-tokens")
        self._renew = asyncio.create_task(self._renew_slots(), name="realtime-slots")
        _freeze_startup_objects()

    async def _watch_tokens(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.settings.realtime_token_check_seconds)
            try:
                await self.end_invalid_streams()
                failing = False
            except Exception as exc:  # the database is away: the streams stay, as the hub's
                if not failing:
                    log.warning("realtime: checking the streams' tokens failed (%s)", exc)
                failing = True

    async def _renew_slots(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                await self.slots.renew()
                failing = False
            except Exception as exc:  # the leases run on; the next renewal tries again
                if not failing:
                    log.warning("realtime: renewing the streams' slots failed (%s)", exc)
                failing = True

    async def online_users(self, app_id: int, user_ids: Collection[int]) -> set[int]:
        """Those of the app's users with a widget stream open on any process: they are on
        the site (the vendor's `presence: online`). Unknown while the shared count is away:
        none then."""
        keys = {presence_key(app_id, user_id): user_id for user_id in user_ids}
        try:
            held = await self.slots.open_keys(keys)
        except Exception as exc:
            log.warning("realtime: the users' presence could not be read (%s)", exc)
            return set()
        return {keys[key] for key in held}

    async def end_invalid_streams(self) -> None:
        """End the streams whose token was revoked, expired or whose widget user was
        erased (each distinct token checked once)."""
        if self.token_valid is None:
            return
        by_token: dict[str, list[Client]] = {}
        for client in list(self.hub.clients):
            if client.token is not None:
                by_token.setdefault(client.token, []).append(client)
        for token, clients in by_token.items():
            if not await self.token_valid(self.db, token):
                for client in clients:
                    self.hub.revoke(client)

    def _on_bus(self, message: Message) -> None:
        self.hub.on_bus(message)
        if message.get("kind") == "log":
            for wake in self.wakers:
                wake()

    def _committed(self, app_id: int) -> None:
        # This process's hub at once; the others through the bus, at most once per gather
        # time (they read the log no more often than that anyway).
        self.hub.wake()
        if self._tell_pending:
            return
        loop = asyncio.get_running_loop()
        due = self._told + self.hub.gather
        if loop.time() >= due:
            self._tell_others(app_id)
        else:
            self._tell_pending = True
            loop.call_at(due, self._tell_others, app_id)

    def _tell_others(self, app_id: int) -> None:
        self._tell_pending = False
        self._told = asyncio.get_running_loop().time()
        self.bus.publish({"kind": "log", "app": app_id})

    def typing(
        self, *, app_id: int, conversation_id: int, user_id: int, author: dict[str, Any], body: str
    ) -> None:
        self.hub.publish_typing(
            self.bus,
            app_id=app_id,
            conversation_id=conversation_id,
            user_id=user_id,
            author=author,
            body=body,
        )

    async def stop(self) -> None:
        for task in (self._watch, self._renew):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._committed in self.db.commit_listeners:
            self.db.commit_listeners.remove(self._committed)
        await self.hub.stop()
        await self.bus.close()


_frozen = False


def _freeze_startup_objects() -> None:
    """Once per process, when the application is built: move its objects (modules, routes,
    schemas, the engine) out of the garbage collector's reach. A full collection otherwise
    walks them all, which stalled every stream of a process for 100 to 300 ms under load."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()  # what is garbage now must not become permanent
        gc.freeze()


async def start_realtime(
    db: Database, database_url: str, redis_url: str | None, token_valid: TokenCheck | None = None
) -> Realtime:
    settings = RealtimeSettings()
    channel = await channel_for(db, settings, database_url, redis_url)
    realtime = Realtime(db, make_bus(settings, database_url, redis_url, channel), settings)
    realtime.token_valid = token_valid
    await realtime.start()
    return realtime
