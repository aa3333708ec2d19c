"""The webhook worker against a local receiver that is down, slow, flapping or throttling.

Every committed change is delivered at least once (no delivery for a rolled-back one),
signed (Standard Webhooks), with a delivery id that stays the same across retries, in
order per conversation; failures are retried with capped exponential backoff honouring
Retry-After, end dead after the last attempt, and can be replayed. Without any endpoint, a
round only looks for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import uvicorn
from sqlalchemy import event
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import World
from threadline.apps.service import utcnow
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AuthorKind
from threadline.core.errors import InvalidParameter
from threadline.core.model import Author
from threadline.db.engine import Database
from threadline.events import repository as log_store
from threadline.webhooks import repository as repo
from threadline.webhooks import signing
from threadline.webhooks.worker import WebhookSettings, Worker, backoff, retry_after_seconds

FAST = WebhookSettings(
    webhook_backoff_seconds=0.05,
    webhook_backoff_cap_seconds=0.4,
    webhook_max_attempts=4,
    webhook_timeout_seconds=0.5,
    webhook_poll_seconds=0.1,
    webhook_allow_private=True,  # the receiver listens on loopback
)
WAIT_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Receiver:
    """A local HTTP endpoint whose behaviour the test sets: `ok`, `fail`, `slow`,
    `flapping` (every other attempt of each delivery fails, the first one included) or
    `throttle` (503 + Retry-After: 1)."""

    port: int = field(default_factory=free_port)
    mode: str = "ok"
    requests: list[dict[str, Any]] = field(default_factory=list)
    _tries: dict[str, int] = field(default_factory=dict)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        tries = self._tries[request.headers.get("webhook-id", "")] = (
            self._tries.get(request.headers.get("webhook-id", ""), 0) + 1
        )
        self.requests.append(
            {
                "headers": dict(request.headers),
                "body": body,
                "at": time.monotonic(),
                "path": request.url.path,
            }
        )
        if self.mode == "slow":
            await asyncio.sleep(2)
        if self.mode == "fail" or (self.mode == "flapping" and tries % 2):
            return Response("no", status_code=500)
        if self.mode == "redirect" and request.url.path == "/hook":
            return Response("moved", status_code=307, headers={"Location": "/elsewhere"})
        if self.mode == "throttle":
            return Response("later", status_code=503, headers={"Retry-After": "1"})
        return Response("ok")

    async def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/hook", self.handle, methods=["POST"]),
                Route("/elsewhere", self.handle, methods=["GET", "POST"]),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(500):
            if self._server.started:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("receiver did not start")

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = None

    async def wait_for(self, count: int) -> None:
        """Until `count` requests came in."""
        async with asyncio.timeout(WAIT_S):
            while len(self.requests) < count:  # noqa: ASYNC110  (polling a plain list)
                await asyncio.sleep(0.05)

    def delivered(self) -> list[dict[str, Any]]:
        """The requests that got a 2xx, one per delivery id (the first)."""
        seen: dict[str, dict[str, Any]] = {}
        for r in self.requests:
            seen.setdefault(r["headers"]["webhook-id"], r)
        return list(seen.values())


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@contextlib.asynccontextmanager
async def running(db: Database, settings: WebhookSettings = FAST) -> AsyncIterator[Worker]:
    worker = Worker(db, settings)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


async def endpoint(
    db: Database, world: World, url: str, events: list[str] | None = None, fmt: str = "json"
) -> repo.Endpoint:
    async with db.read() as conn:
        head = await log_store.head(conn)
    async with db.write() as conn:
        return await repo.add_endpoint(
            conn,
            app_id=world.app_id,
            url=url,
            events=events or [],
            format_=fmt,
            secret=signing.new_secret(),
            token="tok",
            start_after=head,
            now=utcnow(),
        )


async def deliveries(db: Database, world: World, ep: repo.Endpoint) -> list[repo.Delivery]:
    async with db.read() as conn:
        found = await repo.list_deliveries(
            conn, world.app_id, ep.id, status=None, before=None, limit=100
        )
    return found[::-1]


async def settled(
    db: Database, world: World, ep: repo.Endpoint, count: int, *statuses: str
) -> list[repo.Delivery]:
    """Wait until `count` deliveries exist and all are in `statuses`."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = await deliveries(db, world, ep)
        if len(found) == count and all(d.status in statuses for d in found):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"not settled: {await deliveries(db, world, ep)}")


