"""The event log in storage: one row per committed change, in commit-safe cursor order.

Every kind of write appends its events in the write's own transaction; refused, rolled
back and retried writes append nothing; each app reads only its own events. On PostgreSQL,
an event is served only once every transaction that could still add an event below it has
ended, so a reader that moves its cursor never skips an event committed later; and per
conversation, log order is commit order.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import World, postgres_base_url
from threadline.conversations import service
from threadline.conversations.repository import ConversationRepository
from threadline.core import eventlog
from threadline.core import events as ev
from threadline.core.enums import AssistantType, AuthorKind, MessageStatus
from threadline.core.errors import InvalidParameter
from threadline.core.model import Author
from threadline.db.direct import DriverConnection
from threadline.db.engine import Database, async_url
from threadline.events import repository as log
from threadline.users import service as users


def admin(world: World) -> Author:
    return Author(AuthorKind.ADMIN, world.admin_id)


async def all_events(
    db: Database, app_id: int | None, after: int = 0, limit: int = 7
) -> tuple[list[log.StoredEvent], int]:
    """Every committed event after `after`, read a page at a time; and the final position.

    Waits while committed events are held back by transactions still running elsewhere.
    """
    found: list[log.StoredEvent] = []
    for _ in range(3000):
        async with db.read() as conn:
            batch = await log.read_after(conn, after, limit, app_id)
        assert batch.position >= after
        found.extend(batch.events)
        after = batch.position
        if batch.complete and not batch.pending:
            return found, after
        if not batch.events:
            await asyncio.sleep(0.01)
    raise AssertionError("events held back for 30 s")


async def test_every_kind_of_write_appends_its_events(db: Database, world: World) -> None:
    a = admin(world)
    out = await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="Hi"))
    cid = out.state.id
    first_part = out.parts[0].id
    for event in (
        ev.AdminReply(author=a, body="Hello!"),
        ev.ContentPart(type=eventlog.PartType.NOTE, author=a, body="VIP"),
        ev.ReadByUser(),
        ev.UserReply(body="Thanks"),
        ev.ReadByAdmin(),
        ev.Assign(world.admin_id, a),
        ev.AddTag("vip", a),
        ev.RemoveTag("vip", a),
        ev.ChangeChannel(world.channel_id, a),
        ev.Delay(datetime.now(UTC) + timedelta(days=1), a),
        ev.Close(a),
        ev.Reopen(a),
        ev.BotTakeOver(AssistantType.LEAD_BOT),
        ev.BotHandOff(admin_id=world.other_admin_id, by=a),
    ):
        await service.perform(db, world.app_id, cid, event)
    message = await service.start_by_message(
        db,
        world.app_id,
        world.user_id,
        body="Sale!",
        sender=Author(AuthorKind.SENDER, world.sender_id),
    )
    await service.perform(
        db, world.app_id, message.outcome.state.id, ev.UpdateStatus(MessageStatus.DELIVERED)
    )
    await users.erase(db, world.app_id, world.user_id)

    found, _ = await all_events(db, world.app_id)
    assert [e.type for e in found] == [
        "conversation_started",
        "conversation_reply",
        "conversation_reply",
        "conversation_reply",
        "conversation_read",
        "conversation_reply",
        "conversation_read",
        "conversation_assigned",
        "conversation_tag_added",
        "conversation_tag_deleted",
        "conversation_channel_changed",
        "conversation_delayed",
        "conversation_closed",
        "conversation_reopened",
        "conversation_updated",
        "conversation_service",
        "conversation_assigned",
        "conversation_started",
        "conversation_reply",
        "conversation_updated",
        "conversation_removed",
        "conversation_removed",
    ]
    assert all(e.app_id == world.app_id and e.user_id == world.user_id for e in found)
    assert [e.id for e in found] == sorted({e.id for e in found})
    assert found[0].data["started_by"] == "user"
    assert found[0].data["changes"]["replies_count"] == 1
    assert found[1].data == {"part": {"id": first_part, "type": "reply_user"}}
    assert found[4].data == {"changes": {"user_unread_count": 0, "unread_parts_count": 0},
                             "read_by": "user"}  # fmt: skip
    assert found[7].data["changes"]["assignee"] == world.admin_id
    assert found[14].data == {"changes": {"assistant_type": "lead_bot"}}
    assert found[16].data["changes"]["assignee"] == world.other_admin_id
    assert found[17].data["started_by"] == "message"
    assert found[19].data == {"changes": {"status": "delivered"}}
    assert {e.conversation_id for e in found[-2:]} == {cid, message.outcome.state.id}


async def test_refused_retried_and_unchanged_writes_append_nothing(
    db: Database, world: World
) -> None:
    a = admin(world)
    out = await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="Hi"))
    cid = out.state.id
    _, position = await all_events(db, world.app_id)
    # Refused halfway: the reply before the bad tag is rolled back with it.
    with pytest.raises(InvalidParameter):
        await service.perform(
            db, world.app_id, cid, ev.AdminReply(author=a, body="x"), ev.AddTag("", a)
        )
    await service.perform(db, world.app_id, cid, ev.Reopen(a))  # already open: no change
    await service.perform(db, world.app_id, cid, ev.ReadByAdmin(), ev.ReadByAdmin())
    await service.perform(db, world.app_id, cid, ev.AdminReply(author=a, body="y", random_id=5))
    again = await service.perform(
        db, world.app_id, cid, ev.AdminReply(author=a, body="y", random_id=5)
    )
    assert again.duplicate
    found, _ = await all_events(db, world.app_id, position)
    assert [e.type for e in found] == ["conversation_read", "conversation_reply"]


async def test_each_app_reads_only_its_own_events(db: Database, world: World) -> None:
    mine = await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="a"))
    theirs = await service.start_by_user(
        db, world.foreign_app_id, world.foreign_user_id, ev.UserReply(body="b")
    )
    found, _ = await all_events(db, world.app_id)
    assert {e.conversation_id for e in found} == {mine.state.id}
    found, _ = await all_events(db, world.foreign_app_id)
    assert {e.conversation_id for e in found} == {theirs.state.id}
    everything, position = await all_events(db, None, limit=3)
    assert len(everything) == 4
    async with db.read() as conn:
        assert position <= await log.head(conn)
        empty = await log.read_after(conn, position, 10)
    assert empty.events == []
    assert empty.complete
    assert empty.position >= position


async def test_commit_listeners_hear_only_committed_writes(db: Database, world: World) -> None:
    heard: list[int] = []
    db.commit_listeners.append(heard.append)
    out = await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="a"))
    with pytest.raises(InvalidParameter):
        await service.perform(db, world.app_id, out.state.id, ev.AddTag("", admin(world)))
    await service.perform(db, world.app_id, out.state.id, ev.Reopen(admin(world)))  # no change
    await service.perform(db, world.app_id, out.state.id, ev.ReadByAdmin())
    assert heard == [world.app_id, world.app_id]


# --- PostgreSQL: concurrent transactions -------------------------------------------------


@pytest.fixture
def pg(db: Database) -> Database:
    if db.is_sqlite:
        pytest.skip("SQLite serialises writes: every committed event is final")
    return db


async def test_an_event_waits_for_older_transactions_and_is_never_skipped(
    pg: Database, world: World
) -> None:
    a = admin(world)
    one = await service.start_by_user(pg, world.app_id, world.user_id, ev.UserReply(body="1"))
    two = await service.start_by_user(pg, world.app_id, world.user_id, ev.UserReply(body="2"))
    _, position = await all_events(pg, world.app_id)

    holding, release = asyncio.Event(), asyncio.Event()

    async def slow_write() -> None:
        async with pg.write() as conn:  # a write of this shape: lock, change, append
            await conn.execute(
                text("SELECT id FROM conversations WHERE id = :c FOR UPDATE"),
                {"c": one.state.id},
            )
            await log.append(
                DriverConnection(conn),
                world.app_id,
                datetime.now(UTC),
                [eventlog.LogEvent("conversation_updated", one.state.id, world.user_id, {})],
            )
            holding.set()
            await release.wait()

    slow = asyncio.create_task(slow_write())
    await holding.wait()
    # A younger transaction commits an event while the older one is still open.
    await service.perform(pg, world.app_id, two.state.id, ev.AdminReply(author=a, body="x"))
    async with pg.read() as conn:
        batch = await log.read_after(conn, position, 50, world.app_id)
    assert batch.events == []
    assert batch.pending
    assert batch.complete
    assert batch.position >= position
    release.set()
    await slow
    found, _ = await all_events(pg, world.app_id, batch.position)
    assert [e.type for e in found] == ["conversation_updated", "conversation_reply"]
    assert found[0].conversation_id == one.state.id


async def test_a_long_write_in_another_database_does_not_hold_events_back(
    pg: Database, world: World
) -> None:
    """The horizon counts this database's transactions only."""
    other = create_async_engine(async_url(postgres_base_url() or ""))
    try:
        async with other.connect() as conn:
            await conn.execute(text("SELECT pg_current_xact_id()"))  # holds a transaction id
            _, position = await all_events(pg, world.app_id)
            await service.start_by_user(
                pg, world.app_id, world.user_id, ev.UserReply(body="not held back")
            )
            async with pg.read() as read:
                batch = await log.read_after(read, position, 50, world.app_id)
            assert [e.type for e in batch.events] == ["conversation_started", "conversation_reply"]
            assert not batch.pending
            await conn.rollback()
    finally:
        await other.dispose()


