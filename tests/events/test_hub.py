"""The per-process hub on its own: bounded queues drop the slow client, not the others;
a dropped client resumes from its last tag; the bus wake-ups are coalesced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from sqlalchemy import event

from tests.conftest import World
from tests.waiting import until
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db import direct
from threadline.db.engine import Database
from threadline.events.bus import MemoryBus, RedisBus
from threadline.events.channels import parse
from threadline.events.hub import Hub

ALL = frozenset({"conversations-read"})


@pytest.fixture
async def hub(db: Database) -> AsyncIterator[Hub]:
    """A started hub, woken by this process's commits."""
    started = Hub(db, poll_interval=0.2)
    await started.start()
    db.commit_listeners.append(lambda _app: started.wake())
    yield started
    await started.stop()


async def test_a_slow_client_is_dropped_and_the_others_get_everything(
    db: Database, world: World
) -> None:
    hub = Hub(db, poll_interval=0.2, queue_size=3)
    await hub.start()
    db.commit_listeners.append(lambda _app: hub.wake())
    channels = parse(f"conversation_reply.{world.app_id}", world.app_id, ALL)
    try:
        slow = await hub.subscribe(world.app_id, channels, after=None, id_as_string=False)
        hub.queue_size = 100
        fast = await hub.subscribe(world.app_id, channels, after=None, id_as_string=False)
        received: list[bytes] = []

        async def consume() -> None:
            async for _tag, message in hub.stream(fast, 5.0, replay=False):
                if message:
                    received.append(message)
                if len(received) == 10:
                    return

        consumer = asyncio.create_task(consume())
        for i in range(10):
            await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body=f"{i}"))
            await asyncio.sleep(0)
        await asyncio.wait_for(consumer, 10)
        assert slow.dropped
        assert slow not in hub.clients
        assert fast in hub.clients
        # The dropped client got what fitted in its queue (3 events, not all of them for
        # its channel), then the end of its stream.
        kept = [m async for _t, m in hub.stream(slow, 0.1, replay=False) if m]
        assert 1 <= len(kept) <= 3
        last = int(kept[-1].split(b'"tag":"')[1].split(b'"')[0])
        # Back with its last tag: the rest, from the log.
        again = await hub.subscribe(world.app_id, channels, after=last, id_as_string=False)
        rest: list[bytes] = []
        async for _tag, message in hub.stream(again, 0.2, replay=True):
            if not message:
                break
            rest.append(message)
        assert len(kept) + len(rest) == 10
        assert [m.split(b'"body":"')[1][:1] for m in kept + rest] == [
            str(i).encode() for i in range(10)
        ]
    finally:
        await hub.stop()


async def test_wake_ups_are_coalesced_while_the_bus_is_away() -> None:
    bus = RedisBus("redis://127.0.0.1:1/0", "nowhere")  # nothing listens there
    for _ in range(100):
        bus.publish({"kind": "log", "app": 1})
    assert bus._outbox.qsize() == 1
    bus.publish({"kind": "typing", "app": 1})
    assert bus._outbox.qsize() == 2
    await bus.close()


async def test_the_memory_bus_delivers_in_this_process() -> None:
    got: list[dict[str, object]] = []
    bus = MemoryBus()
    await bus.start(got.append)
    bus.publish({"kind": "log"})
    await asyncio.sleep(0)
    assert got == [{"kind": "log"}]
    await bus.close()


async def _next_message(stream: AsyncIterator[tuple[str | None, bytes]]) -> bytes:
    async with asyncio.timeout(10):
        async for _tag, message in stream:
            if message:
                return message
    raise AssertionError("the stream ended")


