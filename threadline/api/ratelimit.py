"""Per-token rate limiting with the `limits` library, in memory or in Redis.

A refused request is `Throttled` (429) with `Retry-After`. If the limit's storage cannot
be reached, requests are let through (and the failure logged): an outage of the limiter
must not become an outage of the API.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

log = logging.getLogger("threadline.api.ratelimit")


def _async_uri(uri: str) -> tuple[str, dict[str, Any]]:
    uri = uri.strip() or "memory://"
    if uri.startswith("async+"):
        uri = uri.removeprefix("async+")
    options: dict[str, Any] = {}
    if uri.startswith(("redis://", "rediss://", "redis+unix://")):
        options["implementation"] = "redispy"  # the client the project already depends on
    return f"async+{uri}", options


class TokenRateLimiter:
    def __init__(
        self, spec: str, storage_uri: str = "memory://", key_prefix: str = "threadline"
    ) -> None:
        self.spec = spec
        self.storage_uri = storage_uri
        self.items: list[RateLimitItem] = parse_many(spec) if spec.strip() else []
        uri, options = _async_uri(storage_uri)
        if uri.startswith("async+redis"):
            options["key_prefix"] = key_prefix
        self.storage: Any = storage_from_string(uri, **options)
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)

    async def hit(self, token_id: int) -> int | None:
        """Count one request of the token: None if allowed, else seconds until it may retry."""
        key = str(token_id)
        try:
            for item in self.items:
                if not await self.limiter.hit(item, "token", key):
                    stats = await self.limiter.get_window_stats(item, "token", key)
                    return max(1, math.ceil(stats.reset_time - time.time()))
        except Exception:  # the storage is down or unreachable
            log.warning("rate limit storage unavailable; request let through", exc_info=True)
        return None

    async def reset(self) -> None:
        await self.storage.reset()


def parse_limits(spec: str) -> None:
    """Raise ValueError when `spec` is not in the `limits` notation."""
    if spec.strip():
        parse_many(spec)