async def test_a_writer_waiting_for_a_conversation_has_no_transaction_id_yet(
    pg: Database, world: World
) -> None:
    """What per-conversation order rests on: a writer gets its transaction id only once the
    previous writer of the conversation has ended (even one that updated the row)."""
    out = await service.start_by_user(pg, world.app_id, world.user_id, ev.UserReply(body="1"))
    xid = text("SELECT pg_current_xact_id_if_assigned()::text")
    held, release = asyncio.Event(), asyncio.Event()
    waiting: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def holder() -> int:
        async with pg.write() as conn:
            repo = ConversationRepository(conn)
            state = await repo.lock(world.app_id, out.state.id)
            assert state is not None
            await conn.execute(
                text("UPDATE conversations SET parts_count = parts_count WHERE id = :c"),
                {"c": out.state.id},
            )
            held.set()
            await release.wait()
            return int((await conn.execute(xid)).scalar_one())

    async def waiter() -> int:
        await held.wait()
        async with pg.write() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            waiting.set_result(int(pid))
            assert await ConversationRepository(conn).lock(world.app_id, out.state.id)
            return int((await conn.execute(xid)).scalar_one())

    first = asyncio.create_task(holder())
    second = asyncio.create_task(waiter())
    pid = await waiting
    activity = text(
        "SELECT wait_event_type, wait_event, backend_xid FROM pg_stat_activity WHERE pid = :p"
    )
    async with pg.read() as conn:
        for _ in range(500):
            row = (await conn.execute(activity, {"p": pid})).one()
            if row.wait_event_type == "Lock":
                break
            await asyncio.sleep(0.01)
    assert (row.wait_event_type, row.wait_event) == ("Lock", "advisory")
    assert row.backend_xid is None
    release.set()
    assert await second > await first


