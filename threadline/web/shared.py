"""What the processes of one deployment share besides the database: a Redis, when
THREADLINE_REDIS_URL is set, for counts every process must see at once (sign-in attempts,
open streams). Keys are prefixed with the deployment's name (its bus channel, named after
the database's random id), so deployments sharing a Redis never count each other's."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis

from threadline.db.engine import Database
from threadline.events.config import RealtimeSettings
from threadline.events.realtime import deployment_channel
from threadline.settings import RedisSettings

log = logging.getLogger("threadline.web")


@dataclass(frozen=True, slots=True)
class SharedRedis:
    client: Redis
    namespace: str

    async def close(self) -> None:
        await self.client.aclose()


async def open_shared_redis(db: Database, redis_url: str | None) -> SharedRedis | None:
    """A client of the deployment's Redis and its key prefix; None without a Redis, or when
    the database cannot name the deployment yet (the counts then stay in the database)."""
    if not redis_url:
        return None
    try:
        namespace = await deployment_channel(db, RealtimeSettings())
    except Exception as exc:
        log.warning("shared counts stay in the database: the deployment has no name (%s)", exc)
        return None
    # A Redis that does not answer within THREADLINE_REDIS_TIMEOUT is treated as away (the
    # counts fall back to the database, or a stream goes uncounted) rather than holding a
    # sign-in or a stream up.
    client = Redis.from_url(redis_url, **RedisSettings().client_options())
    return SharedRedis(client, namespace)
