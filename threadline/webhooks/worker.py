"""Webhooks as a consumer of the outbox (threadline.outbox.worker): turns log events into
deliveries, and sends them.

Ingesting: the consumer reads the final events after its cursor (see events/repository.py
for why no event is skipped) and, in one transaction, inserts a delivery per interested
endpoint and moves the cursor: an event is queued for delivery exactly once (the unique
(endpoint, event) index makes a repeat harmless) and only if its change committed.

Sending: the due deliveries that are the oldest pending of their (endpoint, conversation)
are sent concurrently, so a conversation's deliveries reach an endpoint in order while
other conversations proceed. Anything but a 2xx is retried with capped exponential
backoff (a `Retry-After` is honoured); after the last attempt a delivery is `dead` (and
no longer holds back its conversation's later ones) until replayed through the API.
A replay sends the delivery again and then every later delivery of its conversation to
that endpoint, in order; each attempt carries its number in the conversation
(`Threadline-Sequence`), so a receiver can tell a replayed one from a new one.

The outbox worker runs this consumer with the others (e-mail replies, ...); `Worker` is
that worker, with the webhooks first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
import orjson
from pydantic_settings import BaseSettings, SettingsConfigDict

from threadline import __version__
from threadline.api.present import Presenter
from threadline.api.schemas import unix_seconds as whole_seconds
from threadline.conversations.repository import ConversationRepository
from threadline.db.engine import Database
from threadline.events import repository as log_store
from threadline.events.present import EVENT_ADAPTER, render
from threadline.outbox import cursor as outbox_cursor
from threadline.outbox.retry import backoff_delay
from threadline.outbox.retry import retry_after_seconds as retry_after_seconds
from threadline.outbox.worker import Consumer, OutboxWorker
from threadline.webhooks import repository as repo
from threadline.webhooks import signing, targets

log = logging.getLogger("threadline.webhooks")

USER_AGENT = f"Threadline-Webhooks/{__version__}"
# The delivery's number among its endpoint's deliveries of its conversation (1, 2, ...):
# a receiver orders by it, e.g. ignores a replayed one older than what it has applied.
SEQUENCE_HEADER = "Threadline-Sequence"
# The stored error of an attempt that got no HTTP answer.
COULD_NOT_CONNECT = "could not connect"
# Log events turned into deliveries per transaction.
INGEST_BATCH = 500


class WebhookSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="THREADLINE_", extra="ignore")

    # `inline`: each server process runs a worker (one sends at a time); `off`: only
    # `threadline worker` does.
    webhook_worker: Literal["inline", "off"] = "inline"
    # Attempts before a delivery is dead: with the defaults, retries span about a day.
    webhook_max_attempts: int = 12
    # Backoff: first retry after this, doubling, never more than the cap (plus 10% jitter).
    webhook_backoff_seconds: float = 30.0
    webhook_backoff_cap_seconds: float = 4 * 3600.0
    # A receiver that has not answered in this time has failed the attempt.
    webhook_timeout_seconds: float = 10.0
    # Deliveries in flight at once (each to a different endpoint and conversation).
    webhook_concurrency: int = 8
    # Without a wake-up, the log and the due deliveries are looked at this often.
    webhook_poll_seconds: float = 1.0
    # Deliver to private, loopback and link-local addresses too (on-premises receivers);
    # by default only public addresses are reached (see webhooks/targets.py).
    webhook_allow_private: bool = False


def backoff(attempts: int, settings: WebhookSettings, retry_after: float | None) -> float:
    """Seconds before the next attempt, after `attempts` failed ones."""
    return backoff_delay(
        attempts,
        settings.webhook_backoff_seconds,
        settings.webhook_backoff_cap_seconds,
        retry_after,
    )


class WebhookConsumer:
    """The outbox's webhook deliveries: a delivery per interested endpoint and event."""

    name = "webhooks"

    def __init__(
        self,
        db: Database,
        settings: WebhookSettings,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self._client = client
        self._own_client = client is None
        # What the last round saw: live endpoints, and deliveries still pending. With
        # neither, a round reads the endpoints only (a pending delivery needs a live
        # endpoint to be created or replayed, and removing one ends its pending ones).
        self._endpoints_seen = True
        self._pending_seen = True

    @property
    def idle(self) -> bool:
        return not (self._endpoints_seen or self._pending_seen)

    async def open(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.settings.webhook_timeout_seconds,
                headers={"User-Agent": USER_AGENT},
                follow_redirects=False,
                transport=targets.transport(allow_private=self.settings.webhook_allow_private),
            )

    async def close(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def next_due(self) -> datetime | None:
        async with self.db.read() as conn:
            when = await repo.next_due(conn)
        self._pending_seen = when is not None
        return when

    # -- the outbox ---------------------------------------------------------------------

    async def ingest(self) -> int:
        """Queue a delivery per interested endpoint for every final event after the cursor;
        returns how many were queued. Without any endpoint it reads nothing and writes
        nothing (a deployment without webhooks pays one small query per round)."""
        queued = 0
        while True:
            async with self.db.read() as conn:
                endpoints = await repo.endpoints(conn)
                self._endpoints_seen = bool(endpoints)
                if not endpoints:
                    return queued
                # Nothing before the oldest endpoint's start can go anywhere: skip it.
                floor = min(ep.start_after for ep in endpoints)
                old, batch = await outbox_cursor.read(conn, repo.CURSOR_KEY, floor, INGEST_BATCH)
            rows = [(ep, e) for e in batch.events for ep in endpoints if ep.wants(e)]
            if rows or batch.position != old:
                async with self.db.write() as conn:
                    await outbox_cursor.advance(conn, repo.CURSOR_KEY, old, batch.position)
                    await repo.add_deliveries(conn, rows, datetime.now(UTC))
            queued += len(rows)
            if batch.complete:
                return queued

    # -- sending --------------------------------------------------------------------------

    async def send_due(self) -> int:
        """Attempt every due delivery (at most one per endpoint and conversation at a time);
        returns how many attempts were made."""
        attempts = 0
        while True:
            now = datetime.now(UTC)
            async with self.db.read() as conn:
                batch = await repo.due(conn, now, self.settings.webhook_concurrency)
            if not batch:
                return attempts
            await asyncio.gather(*(self._attempt(d) for d in batch))
            attempts += len(batch)

    async def _attempt(self, delivery: repo.Delivery) -> None:
        try:
            request = await self._request(delivery)
        except Exception:
            log.exception("webhook delivery %s: could not be built", delivery.id)
            request = None
        now = datetime.now(UTC)
        if request is None:
            async with self.db.write() as conn:
                await repo.drop_pending_of_removed(conn, delivery)
            return
        url, body, headers = request
        assert self._client is not None
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            response = await self._client.post(url, content=body, headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
                retry_after = retry_after_seconds(response.headers.get("retry-after"), now)
        except httpx.HTTPError as exc:
            # The app sees no more than this: the reason (refused address, closed port,
            # timeout) would tell it about the network the server is in.
            log.info("webhook delivery %s: %s: %s", delivery.id, type(exc).__name__, exc)
            error = COULD_NOT_CONNECT
        latency = int((time.perf_counter() - started) * 1000)
        now = datetime.now(UTC)
        if error is None:
            outcome, next_at = repo.DELIVERED, now
        elif delivery.attempts + 1 >= self.settings.webhook_max_attempts:
            outcome, next_at = repo.DEAD, now
        else:
            wait = backoff(delivery.attempts + 1, self.settings, retry_after)
            outcome, next_at = repo.PENDING, now + timedelta(seconds=wait)
        async with self.db.write() as conn:
            await repo.record_attempt(
                conn,
                delivery,
                status=outcome,
                now=now,
                next_attempt_at=next_at,
                http_status=status,
                error=error,
                latency_ms=latency,
            )

    async def _request(self, d: repo.Delivery) -> tuple[str, bytes, dict[str, str]] | None:
        """URL, body and headers of a delivery; None when its endpoint was removed."""
        async with self.db.read() as conn:
            found = await repo.endpoints_by_id(conn, [d.endpoint_id])
            endpoint = found.get(d.endpoint_id)
            rows = await log_store.read_ids(conn, [d.event_id])
            if endpoint is None or not rows:
                return None
            (event,) = await render(conn, rows, "")
            if endpoint.format == "vendor":
                body = await _vendor_body(conn, endpoint, event)
                content_type = "application/x-www-form-urlencoded"
            else:
                body = EVENT_ADAPTER.dump_json(event)  # type: ignore[arg-type]
                content_type = "application/json"
        headers = {
            "Content-Type": content_type,
            "User-Agent": USER_AGENT,
            SEQUENCE_HEADER: str(d.sequence),
        }
        headers |= signing.headers(
            endpoint.secret, f"msg_{d.id}", int(datetime.now(UTC).timestamp()), body
        )
        return endpoint.url, body, headers


async def _vendor_body(conn: Any, endpoint: repo.Endpoint, event: dict[str, Any]) -> bytes:
    """The vendor's chat webhook: `type=conversation`, `token`, and `conversation`, the part
    as JSON with the conversation's fields added as `conversation_<field>`."""
    state = await ConversationRepository(conn).get(endpoint.app_id, event["conversation"])
    part = dict(event.get("part") or {})
    if state is not None:
        presenter = Presenter(conn, endpoint.app_id, "")
        (conversation,) = await presenter.conversations([state], user=False, embeds=False)
        for key, value in conversation.items():
            part[f"conversation_{key}"] = value
    conversation_json = orjson.dumps(
        part, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME
    ).decode()
    return urlencode(
        {"type": "conversation", "token": endpoint.token, "conversation": conversation_json}
    ).encode()


def _json_default(value: Any) -> Any:
    # The vendor's chat webhook carries whole seconds, as its API answers do.
    if isinstance(value, datetime):
        return whole_seconds(value)
    raise TypeError(type(value).__name__)


class Worker(OutboxWorker):
    """The outbox worker with the webhooks as its first consumer, and `also` after them."""

    def __init__(
        self,
        db: Database,
        settings: WebhookSettings | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        also: Sequence[Consumer] = (),
    ) -> None:
        self.settings = settings or WebhookSettings()
        self.webhooks = WebhookConsumer(db, self.settings, client)
        super().__init__(db, [self.webhooks, *also], self.settings.webhook_poll_seconds)

    async def ingest(self) -> int:
        return await self.webhooks.ingest()

    async def send_due(self) -> int:
        return await self.webhooks.send_due()


def _channel_consumers(db: Database) -> list[Consumer]:
    """The channels' consumers that are configured (e-mail replies: with a relay)."""
    from threadline.channels.email.outbound import consumer_if_configured

    found = consumer_if_configured(db)
    return [] if found is None else [found]


async def start_worker(db: Database, realtime: Any = None) -> Worker | None:
    """The in-process outbox worker of a server (None with `THREADLINE_WEBHOOK_WORKER=off`).

    `realtime`, when given, also wakes the worker on other processes' commits.
    """
    settings = WebhookSettings()
    if settings.webhook_worker == "off":
        return None
    worker = Worker(db, settings, also=_channel_consumers(db))
    await worker.start()
    if realtime is not None:
        realtime.wakers.append(worker.wake)
    return worker


async def run_worker(database_url: str, redis_url: str | None) -> None:
    """`threadline worker`: a worker of its own, woken by the bus, until SIGINT or SIGTERM."""
    import signal

    from threadline.events.config import RealtimeSettings
    from threadline.events.realtime import channel_for, make_bus
    from threadline.settings import Settings

    db = Database(database_url, sqlite_busy_timeout=Settings().sqlite_busy_timeout)
    worker = Worker(db, WebhookSettings(webhook_worker="inline"), also=_channel_consumers(db))
    settings = RealtimeSettings()
    channel = await channel_for(db, settings, database_url, redis_url)
    bus = make_bus(settings, database_url, redis_url, channel)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await bus.start(lambda m: worker.wake() if m.get("kind") == "log" else None)
        await worker.start()
        await stop.wait()
    finally:
        await worker.stop()
        await bus.close()
        await db.dispose()
