"""When to try a failed delivery again: capped exponential backoff with jitter, and the
receiver's own `Retry-After`. Pure; every consumer of the outbox uses it."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    # Attempts before a delivery is given up (dead, failed).
    max_attempts: int
    # The first retry after this, each next one after twice as long, never more than the cap.
    backoff_seconds: float
    backoff_cap_seconds: float

    def exhausted(self, attempts: int) -> bool:
        """Whether `attempts` made attempts are all a delivery gets."""
        return attempts >= self.max_attempts


def backoff_delay(
    attempts: int, base: float, cap: float, retry_after: float | None = None
) -> float:
    """Seconds before the next attempt, after `attempts` failed ones; a receiver's
    `retry_after` wins (within the cap)."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap)
    delay: float = base * 2.0 ** max(attempts - 1, 0)
    delay = min(delay, cap)
    jitter: float = random.uniform(1.0, 1.1)  # spreads the retries of many deliveries
    return delay * jitter


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """`Retry-After`: delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)
