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
import itertools
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
        record: dict[str, Any] = {
            "headers": dict(request.headers),
            "body": body,
            "at": time.monotonic(),
            "path": request.url.path,
            "status": None,  # set when answered, with "answered_at"
        }
        self.requests.append(record)
        if self.mode == "slow":
            await asyncio.sleep(2)
        if self.mode == "fail" or (self.mode == "flapping" and tries % 2):
            response = Response("no", status_code=500)
        elif self.mode == "redirect" and request.url.path == "/hook":
            response = Response("moved", status_code=307, headers={"Location": "/elsewhere"})
        elif self.mode == "throttle":
            response = Response("later", status_code=503, headers={"Retry-After": "1"})
        else:
            response = Response("ok")
        record["status"], record["answered_at"] = response.status_code, time.monotonic()
        return response

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
        """The requests that got a 2xx, one per delivery id (the first), in arrival order."""
        seen: dict[str, dict[str, Any]] = {}
        for r in self.requests:
            if r["status"] is not None and 200 <= r["status"] < 300:
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
    # Exactly two attempts per event (the receiver fails every first one): the timeout is
    # far beyond any answer, so that a slow machine never adds a third.
    async with running(db, FAST.model_copy(update={"webhook_timeout_seconds": 30.0})):
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
    # A retry carries the same delivery id. Per conversation, the successful deliveries
    # came in log order, and each event was first tried only once the receiver had
    # accepted the one before it.
    by_conversation: dict[int, list[dict[str, Any]]] = {}
    for r in got:
        by_conversation.setdefault(json.loads(r["body"])["conversation"], []).append(r)
    assert len(by_conversation) == 3
    for accepted in by_conversation.values():
        ids = [json.loads(r["body"])["id"] for r in accepted]
        assert ids == sorted(ids)
        for previous, following in itertools.pairwise(accepted):
            key = following["headers"]["webhook-id"]
            first_try = next(r for r in receiver.requests if r["headers"]["webhook-id"] == key)
            assert first_try["at"] >= previous["answered_at"], (
                "tried before the one before was accepted"
            )
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
            queued: list[int] = []
            async with db.write() as conn:
                for d in dead:  # the first one's replay queues the later one of its conversation
                    queued += await repo.replay(conn, world.app_id, d.id, utcnow())
            assert queued == [d.id for d in dead]
            worker_wake = await settled(db, world, ep, 2, repo.DELIVERED)
            assert [d.id for d in worker_wake] == [d.id for d in dead]
            assert [r["headers"]["webhook-id"] for r in receiver.requests] == [
                f"msg_{d.id}" for d in dead
            ]
        finally:
            await receiver.stop()


def inversions(requests: list[dict[str, Any]]) -> int:
    """Per conversation, how often an accepted request carried an older event than the
    accepted one before it (in arrival order)."""
    last: dict[int, int] = {}
    count = 0
    for r in requests:
        event = json.loads(r["body"])
        cid = event["conversation"]
        count += event["id"] < last.get(cid, 0)
        last[cid] = event["id"]
    return count


