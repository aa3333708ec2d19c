"""A process's realtime machinery: its bus, its hub, and the hook that wakes them on commit."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

from threadline.db.engine import Database
from threadline.events.bus import Bus, MemoryBus, Message, PostgresBus, RedisBus
from threadline.events.config import RealtimeSettings
from threadline.events.hub import Hub

log = logging.getLogger("threadline.events")


def make_bus(settings: RealtimeSettings, database_url: str, redis_url: str | None) -> Bus:
    kind = settings.bus
    if kind == "auto":
        if redis_url:
            kind = "redis"
        elif database_url.startswith(("postgresql", "postgres")):
            kind = "postgres"
        else:
            kind = "memory"
    if kind == "redis":
        if not redis_url:
            raise ValueError("THREADLINE_BUS=redis needs THREADLINE_REDIS_URL")
        return RedisBus(redis_url, settings.bus_channel)
    if kind == "postgres":
        if not database_url.startswith(("postgresql", "postgres")):
            raise ValueError("THREADLINE_BUS=postgres needs a PostgreSQL database")
        return PostgresBus(database_url, settings.bus_channel)
    return MemoryBus()


class Realtime:
    """Started by the app's lifespan; `hub` serves the streams, `bus` links the processes."""

    def __init__(self, db: Database, bus: Bus, settings: RealtimeSettings) -> None:
        self.db = db
        self.bus = bus
        self.settings = settings
        # Also woken when another process commits events (the webhook worker).
        self.wakers: list[Callable[[], None]] = []
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
        _freeze_startup_objects()

    def _on_bus(self, message: Message) -> None:
        self.hub.on_bus(message)
        if message.get("kind") == "log":
            for wake in self.wakers:
                wake()

    def _committed(self, app_id: int) -> None:
        # This process's hub at once; the others through the bus.
        self.hub.wake()
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


async def start_realtime(db: Database, database_url: str, redis_url: str | None) -> Realtime:
    settings = RealtimeSettings()
    realtime = Realtime(db, make_bus(settings, database_url, redis_url), settings)
    await realtime.start()
    return realtime