def admin(world: World) -> Author:
    return Author(AuthorKind.ADMIN, world.admin_id)


def check_signature(ep: repo.Endpoint, request: dict[str, Any]) -> None:
    h = request["headers"]
    assert signing.verify(
        ep.secret,
        h["webhook-id"],
        h["webhook-timestamp"],
        h["webhook-signature"],
        request["body"],
        int(datetime.now(UTC).timestamp()),
    )
    assert h["user-agent"].startswith("Threadline-Webhooks/")


async def test_flapping_receiver_gets_everything_in_order_signed_once_per_id(
    db: Database, world: World, receiver: Receiver
) -> None:
    receiver.mode = "flapping"
    ep = await endpoint(db, world, receiver.url, ["conversation_reply", "conversation_closed"])
    async with running(db):
        cids = []
        for c in range(3):
            out = await service.start_by_user(
                db, world.app_id, world.user_id, ev.UserReply(body=f"c{c} m0")
            )
            cids.append(out.state.id)
        for i in range(1, 4):
            for cid in cids:
                await service.perform(
                    db, world.app_id, cid, ev.AdminReply(author=admin(world), body=f"m{i}")
                )
        await service.perform(db, world.app_id, cids[0], ev.Close(admin(world)))
        with pytest.raises(InvalidParameter):  # rolled back: never delivered
            await service.perform(
                db,
                world.app_id,
                cids[1],
                ev.AdminReply(author=admin(world), body="never"),
                ev.AddTag("", admin(world)),
            )
        found = await settled(db, world, ep, 3 * 4 + 1, repo.DELIVERED)
    assert all(d.attempts == 2 for d in found)
    got = receiver.delivered()
    assert len(got) == 13
    bodies = [json.loads(r["body"]) for r in got]
    assert "never" not in json.dumps(bodies)
    for r in receiver.requests:
        check_signature(ep, r)
    # A retry carries the same delivery id; per conversation, the receiver saw the events
    # in log order (each one only once it had accepted the one before).
    ok_order: dict[int, list[int]] = {}
    for r in receiver.requests:
        event = json.loads(r["body"])
        ok_order.setdefault(event["conversation"], [])
        if event["id"] not in ok_order[event["conversation"]]:
            ok_order[event["conversation"]].append(event["id"])
    for ids in ok_order.values():
        assert ids == sorted(ids)
    assert [e["type"] for e in bodies].count("conversation_closed") == 1


async def test_a_receiver_that_is_down_ends_dead_and_is_replayed_when_back(
    db: Database, world: World
) -> None:
    receiver = Receiver()  # not started: connection refused
    ep = await endpoint(db, world, receiver.url)
    async with running(db):
        await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="hi"))
        dead = await settled(db, world, ep, 2, repo.DEAD)
        assert all(d.attempts == FAST.webhook_max_attempts for d in dead)
        assert all(d.last_status is None and d.last_error for d in dead)
        await receiver.start()
        try:
            async with db.write() as conn:
                for d in dead:
                    assert await repo.replay(conn, world.app_id, d.id, utcnow())
            worker_wake = await settled(db, world, ep, 2, repo.DELIVERED)
            assert [d.id for d in worker_wake] == [d.id for d in dead]
            assert [r["headers"]["webhook-id"] for r in receiver.requests] == [
                f"msg_{d.id}" for d in dead
            ]
        finally:
            await receiver.stop()


