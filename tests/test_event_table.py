"""The spec's event table, one test per row: exact stored fields and parts after each event.

Every test re-reads the conversation and its parts from storage and compares them with the
state before the event: `delta(before, after)` is exactly the set of fields the event changed,
so an assertion on it also proves that nothing else moved.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import World
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import (
    AssistantType,
    AuthorKind,
    ConversationType,
    MessageStatus,
    PartType,
    RecipientType,
    ReplyType,
    SentVia,
)
from threadline.core.errors import TagAlreadyAssigned, TagNotAssigned
from threadline.core.model import Attachment, Author, ConversationState, Part
from threadline.db.engine import Database

T0 = datetime(2025, 3, 3, 9, 0, 0, 250_000, tzinfo=UTC)
SYSTEM = Author.system()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def admin(world: World) -> Author:
    return Author(AuthorKind.ADMIN, world.admin_id)


def fields(state: ConversationState) -> dict[str, object]:
    values = {name: getattr(state, name) for name in state.__dataclass_fields__}
    values["unread_parts_count"] = state.unread_parts_count
    return values


def delta(before: ConversationState, after: ConversationState) -> dict[str, object]:
    """The fields whose stored value differs, with their new values."""
    old, new = fields(before), fields(after)
    return {name: value for name, value in new.items() if value != old[name]}


async def reread(db: Database, world: World, cid: int) -> tuple[ConversationState, list[Part]]:
    state = await service.get_conversation(db, world.app_id, cid)
    parts = await service.get_parts(db, world.app_id, cid)
    return state, parts


async def start(db: Database, world: World, body: str = "Hi", now: datetime = T0) -> int:
    out = await service.start_by_user(
        db, world.app_id, world.user_id, ev.UserReply(body=body), now=now
    )
    return out.state.id


async def act(db: Database, world: World, cid: int, event: ev.Event, now: datetime) -> list[Part]:
    out = await service.perform(db, world.app_id, cid, event, now=now)
    assert out.duplicate is False
    return out.parts


def system_part(
    part: Part,
    *,
    type_: PartType,
    created: datetime,
    group: int,
    by: Author,
    body_json: object = None,
    tag: str | None = None,
    assignee_id: int | None = None,
) -> Part:
    """The exact stored form of a system part: no body, sent via `system`, never read."""
    return Part(
        id=part.id,
        conversation_id=part.conversation_id,
        created=created,
        type=type_,
        part_group=group,
        author=by,
        sent_via=SentVia.SYSTEM,
        body="",
        body_json=body_json,  # type: ignore[arg-type]
        read=False,
        tag=tag,
        assignee_id=assignee_id,
    )


# --- user reply ----------------------------------------------------------------------------


async def test_user_starts_conversation(db: Database, world: World) -> None:
    out = await service.start_by_user(
        db,
        world.app_id,
        world.user_id,
        ev.UserReply(body="Hi", external_id="tg-1"),
        external_service="telegram",
        external_id="chat-9",
        now=T0,
    )
    cid = out.state.id
    state, parts = await reread(db, world, cid)
    [p1] = parts
    assert fields(state) == {
        "id": cid,
        "app_id": world.app_id,
        "user_id": world.user_id,
        "created": T0,
        "sended_time": T0,
        "last_update": T0,
        # Set by the very first reply: a chat expecting text (the vendor's example of one).
        "type": ConversationType.POPUP_CHAT,
        "reply_type": ReplyType.TEXT,
        "recipient_type": RecipientType.ALL,
        "message_id": None,
        "status": None,
        "external_service": "telegram",
        "external_id": "chat-9",
        "channel_id": world.default_channel_id,
        "assignee_id": None,
        "assistant_type": None,
        "removed": None,
        "replied": True,
        "closed": False,
        "delayed_until": None,
        "tags": (),
        "part_group": p1.id,
        "parts_count": 1,
        "replies_count": 1,
        "admin_unread_count": 1,
        "user_unread_count": 0,
        "unread_parts_count": 0,
        "not_answered_admin_replies": 1,
        "reply_last_id": p1.id,
        "reply_last_type": PartType.REPLY_USER,
        "part_last_id": p1.id,
        "important_part_last_id": p1.id,
        "last_user_reply_time": T0,
        "last_admin_id": None,
        "important": True,
        # The first message is the user's own: read.
        "read": True,
        "clicked": False,
        "unsubscribed": False,
        "start_random_id": None,
    }
    assert p1 == Part(
        id=p1.id,
        conversation_id=cid,
        created=T0,
        type=PartType.REPLY_USER,
        part_group=p1.id,
        author=Author(AuthorKind.USER, world.user_id),
        sent_via=SentVia.WEB_USER,
        body="Hi",
        read=False,
        external_id="tg-1",
    )
    assert p1.direction == "u2a"
    assert out.state == state
    assert out.parts == [p1]
    assert await service.check(db) == []


async def test_user_reply(db: Database, world: World) -> None:
    cid = await start(db, world)
    await act(db, world, cid, ev.AdminReply(author=admin(world), body="Hello"), at(10))
    before, _ = await reread(db, world, cid)
    attachment = Attachment(id=5, size=1024, filename="a.png", mime_type="image/png")
    [new] = await act(
        db,
        world,
        cid,
        ev.UserReply(
            body="",
            body_json={"k": "v"},
            attachments=(attachment,),
            referrer="https://shop.test/cart?step=2",
        ),
        at(20),
    )
    after, parts = await reread(db, world, cid)
    assert delta(before, after) == {
        "parts_count": 3,
        "replies_count": 3,
        "admin_unread_count": 1,
        "not_answered_admin_replies": 1,
        "last_update": at(20),
        "last_user_reply_time": at(20),
        "reply_last_id": new.id,
        "reply_last_type": PartType.REPLY_USER,
        "part_last_id": new.id,
        "important_part_last_id": new.id,
    }
    # Fields the event sets but that already had that value:
    assert (after.replied, after.closed, after.delayed_until, after.important) == (
        True,
        False,
        None,
        True,
    )
    first = parts[0]
    assert [(p.type, p.part_group, p.read) for p in parts] == [
        (PartType.REPLY_USER, first.id, True),  # read by the operator who answered it
        (PartType.REPLY_ADMIN, first.id, False),
        (PartType.REPLY_USER, first.id, False),
    ]
    assert parts[2] == Part(
        id=new.id,
        conversation_id=cid,
        created=at(20),
        type=PartType.REPLY_USER,
        part_group=first.id,
        author=Author(AuthorKind.USER, world.user_id),
        sent_via=SentVia.WEB_USER,
        body="",
        body_json={"k": "v"},
        attachments=(attachment,),
        referrer="https://shop.test/cart?step=2",
    )
    assert await service.check(db) == []


async def test_user_reply_reopens_undelays_and_starts_a_new_group(
    db: Database, world: World
) -> None:
    cid = await start(db, world)
    first = (await service.get_parts(db, world.app_id, cid))[0]
    await act(db, world, cid, ev.Assign(world.admin_id, by=admin(world)), at(5))
    await act(db, world, cid, ev.AdminReply(author=admin(world), body="Done?"), at(10))
    await act(db, world, cid, ev.Delay(at(3600), by=admin(world)), at(15))
    await act(db, world, cid, ev.Close(by=admin(world)), at(20))
    before, _ = await reread(db, world, cid)
    assert (before.closed, before.delayed_until, before.important) == (True, at(3600), False)
    [new] = await act(db, world, cid, ev.UserReply(body="Not yet"), at(30))
    after, parts = await reread(db, world, cid)
    assert delta(before, after) == {
        "closed": False,
        "delayed_until": None,
        "important": True,
        "part_group": new.id,
        "parts_count": 6,
        "replies_count": 3,
        "admin_unread_count": 1,
        "not_answered_admin_replies": 1,
        "last_update": at(30),
        "last_user_reply_time": at(30),
        "reply_last_id": new.id,
        "reply_last_type": PartType.REPLY_USER,
        "part_last_id": new.id,
        "important_part_last_id": new.id,
    }
    # No `opened` part: the reply itself reopens. The reply opens a group of its own.
    assert [(p.type, p.part_group) for p in parts] == [
        (PartType.REPLY_USER, first.id),
        (PartType.ASSIGNED, first.id),
        (PartType.REPLY_ADMIN, first.id),
        (PartType.DELAYED, first.id),
        (PartType.CLOSED, first.id),
        (PartType.REPLY_USER, new.id),
    ]
    assert await service.check(db) == []


# --- admin reply ---------------------------------------------------------------------------


async def test_admin_reply(db: Database, world: World) -> None:
    cid = await start(db, world)
    await act(db, world, cid, ev.UserReply(body="Anyone?"), at(10))
    before, _ = await reread(db, world, cid)
    assert (before.admin_unread_count, before.not_answered_admin_replies) == (2, 2)
    actions = [{"type": "button", "text": "Track my order", "payload": {"order": 42}}]
    reply = ev.AdminReply(author=admin(world), body="<b>Yes</b>", actions=actions)
    [new] = await act(db, world, cid, reply, at(20))
    after, parts = await reread(db, world, cid)
    assert delta(before, after) == {
        "parts_count": 3,
        "replies_count": 3,
        "admin_unread_count": 0,
        "user_unread_count": 1,
        "unread_parts_count": 1,
        "not_answered_admin_replies": 0,
        "last_admin_id": world.admin_id,
        "last_update": at(20),
        "reply_last_id": new.id,
        "reply_last_type": PartType.REPLY_ADMIN,
        "part_last_id": new.id,
        "important_part_last_id": new.id,
    }
    assert after.important is True  # no assignee
    assert after.last_user_reply_time == at(10)
    assert [(p.type, p.read) for p in parts] == [
        (PartType.REPLY_USER, True),
        (PartType.REPLY_USER, True),
        (PartType.REPLY_ADMIN, False),
    ]
    assert parts[2] == Part(
        id=new.id,
        conversation_id=cid,
        created=at(20),
        type=PartType.REPLY_ADMIN,
        part_group=parts[0].id,
        author=admin(world),
        sent_via=SentVia.WEB_PANEL,
        body="<b>Yes</b>",
        actions=[{"type": "button", "text": "Track my order", "payload": {"order": 42}}],
    )
    assert parts[2].direction == "a2u"
    assert await service.check(db) == []


async def test_admin_reply_with_assignee_is_not_important(db: Database, world: World) -> None:
    cid = await start(db, world)
    await act(db, world, cid, ev.Assign(world.other_admin_id, by=admin(world)), at(5))
    before, _ = await reread(db, world, cid)
    assert before.important is True  # the last reply is the user's
    [new] = await act(db, world, cid, ev.AdminReply(author=admin(world), body="On it"), at(10))
    after, _ = await reread(db, world, cid)
    assert delta(before, after) == {
        "important": False,
        "parts_count": 3,
        "replies_count": 2,
        "admin_unread_count": 0,
        "user_unread_count": 1,
        "unread_parts_count": 1,
        "not_answered_admin_replies": 0,
        "last_admin_id": world.admin_id,
        "last_update": at(10),
        "reply_last_id": new.id,
        "reply_last_type": PartType.REPLY_ADMIN,
        "part_last_id": new.id,
        "important_part_last_id": new.id,
    }
    assert await service.check(db) == []


async def test_reply_by_default_sender_keeps_last_admin(db: Database, world: World) -> None:
    cid = await start(db, world)
    await act(db, world, cid, ev.AdminReply(author=admin(world), body="Hello"), at(5))
    await act(db, world, cid, ev.UserReply(body="Thanks"), at(6))
    before, _ = await reread(db, world, cid)
    sender = Author(AuthorKind.SENDER, world.sender_id)
    [new] = await act(
        db, world, cid, ev.AdminReply(author=sender, body="Auto", sent_via=SentVia.API), at(10)
    )
    after, parts = await reread(db, world, cid)
    assert delta(before, after) == {
        "parts_count": 4,
        "replies_count": 4,
        "admin_unread_count": 0,
        "user_unread_count": 2,
        "unread_parts_count": 2,
        "not_answered_admin_replies": 0,
        "last_update": at(10),
        "reply_last_id": new.id,
        "reply_last_type": PartType.REPLY_ADMIN,
        "part_last_id": new.id,
        "important_part_last_id": new.id,
    }
    assert after.last_admin_id == world.admin_id
    assert (parts[3].author, parts[3].sent_via) == (sender, SentVia.API)
    assert await service.check(db) == []


# --- note and the other non-reply content parts ---------------------------------------------


async def test_note(db: Database, world: World) -> None:
    cid = await start(db, world)
    before, _ = await reread(db, world, cid)
    [new] = await act(
        db,
        world,
        cid,
        ev.ContentPart(PartType.NOTE, author=admin(world), body="VIP customer"),
        at(10),
    )
    after, parts = await reread(db, world, cid)
    assert delta(before, after) == {
        "parts_count": 2,
        "part_last_id": new.id,
        "important_part_last_id": new.id,
    }
    # Not an answer: the user's reply stays unread and unanswered.
    assert (after.admin_unread_count, after.not_answered_admin_replies) == (1, 1)
    assert parts[1] == Part(
        id=new.id,
        conversation_id=cid,
        created=at(10),
        type=PartType.NOTE,
        part_group=parts[0].id,
        author=admin(world),
        sent_via=SentVia.WEB_PANEL,
        body="VIP customer",
    )
    assert parts[0].read is False
    assert await service.check(db) == []


@pytest.mark.parametrize(
    ("type_", "author"),
    [
        (PartType.ARTICLE, Author(AuthorKind.ADMIN)),
        (PartType.AUTO_REPLY, SYSTEM),
        (PartType.CHAT_BOT_ADMIN, Author(AuthorKind.BOT)),
        (PartType.CHAT_BOT_USER, Author(AuthorKind.BOT)),
        (PartType.VOTE, SYSTEM),
    ],
)
async def test_content_part(db: Database, world: World, type_: PartType, author: Author) -> None:
    if author.kind is AuthorKind.ADMIN:
        author = admin(world)
    cid = await start(db, world)
    await act(db, world, cid, ev.AdminReply(author=admin(world), body="Hello"), at(5))
    before, _ = await reread(db, world, cid)
    [new] = await act(
        db,
        world,
        cid,
        ev.ContentPart(
            type_, author=author, body_json={"id": 3}, sent_via=SentVia.MESSAGE_CHAT_BOT
        ),
        at(10),
    )
    after, parts = await reread(db, world, cid)
    assert delta(before, after) == {
        "parts_count": 3,
        "part_last_id": new.id,
        "important_part_last_id": new.id,
    }
    # Not a reply: reply_last and last_update still point at the admin reply.
    assert (after.reply_last_id, after.last_update) == (parts[1].id, at(5))
    assert parts[2] == Part(
        id=new.id,
        conversation_id=cid,
        created=at(10),
        type=type_,
        part_group=parts[0].id,
        author=author,
        sent_via=SentVia.MESSAGE_CHAT_BOT,
        body="",
        body_json={"id": 3},
    )
    assert await service.check(db) == []


# --- assign / unassign -----------------------------------------------------------------------


async def test_assign_and_unassign(db: Database, world: World) -> None:
    cid = await start(db, world)
    await act(db, world, cid, ev.AdminReply(author=admin(world), body="Hello"), at(5))
    s0, _ = await reread(db, world, cid)
    assert s0.important is True

    [assigned] = await act(db, world, cid, ev.Assign(world.admin_id, by=admin(world)), at(10))
    s1, parts = await reread(db, world, cid)
    assert delta(s0, s1) == {
        "assignee_id": world.admin_id,
        "important": False,
        "parts_count": 3,
        "part_last_id": assigned.id,
    }
    group = parts[0].id
    assert parts[2] == system_part(
        assigned,
        type_=PartType.ASSIGNED,
        created=at(10),
        group=group,
        by=admin(world),
        assignee_id=world.admin_id,
    )

    # Assigning to the current assignee changes nothing and adds no part.
    out = await service.perform(
        db, world.app_id, cid, ev.Assign(world.admin_id, by=admin(world)), now=at(15)
    )
    assert out.parts == []
    assert await reread(db, world, cid) == (s1, parts)

    [reassigned] = await act(
        db, world, cid, ev.Assign(world.other_admin_id, by=admin(world)), at(20)
    )
    s2, parts = await reread(db, world, cid)
    assert delta(s1, s2) == {
        "assignee_id": world.other_admin_id,
        "parts_count": 4,
        "part_last_id": reassigned.id,
    }

    [unassigned] = await act(db, world, cid, ev.Assign(None, by=SYSTEM), at(30))
    s3, parts = await reread(db, world, cid)
    assert delta(s2, s3) == {
        "assignee_id": None,
        "important": True,
        "parts_count": 5,
        "part_last_id": unassigned.id,
    }
    assert parts[4] == system_part(
        unassigned, type_=PartType.ASSIGNED, created=at(30), group=group, by=SYSTEM
    )
    assert [p.assignee_id for p in parts] == [
        None,
        None,
        world.admin_id,
        world.other_admin_id,
        None,
    ]
    assert await service.check(db) == []


async def test_assign_bot_managed_conversation(db: Database, world: World) -> None:
    started = await service.start_by_message(
        db,
        world.app_id,
        world.user_id,
        body="Can I help?",
        sender=Author(AuthorKind.SENDER, world.sender_id),
        type_=ConversationType.LEAD_BOT,
        now=T0,
    )
    cid = started.outcome.state.id
    await act(db, world, cid, ev.BotTakeOver(AssistantType.LEAD_BOT), at(1))
    before, _ = await reread(db, world, cid)
    assert (before.assistant_type, before.replied) == (AssistantType.LEAD_BOT, False)
    [assigned] = await act(db, world, cid, ev.Assign(world.admin_id, by=SYSTEM), at(10))
    after, parts = await reread(db, world, cid)
    assert delta(before, after) == {
        "assignee_id": world.admin_id,
        "assistant_type": None,
        "replied": True,
        "important": False,
        "parts_count": 2,
        "part_last_id": assigned.id,
    }
    assert [p.type for p in parts] == [PartType.REPLY_ADMIN, PartType.ASSIGNED]
    assert await service.check(db) == []


# --- close / reopen --------------------------------------------------------------------------


async def test_close_and_reopen(db: Database, world: World) -> None:
    cid = await start(db, world)
    s0, _ = await reread(db, world, cid)
    [closed] = await act(db, world, cid, ev.Close(by=admin(world)), at(10))
    s1, parts = await reread(db, world, cid)
    assert delta(s0, s1) == {"closed": True, "parts_count": 2, "part_last_id": closed.id}
    group = parts[0].id
    assert parts[1] == system_part(
        closed, type_=PartType.CLOSED, created=at(10), group=group, by=admin(world)
    )

    # Closing a closed conversation changes nothing and adds no part.
    out = await service.perform(db, world.app_id, cid, ev.Close(by=SYSTEM), now=at(15))
    assert out.parts == []
    assert await reread(db, world, cid) == (s1, parts)

    [opened] = await act(db, world, cid, ev.Reopen(by=admin(world)), at(20))
    s2, parts = await reread(db, world, cid)
    assert delta(s1, s2) == {"closed": False, "parts_count": 3, "part_last_id": opened.id}
    assert parts[2] == system_part(
        opened, type_=PartType.OPENED, created=at(20), group=group, by=admin(world)
    )
    assert await service.check(db) == []


# --- delay -----------------------------------------------------------------------------------


async def test_delay_and_clear(db: Database, world: World) -> None:
    cid = await start(db, world)
    s0, _ = await reread(db, world, cid)
    until = at(3600)
    [delayed] = await act(db, world, cid, ev.Delay(until, by=admin(world)), at(10))
    s1, parts = await reread(db, world, cid)
    assert delta(s0, s1) == {"delayed_until": until, "parts_count": 2, "part_last_id": delayed.id}
    group = parts[0].id
    assert parts[1] == system_part(
        delayed,
        type_=PartType.DELAYED,
        created=at(10),
        group=group,
        by=admin(world),
        body_json={"delayed_until": until.timestamp()},
    )
    # Delayed while now < T; back in the open inbox when T passes, with no write.
    assert s1.is_delayed(at(10)) is True
    assert s1.is_delayed(until - timedelta(microseconds=1)) is True
    assert s1.is_delayed(until) is False
    assert s1.is_delayed(at(7200)) is False

    [cleared] = await act(db, world, cid, ev.Delay(None, by=admin(world)), at(20))
    s2, parts = await reread(db, world, cid)
    assert delta(s1, s2) == {"delayed_until": None, "parts_count": 3, "part_last_id": cleared.id}
    assert parts[2] == system_part(
        cleared,
        type_=PartType.DELAYED,
        created=at(20),
        group=group,
        by=admin(world),
        body_json={"delayed_until": None},
    )
    assert s2.is_delayed(at(20)) is False
    assert await service.check(db) == []


# --- tags ------------------------------------------------------------------------------------


async def test_tags_added_and_removed(db: Database, world: World) -> None:
    cid = await start(db, world)
    s0, _ = await reread(db, world, cid)
    [vip] = await act(db, world, cid, ev.AddTag("vip", by=admin(world)), at(10))
    s1, parts = await reread(db, world, cid)
    assert delta(s0, s1) == {"tags": ("vip",), "parts_count": 2, "part_last_id": vip.id}
    group = parts[0].id
    assert parts[1] == system_part(
        vip, type_=PartType.TAG_ADDED, created=at(10), group=group, by=admin(world), tag="vip"
    )

    await act(db, world, cid, ev.AddTag("billing", by=admin(world)), at(11))
    await act(db, world, cid, ev.AddTag("Ünïcode tag", by=admin(world)), at(12))
    s2, _ = await reread(db, world, cid)
    assert s2.tags == ("vip", "billing", "Ünïcode tag")

    [untag] = await act(db, world, cid, ev.RemoveTag("vip", by=SYSTEM), at(20))
    s3, parts = await reread(db, world, cid)
    assert delta(s2, s3) == {
        "tags": ("billing", "Ünïcode tag"),
        "parts_count": 5,
        "part_last_id": untag.id,
    }
    assert parts[4] == system_part(
        untag, type_=PartType.TAG_DELETED, created=at(20), group=group, by=SYSTEM, tag="vip"
    )

    # Re-adding puts the tag at the end: tags keep the order added.
    await act(db, world, cid, ev.AddTag("vip", by=admin(world)), at(30))
    s4, parts = await reread(db, world, cid)
    assert s4.tags == ("billing", "Ünïcode tag", "vip")
    assert [(p.type, p.tag) for p in parts[1:]] == [
        (PartType.TAG_ADDED, "vip"),
        (PartType.TAG_ADDED, "billing"),
        (PartType.TAG_ADDED, "Ünïcode tag"),
        (PartType.TAG_DELETED, "vip"),
        (PartType.TAG_ADDED, "vip"),
    ]
    assert await service.check(db) == []


async def test_tag_already_present_or_missing(db: Database, world: World) -> None:
    cid = await start(db, world)
    await act(db, world, cid, ev.AddTag("vip", by=admin(world)), at(10))
    snapshot = await reread(db, world, cid)

    # Non-strict: a quiet no-op, no part.
    out = await service.perform(
        db, world.app_id, cid, ev.AddTag("vip", by=admin(world), strict=False), now=at(20)
    )
    assert out.parts == []
    out = await service.perform(
        db, world.app_id, cid, ev.RemoveTag("gold", by=admin(world), strict=False), now=at(21)
    )
    assert out.parts == []
    assert await reread(db, world, cid) == snapshot

    # Strict: the typed error, and still nothing changed.
    with pytest.raises(TagAlreadyAssigned) as added:
        await service.perform(db, world.app_id, cid, ev.AddTag("vip", by=admin(world)), now=at(30))
    assert added.value.error_name == "ConversationTagAlreadyAssigned"
    with pytest.raises(TagNotAssigned) as removed:
        await service.perform(
            db, world.app_id, cid, ev.RemoveTag("gold", by=admin(world)), now=at(31)
        )
    assert removed.value.error_name == "ConversationTagIsNotAssigned"
    assert await reread(db, world, cid) == snapshot
    state, _ = snapshot
    assert (state.tags, state.parts_count) == (("vip",), 2)
    assert await service.check(db) == []


# --- channel ---------------------------------------------------------------------------------


async def test_channel_changed(db: Database, world: World) -> None:
    cid = await start(db, world)
    s0, _ = await reread(db, world, cid)
    assert s0.channel_id == world.default_channel_id
    [moved] = await act(db, world, cid, ev.ChangeChannel(world.channel_id, by=admin(world)), at(10))
    s1, parts = await reread(db, world, cid)
    assert delta(s0, s1) == {
        "channel_id": world.channel_id,
        "parts_count": 2,
        "part_last_id": moved.id,
    }
    assert parts[1] == system_part(
        moved,
        type_=PartType.CHANNEL_CHANGED,
        created=at(10),
        group=parts[0].id,
        by=admin(world),
        body_json={"channel": world.channel_id},
    )

    [cleared] = await act(db, world, cid, ev.ChangeChannel(None, by=SYSTEM), at(20))
    s2, parts = await reread(db, world, cid)
    assert delta(s1, s2) == {"channel_id": None, "parts_count": 3, "part_last_id": cleared.id}
    assert parts[2].body_json == {"channel": None}
    assert await service.check(db) == []


# --- read by admin / by user -----------------------------------------------------------------


async def test_read_by_admin(db: Database, world: World) -> None:
    cid = await start(db, world)
    await act(db, world, cid, ev.UserReply(body="Hello?"), at(5))
    await act(db, world, cid, ev.ContentPart(PartType.NOTE, author=admin(world), body="n"), at(6))
    before, parts_before = await reread(db, world, cid)
    assert before.admin_unread_count == 2
    assert [p.read for p in parts_before] == [False, False, False]
    out = await service.perform(db, world.app_id, cid, ev.ReadByAdmin(), now=at(10))
    assert out.parts == []
    after, parts = await reread(db, world, cid)
    assert delta(before, after) == {"admin_unread_count": 0}
    # Reading answers nothing: the user's replies are still waiting for an answer.
    assert after.not_answered_admin_replies == 2
    assert [(p.type, p.read) for p in parts] == [
        (PartType.REPLY_USER, True),
        (PartType.REPLY_USER, True),
        (PartType.NOTE, False),
    ]
    assert await service.check(db) == []


async def test_read_by_user(db: Database, world: World) -> None:
    cid = await start(db, world)
    await act(db, world, cid, ev.AdminReply(author=admin(world), body="One"), at(5))
    await act(db, world, cid, ev.ContentPart(PartType.NOTE, author=admin(world), body="n"), at(6))
    await act(db, world, cid, ev.AdminReply(author=admin(world), body="Two"), at(7))
    await act(
        db, world, cid, ev.ContentPart(PartType.ARTICLE, author=admin(world), body="a"), at(8)
    )
    before, _ = await reread(db, world, cid)
    assert (before.user_unread_count, before.unread_parts_count) == (2, 2)
    out = await service.perform(db, world.app_id, cid, ev.ReadByUser(), now=at(10))
    assert out.parts == []
    after, parts = await reread(db, world, cid)
    assert delta(before, after) == {"user_unread_count": 0, "unread_parts_count": 0}
    assert [(p.type, p.read) for p in parts] == [
        (PartType.REPLY_USER, True),  # read by the operator who answered
        (PartType.REPLY_ADMIN, True),
        (PartType.NOTE, False),  # hidden from the user
        (PartType.REPLY_ADMIN, True),
        (PartType.ARTICLE, True),
    ]
    assert await service.check(db) == []


async def test_read_by_user_marks_operator_content_without_replies(
    db: Database, world: World
) -> None:
    """Operator parts other than replies are marked read even when no reply is unread."""
    cid = await start(db, world)
    await act(
        db, world, cid, ev.ContentPart(PartType.ARTICLE, author=admin(world), body="a"), at(5)
    )
    await act(db, world, cid, ev.ContentPart(PartType.VOTE, author=SYSTEM, body="Rate us"), at(6))
    before, _ = await reread(db, world, cid)
    assert before.user_unread_count == 0
    await service.perform(db, world.app_id, cid, ev.ReadByUser(), now=at(10))
    after, parts = await reread(db, world, cid)
    assert delta(before, after) == {}
    assert [(p.type, p.read) for p in parts] == [
        (PartType.REPLY_USER, False),
        (PartType.ARTICLE, True),
        (PartType.VOTE, True),
    ]
    assert await service.check(db) == []


# --- started by a message / message status ---------------------------------------------------


async def test_started_by_message(db: Database, world: World) -> None:
    sender = Author(AuthorKind.SENDER, world.sender_id)
    sent = at(600)  # created now, sent ten minutes later
    started = await service.start_by_message(
        db,
        world.app_id,
        world.user_id,
        body="<p>Our offer</p>",
        sender=sender,
        type_=ConversationType.EMAIL,
        reply_type=ReplyType.EMAIL,
        recipient_type=RecipientType.WEB,
        status=MessageStatus.SENT,
        sended_time=sent,
        channel_id=world.channel_id,
        now=T0,
    )
    cid = started.outcome.state.id
    state, parts = await reread(db, world, cid)
    [p1] = parts
    assert fields(state) == {
        "id": cid,
        "app_id": world.app_id,
        "user_id": world.user_id,
        "created": T0,
        "sended_time": sent,
        "last_update": T0,
        "type": ConversationType.EMAIL,
        "reply_type": ReplyType.EMAIL,
        "recipient_type": RecipientType.WEB,
        "message_id": started.message_id,
        "status": MessageStatus.SENT,
        "external_service": None,
        "external_id": None,
        "channel_id": world.channel_id,
        "assignee_id": None,
        "assistant_type": None,
        "removed": None,
        "replied": False,
        "closed": False,
        "delayed_until": None,
        "tags": (),
        "part_group": p1.id,
        "parts_count": 1,
        "replies_count": 1,
        "admin_unread_count": 0,
        "user_unread_count": 1,
        "unread_parts_count": 1,
        "not_answered_admin_replies": 0,
        "reply_last_id": p1.id,
        "reply_last_type": PartType.REPLY_ADMIN,
        "part_last_id": p1.id,
        "important_part_last_id": p1.id,
        "last_user_reply_time": None,
        "last_admin_id": None,
        "important": True,
        "read": False,
        "clicked": False,
        "unsubscribed": False,
        "start_random_id": None,
    }
    assert p1 == Part(
        id=p1.id,
        conversation_id=cid,
        created=T0,
        type=PartType.REPLY_ADMIN,
        part_group=p1.id,
        author=sender,
        sent_via=SentVia.MESSAGE_MANUAL,
        body="<p>Our offer</p>",
    )
    assert started.outcome.state == state

    # The user's answer brings it into the inbox; what the message set stays.
    [answer] = await act(db, world, cid, ev.UserReply(body="Interested"), at(700))
    after, _ = await reread(db, world, cid)
    assert delta(state, after) == {
        "replied": True,
        "parts_count": 2,
        "replies_count": 2,
        "admin_unread_count": 1,
        "not_answered_admin_replies": 1,
        "last_update": at(700),
        "last_user_reply_time": at(700),
        "reply_last_id": answer.id,
        "reply_last_type": PartType.REPLY_USER,
        "part_last_id": answer.id,
        "important_part_last_id": answer.id,
    }
    assert await service.check(db) == []


async def test_started_by_admin_message(db: Database, world: World) -> None:
    started = await service.start_by_message(
        db,
        world.app_id,
        world.user_id,
        body="Hi from Ann",
        sender=admin(world),
        now=T0,
    )
    state, [p1] = await reread(db, world, started.outcome.state.id)
    assert (state.type, state.reply_type, state.recipient_type) == (
        ConversationType.POPUP_CHAT,
        ReplyType.TEXT,
        RecipientType.ALL,
    )
    assert (state.status, state.sended_time, state.channel_id) == (
        MessageStatus.CREATED,
        T0,
        world.default_channel_id,
    )
    assert (state.last_admin_id, state.replied, state.message_id) == (
        world.admin_id,
        False,
        started.message_id,
    )
    assert (p1.type, p1.author, p1.body) == (PartType.REPLY_ADMIN, admin(world), "Hi from Ann")
    assert await service.check(db) == []


async def test_message_status_update(db: Database, world: World) -> None:
    started = await service.start_by_message(
        db,
        world.app_id,
        world.user_id,
        body="Hello",
        sender=Author(AuthorKind.SENDER, world.sender_id),
        now=T0,
    )
    cid = started.outcome.state.id
    s0, parts0 = await reread(db, world, cid)
    state = s0
    for i, status in enumerate(
        [
            MessageStatus.RENDERED,
            MessageStatus.SENT,
            MessageStatus.ACCEPTED,
            MessageStatus.DELIVERED,
        ]
    ):
        out = await service.perform(db, world.app_id, cid, ev.UpdateStatus(status), now=at(i + 1))
        assert out.parts == []
        after, parts = await reread(db, world, cid)
        assert delta(state, after) == {"status": status}
        assert parts == parts0
        state = after
    await service.perform(db, world.app_id, cid, ev.UpdateStatus(MessageStatus.BOUNCED), now=at(9))
    after, parts = await reread(db, world, cid)
    assert delta(s0, after) == {"status": MessageStatus.BOUNCED}
    assert parts == parts0
    assert await service.check(db) == []


# --- bots ------------------------------------------------------------------------------------


async def test_bot_takes_over(db: Database, world: World) -> None:
    cid = await start(db, world)
    before, parts_before = await reread(db, world, cid)
    out = await service.perform(
        db, world.app_id, cid, ev.BotTakeOver(AssistantType.ROUTING_BOT), now=at(10)
    )
    assert out.parts == []
    after, parts = await reread(db, world, cid)
    assert delta(before, after) == {"assistant_type": AssistantType.ROUTING_BOT}
    assert parts == parts_before
    assert await service.check(db) == []


async def test_bot_hands_off_to_an_admin(db: Database, world: World) -> None:
    started = await service.start_by_message(
        db,
        world.app_id,
        world.user_id,
        body="Which team?",
        sender=Author(AuthorKind.SENDER, world.sender_id),
        type_=ConversationType.ROUTING_BOT,
        reply_type=ReplyType.BUTTON,
        now=T0,
    )
    cid = started.outcome.state.id
    await act(db, world, cid, ev.BotTakeOver(AssistantType.ROUTING_BOT), at(1))
    before, _ = await reread(db, world, cid)
    assert before.replied is False
    new = await act(db, world, cid, ev.BotHandOff(admin_id=world.admin_id), at(10))
    after, parts = await reread(db, world, cid)
    service_part, assigned = new
    assert delta(before, after) == {
        "assistant_type": None,
        "replied": True,
        "assignee_id": world.admin_id,
        "important": False,  # the last reply is the bot's and someone is assigned
        "parts_count": 3,
        "part_last_id": assigned.id,
    }
    group = parts[0].id
    assert parts[1:] == [
        system_part(
            service_part,
            type_=PartType.SERVICE,
            created=at(10),
            group=group,
            by=SYSTEM,
            body_json={"event": "bot_hand_off", "assistant_type": "routing_bot"},
        ),
        system_part(
            assigned,
            type_=PartType.ASSIGNED,
            created=at(10),
            group=group,
            by=SYSTEM,
            assignee_id=world.admin_id,
        ),
    ]
    assert await service.check(db) == []


async def test_bot_hands_off_without_an_admin(db: Database, world: World) -> None:
    started = await service.start_by_message(
        db,
        world.app_id,
        world.user_id,
        body="Hi, I am a bot",
        sender=Author(AuthorKind.SENDER, world.sender_id),
        type_=ConversationType.LEAD_BOT,
        now=T0,
    )
    cid = started.outcome.state.id
    await act(db, world, cid, ev.BotTakeOver(AssistantType.LEAD_BOT), at(1))
    before, _ = await reread(db, world, cid)
    [handed] = await act(db, world, cid, ev.BotHandOff(), at(10))
    after, parts = await reread(db, world, cid)
    # The bot hands the conversation to the operators: it enters the (unassigned) inbox.
    assert delta(before, after) == {
        "assistant_type": None,
        "replied": True,
        "parts_count": 2,
        "part_last_id": handed.id,
    }
    assert (parts[1].type, parts[1].body_json) == (
        PartType.SERVICE,
        {"event": "bot_hand_off", "assistant_type": "lead_bot"},
    )
    assert await service.check(db) == []


# --- removal ---------------------------------------------------------------------------------


async def test_removal(db: Database, world: World) -> None:
    attachment = Attachment(id=1, size=10, filename="cv.pdf", mime_type="application/pdf")
    out = await service.start_by_user(
        db,
        world.app_id,
        world.user_id,
        ev.UserReply(body="My data", body_json={"x": 1}, attachments=(attachment,)),
        now=T0,
    )
    cid = out.state.id
    await act(db, world, cid, ev.AdminReply(author=admin(world), body="Got it"), at(1))
    await act(db, world, cid, ev.ContentPart(PartType.NOTE, author=admin(world), body="n"), at(2))
    await act(db, world, cid, ev.AddTag("gdpr", by=admin(world)), at(3))
    await act(db, world, cid, ev.Delay(at(3600), by=admin(world)), at(4))
    await act(db, world, cid, ev.UserReply(body="Delete me"), at(5))
    before, parts_before = await reread(db, world, cid)
    assert before.parts_count == 6

    out = await service.perform(db, world.app_id, cid, ev.Remove(), now=at(100))
    assert out.parts == []
    after, parts = await reread(db, world, cid)
    # Counters and every other field keep their values.
    assert delta(before, after) == {"removed": at(100)}
    assert (after.parts_count, after.replies_count, after.admin_unread_count) == (6, 3, 1)
    assert len(parts) == 6
    for old, new in zip(parts_before, parts, strict=True):
        assert (new.body, new.body_json, new.attachments, new.removed) == ("", None, (), at(100))
        assert (new.id, new.type, new.created, new.author, new.part_group, new.tag, new.read) == (
            old.id,
            old.type,
            old.created,
            old.author,
            old.part_group,
            old.tag,
            old.read,
        )
    assert await service.check(db) == []
