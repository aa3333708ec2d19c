"""Settings of realtime streams (environment, prefix THREADLINE_)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RealtimeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="THREADLINE_", extra="ignore")

    # `auto`: Redis when THREADLINE_REDIS_URL is set, else LISTEN/NOTIFY on PostgreSQL,
    # else memory (SQLite: one process).
    bus: Literal["auto", "memory", "redis", "postgres"] = "auto"
    # The Redis pub/sub channel (and NOTIFY channel) the processes of one deployment share.
    # Unset: `threadline_events_<id>`, with the database's random id (table `deployment`),
    # so deployments that share a Redis (whatever its database number: pub/sub ignores it)
    # never see each other's messages.
    bus_channel: str | None = None
    # Proxies and NATs cut connections idle for a minute or so; 25 s stays well inside.
    realtime_heartbeat_seconds: float = 25.0
    # The event log is read this often even without a bus message: a lost wake-up (bus
    # down, a process that crashed after its commit) delays events by at most this much.
    realtime_poll_seconds: float = 1.0
    # Events waiting for one slow client; beyond, the client is dropped (it reconnects
    # with its tag and catches up from the log).
    realtime_queue_size: int = 1000
    # The hub reads the log at most once per this many milliseconds: under load, the events
    # of that time go out as one read and one write per socket, not one per event.
    realtime_gather_ms: float = Field(default=25.0, ge=0, le=1000)
    # Open streams re-check their token this often: one revoked, expired or of an erased
    # widget user ends them (a process learns of a revocation elsewhere within its token
    # cache's 5 seconds more).
    realtime_token_check_seconds: float = Field(default=5.0, gt=0)
    # Streams open at once, per process, with one token and from one client address: a
    # browser tab holds one, an inbox a few; hundreds from one token are abuse (each holds
    # a queue and a socket). 0: no limit.
    realtime_max_streams_per_token: int = Field(default=20, ge=0)
    realtime_max_streams_per_address: int = Field(default=200, ge=0)
    # An SSE response ends after this long so that load rebalances; EventSource reconnects
    # by itself with Last-Event-ID.
    sse_lifetime_seconds: float = 600.0