async def assert_log_in_part_order(
    db: Database, app_id: int, events: list[log.StoredEvent]
) -> None:
    """Per conversation, the events' parts are in the order the parts were stored."""
    by_conversation: dict[int, list[int]] = defaultdict(list)
    for e in events:
        by_conversation[e.conversation_id].append(e.data["part"]["id"])
    for cid, part_ids in by_conversation.items():
        parts = await service.get_parts(db, app_id, cid)
        assert part_ids == [p.id for p in parts][1:], "log order is the parts' stored order"


async def writers_and_a_moving_reader(
    dbs: list[Database], world: World, conversations: int, writers: int, writes: int
) -> None:
    """`writers` tasks, spread over `dbs`, each make `writes` replies to a few conversations;
    a reader polling all along sees every event once, and per conversation in the order the
    parts were stored (the lock order)."""
    first = dbs[0]
    a = admin(world)
    cids = [
        (
            await service.start_by_user(
                first, world.app_id, world.user_id, ev.UserReply(body=f"{i}")
            )
        ).state.id
        for i in range(conversations)
    ]
    _, start = await all_events(first, world.app_id)
    done = asyncio.Event()
    seen: list[log.StoredEvent] = []

    async def reader() -> None:
        position = start
        while True:
            finished = done.is_set()
            async with first.read() as conn:
                batch = await log.read_after(conn, position, 5, world.app_id)
            seen.extend(batch.events)
            position = batch.position
            if finished and batch.complete and not batch.pending:
                return
            await asyncio.sleep(0)

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        db = dbs[seed % len(dbs)]
        for i in range(writes):
            cid = rng.choice(cids)
            event = (
                ev.UserReply(body=f"u{seed}-{i}")
                if rng.random() < 0.5
                else ev.AdminReply(author=a, body=f"a{seed}-{i}")
            )
            await service.perform(db, world.app_id, cid, event)

    polling = asyncio.create_task(reader())
    await asyncio.gather(*(writer(s) for s in range(writers)))
    done.set()
    await asyncio.wait_for(polling, 30)

    stored, _ = await all_events(first, world.app_id, start, limit=500)
    assert len(stored) == writers * writes
    assert [e.id for e in seen] == [e.id for e in stored], "every event once, in id order"
    assert {e.conversation_id for e in stored} <= set(cids)
    await assert_log_in_part_order(first, world.app_id, seen)


async def test_concurrent_writers_and_a_moving_reader(pg: Database, world: World) -> None:
    """Many writers on a few conversations, seen by a moving reader. Without the advisory
    lock taken before the row lock, this fails: writers woken together take their
    transaction ids in one order and the row lock in another."""
    await writers_and_a_moving_reader([pg], world, conversations=4, writers=6, writes=15)
