"""Backoff of repeated attempts (sign-ins): pure rules, no I/O.

A key (a client address, an account) may make `free` attempts in a row; after that each
attempt must wait, twice as long as the one before, up to `cap_seconds`: guessing slows to
a crawl, yet a correct password always gets through once the wait is over (no lock-out
forever). A key unused for `forget_seconds` starts afresh; a success clears it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Backoff:
    free: int
    base_seconds: float
    cap_seconds: float
    forget_seconds: float

    def delay_after(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th attempt before the next."""
        if attempts < self.free:
            return 0.0
        exponent = min(attempts - self.free, 62)  # 2**62 seconds is past any cap
        return float(min(self.base_seconds * 2.0**exponent, self.cap_seconds))


@dataclass(frozen=True, slots=True)
class Count:
    """A key's attempts since its last success, and when the next one may be made."""

    attempts: int
    next_allowed: datetime
    updated: datetime


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    # Allowed: the key's count after this attempt; refused: the count as it was.
    count: Count
    # Refused: seconds until an attempt is allowed again.
    retry_after: float


def attempt(rule: Backoff, count: Count | None, now: datetime) -> Verdict:
    """Whether an attempt now is allowed, and the count it leaves behind."""
    if count is not None and (now - count.updated).total_seconds() >= rule.forget_seconds:
        count = None
    if count is not None and now < count.updated:
        # Counted meanwhile by an attempt that read the clock later (another request of
        # this process that got the lock first, or another process): this one comes after
        # it, so a free attempt after a free attempt is never refused for a microsecond.
        now = count.updated
    if count is not None and now < count.next_allowed:
        return Verdict(False, count, (count.next_allowed - now).total_seconds())
    attempts = (count.attempts if count else 0) + 1
    wait = timedelta(seconds=rule.delay_after(attempts))
    return Verdict(True, Count(attempts, now + wait, now), 0.0)


def refund(rule: Backoff, count: Count) -> Count:
    """The count with its last attempt given back (a success), and the wait that leaves."""
    attempts = max(count.attempts - 1, 0)
    wait = timedelta(seconds=rule.delay_after(attempts)) if attempts else timedelta(0)
    return Count(attempts, count.updated + wait, count.updated)
