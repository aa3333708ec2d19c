"""Retries: the same non-zero random_id, conversation and kind of write creates nothing new.

A retry answers the first result (`Outcome.duplicate`, the part the first request created).
The key is (conversation, kind of write, random_id); 0 and None mean no key. The unique
index on parts enforces it, also under concurrent requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from tests.conftest import World
from threadline.apps import service as apps
from threadline.conversations import service
from threadline.conversations.repository import ConversationRepository
from threadline.core import events as ev
from threadline.core.enums import AuthorKind, PartType
from threadline.core.model import Author, ConversationState, Part
from threadline.db.direct import NothingAdded
from threadline.db.engine import Database
from threadline.db.schema import conversation_parts

T0 = datetime(2025, 5, 5, 8, 30, 0, 125_000, tzinfo=UTC)
RID = 4_242_424_242_424  # beyond 32 bits: random_id is a 64-bit key


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def admin(world: World) -> Author:
    return Author(AuthorKind.ADMIN, world.admin_id)


async def start(db: Database, world: World, body: str = "Hi") -> int:
    out = await service.start_by_user(
        db, world.app_id, world.user_id, ev.UserReply(body=body), now=T0
    )
    await service.perform(db, world.app_id, out.state.id, ev.AddTag("old", by=admin(world)), now=T0)
    return out.state.id


async def stored(db: Database, world: World, cid: int) -> tuple[ConversationState, list[Part]]:
    return (
        await service.get_conversation(db, world.app_id, cid),
        await service.get_parts(db, world.app_id, cid),
    )


# Each write with random_id = RID, and the part type it creates.
WRITES: dict[str, tuple[Callable[[World], ev.Event], PartType, str]] = {
    "user_reply": (
        lambda w: ev.UserReply(body="Again?", random_id=RID),
        PartType.REPLY_USER,
        "reply",
    ),
    "admin_reply": (
        lambda w: ev.AdminReply(author=admin(w), body="Yes", random_id=RID),
        PartType.REPLY_ADMIN,
        "reply",
    ),
    "note": (
        lambda w: ev.ContentPart(PartType.NOTE, author=admin(w), body="n", random_id=RID),
        PartType.NOTE,
        "reply",
    ),
    "assign": (
        lambda w: ev.Assign(w.admin_id, by=admin(w), random_id=RID),
        PartType.ASSIGNED,
        "assign",
    ),
    "close": (lambda w: ev.Close(by=admin(w), random_id=RID), PartType.CLOSED, "close"),
    "tag_add": (
        lambda w: ev.AddTag("vip", by=admin(w), random_id=RID),
        PartType.TAG_ADDED,
        "tag",
    ),
    "tag_delete": (
        lambda w: ev.RemoveTag("old", by=admin(w), random_id=RID),
        PartType.TAG_DELETED,
        "untag",
    ),
    "delay": (
        lambda w: ev.Delay(T0 + timedelta(days=1), by=admin(w), random_id=RID),
        PartType.DELAYED,
        "delay",
    ),
    "channel": (
        lambda w: ev.ChangeChannel(w.channel_id, by=admin(w), random_id=RID),
        PartType.CHANNEL_CHANGED,
        "channel",
    ),
}


@pytest.mark.parametrize("write", list(WRITES))
async def test_retry_returns_the_first_result(db: Database, world: World, write: str) -> None:
    make, type_, kind = WRITES[write]
    cid = await start(db, world)
    first = await service.perform(db, world.app_id, cid, make(world), now=at(10))
    assert first.duplicate is False
    [part] = first.parts
    assert (part.type, part.random_id, part.random_kind) == (type_, RID, kind)
    after_first = await stored(db, world, cid)
    assert after_first[1][-1] == part  # the returned part is the stored one
    assert after_first[0].parts_count == 3

    for attempt in range(2):
        retry = await service.perform(db, world.app_id, cid, make(world), now=at(20 + attempt))
        assert retry.duplicate is True
        assert retry.parts == [part]
        assert retry.state == after_first[0]
        assert await stored(db, world, cid) == after_first
    assert await service.check(db) == []


async def test_retry_after_later_writes_creates_nothing(db: Database, world: World) -> None:
    """A late retry does not redo its write over the ones that followed it."""
    cid = await start(db, world)
    close = ev.Close(by=admin(world), random_id=RID)
    tag = ev.AddTag("vip", by=admin(world), random_id=RID)
    first_close = await service.perform(db, world.app_id, cid, close, now=at(1))
    first_tag = await service.perform(db, world.app_id, cid, tag, now=at(2))
    await service.perform(db, world.app_id, cid, ev.Reopen(by=admin(world)), now=at(3))
    await service.perform(db, world.app_id, cid, ev.RemoveTag("vip", by=admin(world)), now=at(4))
    before = await stored(db, world, cid)
    assert (before[0].closed, before[0].tags) == (False, ("old",))

    retry_close = await service.perform(db, world.app_id, cid, close, now=at(5))
    retry_tag = await service.perform(db, world.app_id, cid, tag, now=at(6))
    assert (retry_close.duplicate, retry_tag.duplicate) == (True, True)
    assert retry_close.parts == first_close.parts
    assert retry_tag.parts == first_tag.parts
    assert await stored(db, world, cid) == before
    assert await service.check(db) == []


async def test_retry_of_a_multi_event_call(db: Database, world: World) -> None:
    cid = await start(db, world)
    events = (
        ev.AdminReply(author=admin(world), body="Solved", random_id=RID),
        ev.Close(by=admin(world), random_id=RID + 1),
    )
    first = await service.perform(db, world.app_id, cid, *events, now=at(1))
    assert [p.type for p in first.parts] == [PartType.REPLY_ADMIN, PartType.CLOSED]
    before = await stored(db, world, cid)
    retry = await service.perform(db, world.app_id, cid, *events, now=at(2))
    assert retry.duplicate is True
    assert [p.id for p in retry.parts] == [first.parts[1].id]  # keyed by the last write's id
    assert await stored(db, world, cid) == before


async def test_start_by_user_retry(db: Database, world: World) -> None:
    reply = ev.UserReply(body="Hello", random_id=RID)
    first = await service.start_by_user(db, world.app_id, world.user_id, reply, now=T0)
    assert first.duplicate is False
    cid = first.state.id
    assert first.state.start_random_id == RID
    before = await stored(db, world, cid)
    retry = await service.start_by_user(db, world.app_id, world.user_id, reply, now=at(5))
    assert retry.duplicate is True
    assert retry.state == before[0]
    assert retry.parts == first.parts == before[1]
    assert await stored(db, world, cid) == before
    async with db.read() as conn:
        assert await ConversationRepository(conn).count() == 1

    # Another user with the same random_id starts a conversation of their own.
    other_user = await apps.create_user(db, world.app_id, site_user_id="u-2")
    other = await service.start_by_user(db, world.app_id, other_user, reply, now=at(6))
    assert other.duplicate is False
    assert other.state.id != cid
    async with db.read() as conn:
        assert await ConversationRepository(conn).count() == 2
    assert await service.check(db) == []


@pytest.mark.parametrize("random_id", [0, None])
async def test_start_by_user_without_key(db: Database, world: World, random_id: int | None) -> None:
    reply = ev.UserReply(body="Hello", random_id=random_id)
    first = await service.start_by_user(db, world.app_id, world.user_id, reply, now=T0)
    second = await service.start_by_user(db, world.app_id, world.user_id, reply, now=T0)
    assert (first.duplicate, second.duplicate) == (False, False)
    assert first.state.id != second.state.id
    assert first.state.start_random_id is second.state.start_random_id is None
    async with db.read() as conn:
        assert await ConversationRepository(conn).count() == 2


async def test_same_random_id_for_different_kinds(db: Database, world: World) -> None:
    cid = await start(db, world)
    created = []
    for i, event in enumerate(
        [
            ev.UserReply(body="Hi", random_id=RID),
            ev.Assign(world.admin_id, by=admin(world), random_id=RID),
            ev.Close(by=admin(world), random_id=RID),
            ev.Reopen(by=admin(world), random_id=RID),
            ev.AddTag("vip", by=admin(world), random_id=RID),
            ev.RemoveTag("vip", by=admin(world), random_id=RID),
            ev.Delay(at(3600), by=admin(world), random_id=RID),
            ev.ChangeChannel(world.channel_id, by=admin(world), random_id=RID),
        ]
    ):
        out = await service.perform(db, world.app_id, cid, event, now=at(i + 1))
        assert out.duplicate is False
        created.extend(out.parts)
    assert [(p.random_kind, p.random_id) for p in created] == [
        (kind, RID)
        for kind in ("reply", "assign", "close", "reopen", "tag", "untag", "delay", "channel")
    ]
    state, parts = await stored(db, world, cid)
    assert state.parts_count == len(parts) == 2 + 8
    assert await service.check(db) == []


@pytest.mark.parametrize("random_id", [0, None])
async def test_no_key_means_no_deduplication(
    db: Database, world: World, random_id: int | None
) -> None:
    cid = await start(db, world)
    reply = ev.UserReply(body="Hello?", random_id=random_id)
    note = ev.ContentPart(PartType.NOTE, author=admin(world), body="n", random_id=random_id)
    outs = [
        await service.perform(db, world.app_id, cid, event, now=at(i))
        for i, event in enumerate([reply, reply, note, note])
    ]
    assert [o.duplicate for o in outs] == [False] * 4
    ids = [o.parts[0].id for o in outs]
    assert len(set(ids)) == 4
    state, parts = await stored(db, world, cid)
    assert [p.id for p in parts[2:]] == ids
    assert all(p.random_id is None and p.random_kind is None for p in parts)
    assert (state.parts_count, state.replies_count, state.admin_unread_count) == (6, 3, 3)
    assert await service.check(db) == []


async def test_key_is_per_conversation(db: Database, world: World) -> None:
    first_cid = await start(db, world, "first")
    second_cid = await start(db, world, "second")
    event = ev.UserReply(body="Same key", random_id=RID)
    a = await service.perform(db, world.app_id, first_cid, event, now=at(1))
    b = await service.perform(db, world.app_id, second_cid, event, now=at(2))
    assert (a.duplicate, b.duplicate) == (False, False)
    assert a.parts[0].id != b.parts[0].id
    assert a.parts[0].conversation_id == first_cid
    assert b.parts[0].conversation_id == second_cid
    for cid in (first_cid, second_cid):
        state, parts = await stored(db, world, cid)
        assert (state.parts_count, len(parts), parts[-1].random_id) == (3, 3, RID)
    assert await service.check(db) == []


# --- concurrency -----------------------------------------------------------------------------

CONCURRENT = 20


@pytest.mark.parametrize("write", ["user_reply", "tag_add", "close"])
async def test_concurrent_retries_create_one_part(db: Database, world: World, write: str) -> None:
    make, type_, _ = WRITES[write]
    cid = await start(db, world)
    # PostgreSQL: one Database (and connection pool) per request, so that the transactions
    # really run in parallel. SQLite serialises writers anyway; one Database is enough.
    dbs = [Database(db.url) for _ in range(CONCURRENT)] if not db.is_sqlite else [db] * CONCURRENT
    try:
        outs = await asyncio.gather(
            *(
                service.perform(d, world.app_id, cid, make(world), now=at(10 + i))
                for i, d in enumerate(dbs)
            )
        )
    finally:
        if not db.is_sqlite:
            await asyncio.gather(*(d.dispose() for d in dbs))
    assert sorted(o.duplicate for o in outs) == [False] + [True] * (CONCURRENT - 1)
    ids = {p.id for o in outs for p in o.parts}
    assert len(ids) == 1
    state, parts = await stored(db, world, cid)
    assert [p.type for p in parts] == [PartType.REPLY_USER, PartType.TAG_ADDED, type_]
    assert parts[-1].id in ids
    assert state.parts_count == 3
    assert await service.check(db) == []


# --- the unique index ------------------------------------------------------------------------


class _Rollback(Exception):
    pass


async def test_unique_index_enforces_the_key(db: Database, world: World) -> None:
    cid = await start(db, world)
    first = await service.perform(
        db, world.app_id, cid, ev.UserReply(body="Once", random_id=RID), now=at(1)
    )
    [existing] = first.parts
    before = await stored(db, world, cid)
    again = dataclasses.replace(existing, id=-1, body="Twice", created=at(2))

    async def insert_then_roll_back() -> None:
        async with db.write() as conn:
            repo = ConversationRepository(conn)
            if db.is_sqlite:
                assert await repo.insert_part(again) is None
            else:  # the INSERT is deferred: the used key shows when it is sent
                await repo.insert_part(again)
                with pytest.raises(NothingAdded):
                    await repo.driver.flush()
            # Another kind or another random_id is a different key: it inserts.
            other_kind = dataclasses.replace(again, random_kind="assign")
            assert isinstance(await repo.insert_part(other_kind), int)
            other_id = dataclasses.replace(again, random_id=RID + 1)
            assert isinstance(await repo.insert_part(other_id), int)
            raise _Rollback

    with pytest.raises(_Rollback):
        await insert_then_roll_back()

    # Without ON CONFLICT, the database itself refuses the row.
    with pytest.raises(IntegrityError):
        async with db.write() as conn:
            await conn.execute(
                conversation_parts.insert().values(
                    conversation_id=cid,
                    created=at(3),
                    type=PartType.REPLY_USER.value,
                    author_kind=AuthorKind.USER.value,
                    author_id=world.user_id,
                    sent_via=existing.sent_via.value,
                    body="Twice",
                    read=False,
                    random_id=RID,
                    random_kind="reply",
                )
            )
    assert await stored(db, world, cid) == before
    assert await service.check(db) == []