async def test_a_replayed_dead_letter_goes_again_with_what_came_after_in_sequence(
    db: Database, world: World, receiver: Receiver
) -> None:
    receiver.mode = "fail"
    ep = await endpoint(db, world, receiver.url, ["conversation_reply"])
    async with running(db):
        cids = []
        for c in range(2):
            out = await service.start_by_user(
                db, world.app_id, world.user_id, ev.UserReply(body=f"c{c} m0")
            )
            cids.append(out.state.id)
        for cid in cids:
            await service.perform(
                db, world.app_id, cid, ev.AdminReply(author=admin(world), body="m1")
            )
        dead = await settled(db, world, ep, 4, repo.DEAD)
        receiver.mode = "ok"
        accepted_from = len(receiver.requests)  # every request before got a 500
        for i in range(2, 5):
            for cid in cids:
                await service.perform(
                    db, world.app_id, cid, ev.AdminReply(author=admin(world), body=f"m{i}")
                )
        before = await settled(db, world, ep, 10, repo.DELIVERED, repo.DEAD)
        mark = len(receiver.requests)
        assert inversions(receiver.requests[accepted_from:mark]) == 0
        # Every conversation's deliveries to the endpoint are numbered 1, 2, ... in log order.
        for cid in cids:
            mine = [d for d in before if d.conversation_id == cid]
            assert [d.sequence for d in mine] == [1, 2, 3, 4, 5]
            assert [d.status for d in mine] == [repo.DEAD] * 2 + [repo.DELIVERED] * 3
        queued: set[int] = set()
        async with db.write() as conn:
            for d in dead:
                queued.update(await repo.replay(conn, world.app_id, d.id, utcnow()))
            # Pending already: replaying again queues nothing more.
            assert await repo.replay(conn, world.app_id, dead[0].id, utcnow()) == []
        # The dead letters and, after each, what came after it in its conversation.
        assert queued == {d.id for d in before}
        after = await settled(db, world, ep, 10, repo.DELIVERED)
    assert [(d.id, d.sequence) for d in after] == [(d.id, d.sequence) for d in before]
    sequence_of = {f"msg_{d.id}": d.sequence for d in after}
    for r in receiver.requests:
        assert int(r["headers"]["threadline-sequence"]) == sequence_of[r["headers"]["webhook-id"]]
    replayed = receiver.requests[mark:]
    # After the replay the receiver got each conversation's deliveries again, in order,
    # ending with the latest one: no inversion from the replay on.
    assert inversions(replayed) == 0
    for cid in cids:
        got = [r for r in replayed if json.loads(r["body"])["conversation"] == cid]
        assert [int(r["headers"]["threadline-sequence"]) for r in got] == [1, 2, 3, 4, 5]
        assert json.loads(got[-1]["body"])["part"]["body"] == "m4"
    # Over everything accepted, the only step back is the replay's restart, to sequence 1.
    for cid in cids:
        numbers = [
            int(r["headers"]["threadline-sequence"])
            for r in receiver.requests[accepted_from:]
            if json.loads(r["body"])["conversation"] == cid
        ]
        backs = [b for a, b in itertools.pairwise(numbers) if b <= a]
        assert backs == [1]


async def test_a_delivery_in_flight_during_a_replay_goes_again_after_the_replayed_one(
    db: Database, world: World, receiver: Receiver
) -> None:
    ep = await endpoint(db, world, receiver.url, ["conversation_reply"])
    patient = FAST.model_copy(update={"webhook_timeout_seconds": 10.0})
    async with running(db, patient):
        out = await service.start_by_user(
            db, world.app_id, world.user_id, ev.UserReply(body="first")
        )
        (first,) = await settled(db, world, ep, 1, repo.DELIVERED)
        receiver.mode = "slow"  # the next delivery is answered 2 s after it arrives
        await service.perform(
            db, world.app_id, out.state.id, ev.AdminReply(author=admin(world), body="second")
        )
        await receiver.wait_for(2)
        # Replayed while the second one is in flight: the receiver accepts the second one
        # (2xx), but the conversation goes again from the first, so the second follows it.
        async with db.write() as conn:
            queued = await repo.replay(conn, world.app_id, first.id, utcnow())
        receiver.mode = "ok"
        assert len(queued) == 2
        await receiver.wait_for(4)
        done = await settled(db, world, ep, 2, repo.DELIVERED)
    assert [d.attempts for d in done] == [1, 1]
    bodies = [json.loads(r["body"])["part"]["body"] for r in receiver.requests]
    assert bodies == ["first", "second", "first", "second"]
    numbers = [int(r["headers"]["threadline-sequence"]) for r in receiver.requests]
    assert numbers == [1, 2, 1, 2]


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
    # Whole seconds, as the vendor's webhooks and API answers carry them.
    for key in ("created", "conversation_created", "conversation_last_update"):
        assert type(part[key]) is int, key
    # The vendor's example of a user's message: `sent_via` web_user; a chat its user
    # started is a `popup_chat` expecting `text`.
    assert part["sent_via"] == "web_user"
    assert (part["conversation_type"], part["conversation_reply_type"]) == ("popup_chat", "text")
    check_signature(ep, request)
    assert done.event_id > ep.start_after


async def test_vendor_format_names_a_bots_part_by_its_bot_name(
    db: Database, world: World, receiver: Receiver
) -> None:
    ep = await endpoint(db, world, receiver.url, fmt="vendor")
    async with running(db):
        out = await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply("hey"))
        await service.perform(
            db,
            world.app_id,
            out.state.id,
            ev.AdminReply(Author(AuthorKind.BOT, None, "Ada"), "Hello, I am Ada"),
        )
        await settled(db, world, ep, 2, repo.DELIVERED)
    parts = [json.loads(parse_qs(r["body"].decode())["conversation"][0]) for r in receiver.requests]
    [by_bot] = [p for p in parts if p["body"] == "Hello, I am Ada"]
    assert by_bot["from"] == {"id": None, "name": "Ada", "avatar": "", "type": "bot"}


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
