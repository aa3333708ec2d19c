"""Every bad input is refused with its typed error, and nothing is changed.

Each test snapshots the stored conversation and its parts (and the row counts) before the
refused call and compares them after it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from tests.conftest import World
from threadline.apps.repository import AppRepository
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import CONTENT_TYPES, AuthorKind, MessageStatus, PartType
from threadline.core.errors import (
    ConversationRemoved,
    DomainError,
    InvalidParameter,
    NotFound,
    ReplyTooBig,
)
from threadline.core.model import Attachment, Author, ConversationState, Part
from threadline.core.rules import MAX_BODY_CHARS, MAX_TAG_CHARS
from threadline.db.engine import Database
from threadline.db.schema import conversation_parts, conversations, messages

T0 = datetime(2025, 4, 1, 12, 0, 0, 500_000, tzinfo=UTC)
NOW = T0 + timedelta(minutes=10)

Snapshot = tuple[ConversationState, list[Part], dict[str, int]]


def admin(world: World) -> Author:
    return Author(AuthorKind.ADMIN, world.admin_id)


async def row_counts(db: Database) -> dict[str, int]:
    counts = {}
    async with db.read() as conn:
        for table in (conversations, conversation_parts, messages):
            query = select(func.count()).select_from(table)
            counts[table.name] = int((await conn.execute(query)).scalar_one())
    return counts


async def snapshot(db: Database, app_id: int, cid: int) -> Snapshot:
    state = await service.get_conversation(db, app_id, cid)
    parts = await service.get_parts(db, app_id, cid)
    return state, parts, await row_counts(db)


async def conversation(db: Database, world: World) -> int:
    """A conversation with a few parts of different kinds."""
    out = await service.start_by_user(
        db, world.app_id, world.user_id, ev.UserReply(body="Hi"), now=T0
    )
    cid = out.state.id
    await service.perform(
        db,
        world.app_id,
        cid,
        ev.AdminReply(author=admin(world), body="Hello"),
        ev.AddTag("vip", by=admin(world)),
        ev.UserReply(body="Thanks"),
        now=T0 + timedelta(minutes=1),
    )
    return cid


async def foreign_sender_id(db: Database, world: World) -> int:
    async with db.read() as conn:
        app = await AppRepository(conn).app(world.foreign_app_id)
    assert app is not None
    sender_id = app["default_sender_id"]
    assert isinstance(sender_id, int)
    assert sender_id != world.sender_id
    return sender_id


async def refused(
    db: Database, world: World, cid: int, error: type[DomainError], *events: ev.Event
) -> DomainError:
    """Perform `events`, expect `error`, and check that nothing was stored."""
    before = await snapshot(db, world.app_id, cid)
    with pytest.raises(error) as caught:
        await service.perform(db, world.app_id, cid, *events, now=NOW)
    assert type(caught.value) is error
    assert await snapshot(db, world.app_id, cid) == before
    return caught.value


# --- unknown conversation, conversation of another app ---------------------------------------


async def test_unknown_conversation(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    before = await snapshot(db, world.app_id, cid)
    missing = cid + 1000
    with pytest.raises(NotFound) as caught:
        await service.perform(db, world.app_id, missing, ev.UserReply(body="x"), now=NOW)
    assert (caught.value.kind, caught.value.error_name, caught.value.status) == (
        "conversation",
        "NotFound",
        404,
    )
    assert caught.value.message == f"conversation {missing} not found"
    with pytest.raises(NotFound):
        await service.get_conversation(db, world.app_id, missing)
    with pytest.raises(NotFound):
        await service.get_parts(db, world.app_id, missing)
    assert await snapshot(db, world.app_id, cid) == before


async def test_conversation_of_another_app_is_not_found(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    theirs = await service.start_by_user(
        db, world.foreign_app_id, world.foreign_user_id, ev.UserReply(body="Hej"), now=T0
    )
    fid = theirs.state.id
    ours_before = await snapshot(db, world.app_id, cid)
    theirs_before = await snapshot(db, world.foreign_app_id, fid)
    missing = fid + 1000

    async def not_found(call: Callable[[int], object]) -> tuple[object, ...]:
        """The error for the foreign id, shaped exactly like the one for a missing id."""
        answers = []
        for ident in (fid, missing):
            with pytest.raises(NotFound) as caught:
                await call(ident)  # type: ignore[misc]
            e = caught.value
            answers.append((e.kind, e.error_name, e.status, e.message.replace(str(ident), "ID")))
        assert answers[0] == answers[1]
        return answers[0]

    assert await not_found(
        lambda i: service.perform(db, world.app_id, i, ev.UserReply(body="x"), now=NOW)
    ) == ("conversation", "NotFound", 404, "conversation ID not found")
    await not_found(
        lambda i: service.perform(
            db, world.app_id, i, ev.AdminReply(author=admin(world), body="x"), now=NOW
        )
    )
    await not_found(lambda i: service.perform(db, world.app_id, i, ev.Remove(), now=NOW))
    await not_found(lambda i: service.get_conversation(db, world.app_id, i))
    await not_found(lambda i: service.get_parts(db, world.app_id, i))
    # And the other way round: the foreign app cannot reach ours.
    with pytest.raises(NotFound):
        await service.perform(db, world.foreign_app_id, cid, ev.ReadByAdmin(), now=NOW)
    assert await snapshot(db, world.app_id, cid) == ours_before
    assert await snapshot(db, world.foreign_app_id, fid) == theirs_before


# --- delay -----------------------------------------------------------------------------------


async def test_delay_not_in_the_future(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    for until in (NOW - timedelta(days=1), NOW - timedelta(microseconds=1), NOW):
        error = await refused(db, world, cid, InvalidParameter, ev.Delay(until, by=admin(world)))
        assert isinstance(error, InvalidParameter)
        assert error.param == "until"


async def test_delay_just_in_the_future_is_fine(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    until = NOW + timedelta(microseconds=1)
    await service.perform(db, world.app_id, cid, ev.Delay(until, by=admin(world)), now=NOW)
    state = await service.get_conversation(db, world.app_id, cid)
    assert state.delayed_until == until


# --- tags ------------------------------------------------------------------------------------


async def test_bad_tag(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    for tag in ("", " ", "\t\n  ", "x" * (MAX_TAG_CHARS + 1), "é" * (MAX_TAG_CHARS + 1)):
        for strict in (True, False):
            for event in (
                ev.AddTag(tag, by=admin(world), strict=strict),
                ev.RemoveTag(tag, by=admin(world), strict=strict),
            ):
                error = await refused(db, world, cid, InvalidParameter, event)
                assert isinstance(error, InvalidParameter)
                assert error.param == "tag"


async def test_tag_of_255_characters_is_fine(db: Database, world: World) -> None:
    assert MAX_TAG_CHARS == 255
    cid = await conversation(db, world)
    tag = "é" * 255
    out = await service.perform(db, world.app_id, cid, ev.AddTag(tag, by=admin(world)), now=NOW)
    assert [p.tag for p in out.parts] == [tag]
    state = await service.get_conversation(db, world.app_id, cid)
    assert state.tags == ("vip", tag)
    parts = await service.get_parts(db, world.app_id, cid)
    assert (parts[-1].type, parts[-1].tag) == (PartType.TAG_ADDED, tag)
    assert await service.check(db) == []


# --- references to another app ----------------------------------------------------------------


async def test_assignee_of_another_app(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    for event in (
        ev.Assign(world.foreign_admin_id, by=admin(world)),
        ev.BotHandOff(admin_id=world.foreign_admin_id),
    ):
        error = await refused(db, world, cid, NotFound, event)
        assert isinstance(error, NotFound)
        assert error.kind == "admin"


async def test_channel_of_another_app(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    error = await refused(
        db, world, cid, NotFound, ev.ChangeChannel(world.foreign_channel_id, by=admin(world))
    )
    assert isinstance(error, NotFound)
    assert error.kind == "channel"


async def test_author_of_another_app(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    foreign = Author(AuthorKind.ADMIN, world.foreign_admin_id)
    for event in (
        ev.AdminReply(author=foreign, body="Hi"),
        ev.ContentPart(PartType.NOTE, author=foreign, body="psst"),
        ev.Assign(world.admin_id, by=foreign),
        ev.Close(by=foreign),
        ev.AddTag("new", by=foreign),
        ev.Delay(NOW + timedelta(hours=1), by=foreign),
    ):
        error = await refused(db, world, cid, NotFound, event)
        assert isinstance(error, NotFound)
        assert error.kind == "admin"
    sender = Author(AuthorKind.SENDER, await foreign_sender_id(db, world))
    error = await refused(db, world, cid, NotFound, ev.AdminReply(author=sender, body="Hi"))
    assert isinstance(error, NotFound)
    assert error.kind == "sender"


async def test_operator_reply_written_by_a_user(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    user = Author(AuthorKind.USER, world.user_id)
    for event in (
        ev.AdminReply(author=user, body="Hi"),
        ev.ContentPart(PartType.NOTE, author=user, body="Hi"),
    ):
        error = await refused(db, world, cid, InvalidParameter, event)
        assert isinstance(error, InvalidParameter)
        assert error.param == "from_admin"


# --- part types ------------------------------------------------------------------------------


async def test_content_part_of_a_non_content_type(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    not_content = [t for t in PartType if t not in CONTENT_TYPES]
    assert PartType.ASSIGNED in not_content
    assert PartType.REPLY_USER in not_content
    assert len(not_content) == 10  # two replies and the eight system types
    for type_ in not_content:
        error = await refused(
            db, world, cid, InvalidParameter, ev.ContentPart(type_, author=admin(world), body="x")
        )
        assert isinstance(error, InvalidParameter)
        assert error.param == "type"


# --- removed conversation --------------------------------------------------------------------


async def test_writes_to_a_removed_conversation(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    await service.perform(db, world.app_id, cid, ev.Remove(), now=T0 + timedelta(minutes=5))
    for event in (
        ev.UserReply(body="Still there?"),
        ev.AdminReply(author=admin(world), body="Yes"),
        ev.ContentPart(PartType.NOTE, author=admin(world), body="n"),
        ev.Assign(world.admin_id, by=admin(world)),
        ev.Close(by=admin(world)),
        ev.AddTag("late", by=admin(world)),
        ev.ReadByAdmin(),
    ):
        error = await refused(db, world, cid, ConversationRemoved, event)
        assert isinstance(error, ConversationRemoved)
        assert isinstance(error, InvalidParameter)
        assert error.param == "id"
    assert await service.check(db) == []


# --- message status --------------------------------------------------------------------------


async def test_status_update_without_a_message(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    error = await refused(
        db, world, cid, InvalidParameter, ev.UpdateStatus(MessageStatus.DELIVERED)
    )
    assert isinstance(error, InvalidParameter)
    assert error.param == "status"


def test_status_outside_the_list() -> None:
    for value in ("bogus", "", "Delivered", "DELIVERED", "opened", " sent", "sent "):
        with pytest.raises(ValueError, match="is not a valid MessageStatus"):
            MessageStatus(value)


def test_status_list() -> None:
    assert [s.value for s in MessageStatus] == [
        "created",
        "rendered",
        "sent",
        "accepted",
        "delivered",
        "bounced",
        "complained",
        "dropped",
        "error",
    ]


# --- bodies ----------------------------------------------------------------------------------


def _author_events(world: World, body: str, **extra: object) -> list[ev.Event]:
    return [
        ev.UserReply(body=body, **extra),  # type: ignore[arg-type]
        ev.AdminReply(author=admin(world), body=body, **extra),  # type: ignore[arg-type]
        ev.ContentPart(PartType.NOTE, author=admin(world), body=body, **extra),  # type: ignore[arg-type]
    ]


async def test_body_too_big(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    attachment = Attachment(id=1, size=1, filename="a.txt", mime_type="text/plain")
    for event in _author_events(world, "x" * (MAX_BODY_CHARS + 1)) + _author_events(
        world, "y" * (MAX_BODY_CHARS + 1), attachments=(attachment,)
    ):
        error = await refused(db, world, cid, ReplyTooBig, event)
        assert error.error_name == "ReplyTooBig"


async def test_body_of_the_maximum_size_is_fine(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    body = "ж" * MAX_BODY_CHARS
    out = await service.perform(db, world.app_id, cid, ev.UserReply(body=body), now=NOW)
    parts = await service.get_parts(db, world.app_id, cid)
    assert parts[-1].id == out.parts[0].id
    assert parts[-1].body == body
    assert await service.check(db) == []


async def test_empty_body_without_attachment(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    for body in ("", "   ", "\n\t "):
        for event in _author_events(world, body):
            error = await refused(db, world, cid, InvalidParameter, event)
            assert isinstance(error, InvalidParameter)
            assert error.param == "body"


async def test_empty_body_with_an_attachment_is_fine(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    attachment = Attachment(id=9, size=2048, filename="photo.jpg", mime_type="image/jpeg")
    out = await service.perform(
        db, world.app_id, cid, ev.UserReply(body="", attachments=(attachment,)), now=NOW
    )
    assert [p.attachments for p in out.parts] == [(attachment,)]
    assert await service.check(db) == []


# --- one transaction per call ----------------------------------------------------------------


async def test_a_refused_event_rolls_back_the_whole_call(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    await refused(
        db,
        world,
        cid,
        InvalidParameter,
        ev.UserReply(body="accepted alone"),
        ev.AddTag("new", by=admin(world)),
        ev.Delay(NOW - timedelta(seconds=1), by=admin(world)),
    )
    await refused(
        db,
        world,
        cid,
        NotFound,
        ev.Close(by=admin(world)),
        ev.Assign(world.foreign_admin_id, by=admin(world)),
    )
    assert await service.check(db) == []


# --- starting conversations ------------------------------------------------------------------


async def test_start_by_user_of_another_app(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    before = await snapshot(db, world.app_id, cid)
    with pytest.raises(NotFound) as caught:
        await service.start_by_user(
            db, world.app_id, world.foreign_user_id, ev.UserReply(body="Hi"), now=NOW
        )
    assert caught.value.kind == "user"
    with pytest.raises(NotFound) as caught:
        await service.start_by_user(
            db, world.app_id, world.user_id + 1000, ev.UserReply(body="Hi"), now=NOW
        )
    assert caught.value.kind == "user"
    assert await snapshot(db, world.app_id, cid) == before


async def test_start_by_user_refused_creates_no_conversation(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    before = await snapshot(db, world.app_id, cid)
    with pytest.raises(NotFound) as caught:
        await service.start_by_user(
            db,
            world.app_id,
            world.user_id,
            ev.UserReply(body="Hi"),
            channel_id=world.foreign_channel_id,
            now=NOW,
        )
    assert caught.value.kind == "channel"
    with pytest.raises(InvalidParameter):
        await service.start_by_user(
            db, world.app_id, world.user_id, ev.UserReply(body=" ", random_id=4), now=NOW
        )
    with pytest.raises(ReplyTooBig):
        await service.start_by_user(
            db,
            world.app_id,
            world.user_id,
            ev.UserReply(body="x" * (MAX_BODY_CHARS + 1)),
            now=NOW,
        )
    assert await snapshot(db, world.app_id, cid) == before
    # The refused key was not spent: the same random_id starts a conversation now.
    out = await service.start_by_user(
        db, world.app_id, world.user_id, ev.UserReply(body="Hi", random_id=4), now=NOW
    )
    assert out.duplicate is False
    assert (await row_counts(db))["conversations"] == before[2]["conversations"] + 1


async def test_start_by_message_refused_creates_nothing(db: Database, world: World) -> None:
    cid = await conversation(db, world)
    before = await snapshot(db, world.app_id, cid)
    sender = Author(AuthorKind.SENDER, world.sender_id)
    cases: list[tuple[type[DomainError], dict[str, object]]] = [
        (NotFound, {"user_id": world.foreign_user_id}),
        (NotFound, {"sender": Author(AuthorKind.ADMIN, world.foreign_admin_id)}),
        (NotFound, {"sender": Author(AuthorKind.SENDER, await foreign_sender_id(db, world))}),
        (NotFound, {"channel_id": world.foreign_channel_id}),
        (ReplyTooBig, {"body": "x" * (MAX_BODY_CHARS + 1)}),
        (InvalidParameter, {"body": "  "}),
    ]
    for error, overrides in cases:
        kwargs: dict[str, object] = {
            "user_id": world.user_id,
            "body": "Hello",
            "sender": sender,
            **overrides,
        }
        with pytest.raises(error):
            await service.start_by_message(db, world.app_id, now=NOW, **kwargs)  # type: ignore[arg-type]
    assert await snapshot(db, world.app_id, cid) == before