async def test_a_slow_receiver_times_out_and_is_retried(
    db: Database, world: World, receiver: Receiver
) -> None:
    receiver.mode = "slow"
    ep = await endpoint(db, world, receiver.url, ["conversation_reply"])
    async with running(db):
        await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="hi"))
        await receiver.wait_for(2)
        receiver.mode = "ok"
        (done,) = await settled(db, world, ep, 1, repo.DELIVERED)
    assert done.attempts >= 2
    ids = {r["headers"]["webhook-id"] for r in receiver.requests}
    assert ids == {f"msg_{done.id}"}


async def test_retry_after_is_honoured(db: Database, world: World, receiver: Receiver) -> None:
    receiver.mode = "throttle"
    ep = await endpoint(db, world, receiver.url, ["conversation_reply"])
    async with running(db, FAST.model_copy(update={"webhook_backoff_cap_seconds": 5.0})):
        await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="hi"))
        await receiver.wait_for(2)
        receiver.mode = "ok"
        await settled(db, world, ep, 1, repo.DELIVERED)
    first, second = receiver.requests[:2]
    assert second["at"] - first["at"] >= 0.9  # not the 0.05 s backoff


async def test_vendor_format(db: Database, world: World, receiver: Receiver) -> None:
    ep = await endpoint(db, world, receiver.url, fmt="vendor")
    async with running(db):
        await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="hey"))
        (done,) = await settled(db, world, ep, 1, repo.DELIVERED)
    (request,) = receiver.requests
    assert request["headers"]["content-type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request["body"].decode())
    assert form["type"] == ["conversation"]
    assert form["token"] == ["tok"]
    part = json.loads(form["conversation"][0])
    assert part["body"] == "hey"
    assert part["type"] == "reply_user"
    assert part["conversation_replies_count"] == 1
    assert part["conversation_id"] == part["conversation"]
    check_signature(ep, request)
    assert done.event_id > ep.start_after


def test_backoff_is_exponential_capped_and_honours_retry_after() -> None:
    s = WebhookSettings(webhook_backoff_seconds=10, webhook_backoff_cap_seconds=100)
    delays = [backoff(n, s, None) for n in range(1, 8)]
    assert 10 <= delays[0] <= 11
    assert 20 <= delays[1] <= 22
    assert all(d <= 110 for d in delays)
    assert delays[-1] >= 100
    assert backoff(3, s, 7.0) == 7.0
    assert backoff(3, s, 1e9) == 100
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds("Tue, 01 Jan 2030 00:01:00 GMT", now) == 60
    assert retry_after_seconds("soon", now) is None


def test_signatures_follow_standard_webhooks() -> None:
    # The example of the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    signature = signing.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signing.verify(
        secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", signature, body, 1614265330
    )
    assert not signing.verify(
        secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", signature, body + b" ", 1614265330
    )
    assert not signing.verify(
        secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", signature, body, 1614265330 + 3600
    )


async def test_with_no_endpoint_a_round_only_looks_for_endpoints(
    db: Database, world: World, receiver: Receiver
) -> None:
    """A deployment without webhooks pays one query per round (two while holding the lead
    on PostgreSQL); the first endpoint is served on the next round."""
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    client = httpx.AsyncClient(timeout=FAST.webhook_timeout_seconds)
    worker = Worker(db, FAST, client=client)  # not started: the test runs its rounds
    await worker.round(1.0)  # the first round also looks for deliveries left pending
    engines = {db.read_engine.sync_engine, db.write_engine.sync_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", seen)
    try:
        for _ in range(3):
            statements.clear()
            await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="x"))
            statements.clear()  # only the round's own
            assert await worker.round(1.0) == 1.0
            queries = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
            assert sum("webhook_endpoints" in s for s in queries) == 1, queries
            assert not any("webhook_deliveries" in s for s in statements), statements
            assert len(queries) <= (1 if db.is_sqlite else 2), queries
        # An endpoint: the next round queues the new events' deliveries (the conversation
        # started, its first reply) and sends them.
        ep = await endpoint(db, world, receiver.url)
        await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="y"))
        await worker.round(1.0)
        sent = await settled(db, world, ep, 2, "delivered")
        assert len(receiver.requests) == 2
        assert all(d.attempts == 1 for d in sent)
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", seen)
        await worker.stop()
        await client.aclose()
