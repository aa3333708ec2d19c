"""Sign-in attempt counts in Redis, when the deployment has one (THREADLINE_REDIS_URL):
shared by every process like the database's table, without a write transaction per
attempt.

Each key is a hash (`attempts`, `next_allowed`, `updated`, Unix seconds) that expires once
idle for its rule's `forget_seconds`. Counting is atomic: the keys are watched, the pure
rule (threadline.core.throttle) decides, and the new counts are written in a MULTI that
fails if another process changed them meanwhile, in which case it decides again.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from threadline.core import throttle
from threadline.core.throttle import Backoff, Count

# Two processes counting the same key at the same instant each retry; more than this many
# lost races in a row means something is wrong (the count is then refused, not skipped).
MAX_RACES = 50


def _stamp(moment: datetime) -> str:
    return repr(moment.timestamp())


def _count(raw: dict[Any, Any]) -> Count | None:
    if not raw:
        return None
    values = {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }
    try:
        return Count(
            int(values["attempts"]),
            datetime.fromtimestamp(float(values["next_allowed"]), UTC),
            datetime.fromtimestamp(float(values["updated"]), UTC),
        )
    except (KeyError, ValueError):
        return None  # not ours, or half-written: start afresh


class RedisAttempts:
    """Counts under `<namespace>:signin:<key>` (the namespace is the deployment's)."""

    def __init__(self, client: Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def _key(self, key: str) -> str:
        return f"{self.namespace}:signin:{key}"

    async def admit(self, rules: dict[str, Backoff], now: datetime) -> float | None:
        """Count one attempt for every key, or none when one of them must still wait: then
        the seconds to wait."""
        names = {self._key(k): rule for k, rule in rules.items()}
        async with self.client.pipeline(transaction=True) as pipe:
            for race in range(MAX_RACES):
                if race:
                    now = datetime.now(UTC)  # lost to another attempt: decide anew
                try:
                    await pipe.watch(*names)
                    verdicts = {}
                    for name, rule in names.items():
                        count = _count(await pipe.hgetall(name))
                        verdicts[name] = throttle.attempt(rule, count, now)
                    refused = [v.retry_after for v in verdicts.values() if not v.allowed]
                    if refused:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return max(refused)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    for name, verdict in verdicts.items():
                        self._store(pipe, name, verdict.count, names[name])
                    await pipe.execute()
                    return None
                except WatchError:
                    continue
        raise RuntimeError("sign-in attempts: too many concurrent changes of one count")

    async def succeeded(
        self, account: str, address: str, address_rule: Backoff, now: datetime
    ) -> None:
        """The account starts afresh; the address gets its attempt back."""
        await self.client.delete(self._key(account))
        name = self._key(address)
        async with self.client.pipeline(transaction=True) as pipe:
            for _ in range(MAX_RACES):
                try:
                    await pipe.watch(name)
                    count = _count(await pipe.hgetall(name))
                    if count is None or count.attempts <= 0:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return
                    pipe.multi()  # type: ignore[no-untyped-call]
                    self._store(pipe, name, throttle.refund(address_rule, count), address_rule)
                    await pipe.execute()
                    return
                except WatchError:
                    continue

    @staticmethod
    def _store(pipe: Any, name: str, count: Count, rule: Backoff) -> None:
        pipe.hset(
            name,
            mapping={
                "attempts": count.attempts,
                "next_allowed": _stamp(count.next_allowed),
                "updated": _stamp(count.updated),
            },
        )
        # Forgotten when idle as long as the rule forgets (and never before its wait ends).
        pipe.expire(name, max(1, math.ceil(rule.forget_seconds)))
