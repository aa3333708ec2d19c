"""The per-process hub on its own: bounded queues drop the slow client, not the others;
a dropped client resumes from its last tag; the bus wake-ups are coalesced."""

from __future__ import annotations

import asyncio

from tests.conftest import World
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db.engine import Database
from threadline.events.bus import MemoryBus, RedisBus
from threadline.events.channels import parse
from threadline.events.hub import Hub

ALL = frozenset({"conversations-read"})


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
