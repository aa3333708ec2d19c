"""Per-token rate limiting with the `limits` library, in memory or in Redis.

A refused request is `Throttled` (429) with `Retry-After`. If the limit's storage cannot
be reached, requests are let through (and the failure logged once per outage): an outage of
the limiter must not become an outage of the API. Every wait on a Redis storage is bounded
(THREADLINE_REDIS_CONNECT_TIMEOUT, THREADLINE_REDIS_TIMEOUT); after a failure, requests are
let through without asking it for `RETRY_SECONDS`, so that a frozen Redis costs one
request the timeout, not every request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

log = logging.getLogger("threadline.api.ratelimit")

# After the storage failed, it is asked again after this long (meanwhile: let through).
RETRY_SECONDS = 2.0


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
        self,
        spec: str,
        storage_uri: str = "memory://",
        key_prefix: str = "threadline",
        redis_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.storage_uri = storage_uri
        self.items: list[RateLimitItem] = parse_many(spec) if spec.strip() else []
        uri, options = _async_uri(storage_uri)
        # The longest one request may wait for the storage (a connection and a script).
        self.bound: float | None = None
        if uri.startswith("async+redis"):
            options["key_prefix"] = key_prefix
            options |= dict(redis_options or {})
            connect = float(options.get("socket_connect_timeout") or 0)
            answer = float(options.get("socket_timeout") or 0)
            self.bound = (connect + 2 * answer) or None
        self.storage: Any = storage_from_string(uri, **options)
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)
        # Monotonic time before which the storage is not asked (it failed); None: healthy.
        self._failing_until: float | None = None
        self.retry_seconds = RETRY_SECONDS

    async def hit(self, token_id: int) -> int | None:
        """Count one request of the token: None if allowed, else seconds until it may retry."""
        if self._failing_until is not None and time.monotonic() < self._failing_until:
            return None
        key = str(token_id)
        try:
            async with asyncio.timeout(self.bound):
                for item in self.items:
                    if not await self.limiter.hit(item, "token", key):
                        stats = await self.limiter.get_window_stats(item, "token", key)
                        self._recovered()
                        return max(1, math.ceil(stats.reset_time - time.time()))
        except Exception as exc:  # the storage is down, unreachable or does not answer
            if self._failing_until is None:
                log.warning(
                    "rate limit storage unavailable (%s: %s); requests let through until it"
                    " answers",
                    type(exc).__name__,
                    exc,
                )
            self._failing_until = time.monotonic() + self.retry_seconds
            return None
        self._recovered()
        return None

    def _recovered(self) -> None:
        if self._failing_until is not None:
            log.info("rate limit storage reachable again")
            self._failing_until = None

    async def reset(self) -> None:
        await self.storage.reset()


def parse_limits(spec: str) -> None:
    """Raise ValueError when `spec` is not in the `limits` notation."""
    if spec.strip():
        parse_many(spec)