async def test_clients_of_one_channel_share_one_serialised_message(
    hub: Hub, db: Database, world: World
) -> None:
    app = world.app_id
    operators = parse(f"conversation_reply.{app}", app, ALL)
    own = parse(f"conversation_reply.{app}.{world.user_id}", app, frozenset({"as-user"}))
    first = await hub.subscribe(app, operators, after=None, id_as_string=False)
    second = await hub.subscribe(app, operators, after=None, id_as_string=False)
    strings = await hub.subscribe(app, operators, after=None, id_as_string=True)
    user = await hub.subscribe(app, own, after=None, id_as_string=False)
    streams = [hub.stream(c, 5.0, replay=False) for c in (first, second, strings, user)]
    await service.start_by_user(db, app, world.user_id, ev.UserReply(body="hello"))
    a, b, c, d = [await _next_message(s) for s in streams]
    assert a is b  # serialised once for every client of the channel
    assert orjson.loads(a)["channel"] == f"conversation_reply.{app}"
    parsed = orjson.loads(c)
    assert parsed["message"]["id"] == str(orjson.loads(a)["message"]["id"])
    assert parsed["message"]["conversation"] == str(orjson.loads(a)["message"]["conversation"])
    assert orjson.loads(d)["channel"] == f"conversation_reply.{app}.{world.user_id}"
    assert d is not a
    for stream in streams:
        await stream.aclose()


async def test_an_idle_client_gets_heartbeats_and_a_gone_one_no_timer(
    db: Database, world: World
) -> None:
    hub = Hub(db, poll_interval=0.2)
    await hub.start()
    channels = parse(f"conversation.{world.app_id}", world.app_id, ALL)
    try:
        client = await hub.subscribe(world.app_id, channels, after=None, id_as_string=False)
        stream = hub.stream(client, 0.05, replay=False)
        beats = 0
        async with asyncio.timeout(10):
            async for _tag, message in stream:
                assert message == b""  # nothing happened: only heartbeats
                beats += 1
                if beats == 3:
                    break
        await stream.aclose()
        hub.unsubscribe(client)
        assert client._beat is None
        assert client.queue.qsize() <= 1  # no timer keeps filling the queue of a gone client
        # A live client with the same period gets three more beats meanwhile: the gone one's
        # timer, had it been left running, would have fired as often.
        live = await hub.subscribe(world.app_id, channels, after=None, id_as_string=False)
        live_stream = hub.stream(live, 0.05, replay=False)
        beats = 0
        async with asyncio.timeout(10):
            async for _tag, message in live_stream:
                assert message == b""
                beats += 1
                if beats == 3:
                    break
        await live_stream.aclose()
        hub.unsubscribe(live)
        assert client.queue.qsize() <= 1
    finally:
        await hub.stop()


async def test_without_clients_commits_cost_no_read_and_a_first_client_starts_at_now(
    hub: Hub, db: Database, world: World
) -> None:
    log_reads: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM events" in statement or "pg_current_snapshot" in statement:
            log_reads.append(statement)

    def seen_direct(statement: str, _args: Any) -> None:
        seen(None, None, statement)

    engines = {db.read_engine.sync_engine, db.write_engine.sync_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", seen)
    direct.observers.append(seen_direct)  # the statements sent straight to the driver
    app = world.app_id
    try:
        for i in range(3):
            await service.start_by_user(db, app, world.user_id, ev.UserReply(body=f"{i}"))
        # The writes woke the reader: once it has taken the wake-up (cleared it), it has
        # decided whether to read.
        await until(lambda: not hub._wake.is_set(), "the hub's reader took the wake-up")
        assert log_reads == []
        # The first client starts after those writes: it gets the next one, not them.
        client = await hub.subscribe(
            app, parse(f"conversation.{app}", app, ALL), after=None, id_as_string=False
        )
        assert log_reads  # the subscriber read where "now" is
        stream = hub.stream(client, 5.0, replay=False)
        now = await service.start_by_user(db, app, world.user_id, ev.UserReply(body="now"))
        message = orjson.loads(await _next_message(stream))
        assert message["message"]["conversation"] == now.state.id
        await stream.aclose()
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", seen)
        direct.observers.remove(seen_direct)
