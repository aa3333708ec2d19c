"""Values of the vendor's objects that the object pages define, pinned across scripted
conversations (Dashly's English edition of Carrot quest's developer docs). Both databases,
through the real HTTP client.

- Conversation (`/objects/conversation/`): `read`, "shows if the first message of the
  conversation is read (always true for conversations started by user)"; `replied`,
  `clicked`, `unsubscribed`, `last_admin`, and `unread_parts_count` (unread by the
  visitor). The pages' examples agree: a user-started chat shows `read: true`; a message
  just sent (`/rts/channels/conversation`) shows `read: false`, `replied: false`,
  `unread_parts_count: 1` and a `reply_admin` part with `read: false`.
- ConversationPart (`/objects/conversationpart/`): `read` on an operator's reply, "the user
  has read it" (the parts page's example: a `reply_admin` part with `read: true`).
- Message sender (`/objects/message_sender`): `email_name` ("Sender's email address before
  @"), `is_default` ("this is a default sender"), `is_removed` ("removed softly"),
  `is_bot`.
- Admin (`/objects/admin`): `name_internal`, wherever an admin is embedded.
- User (`/objects/user/`): `removed`, `map_url`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import insert, text, update

from tests.api.helpers import admin, ok, started
from tests.conftest import World, build_world
from tests.test_migrations import empty_url
from threadline.channels.email import inbound
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AuthorKind
from threadline.core.model import Author
from threadline.db.engine import Database
from threadline.db.migrate import downgrade, upgrade
from threadline.db.schema import conversations, senders
from threadline.users import service as users
from threadline.widget import service as widget

__all__ = ["empty_url"]

# The Conversation page's flags: (read, replied, clicked, unsubscribed).
Flags = tuple[bool, bool, bool, bool]


def flags(conversation: dict[str, Any]) -> Flags:
    return (
        conversation["read"],
        conversation["replied"],
        conversation["clicked"],
        conversation["unsubscribed"],
    )


def ann(world: World) -> dict[str, Any]:
    return {
        "id": world.admin_id,
        "name": "Ann",
        "avatar": "",
        "type": "admin",
        "name_internal": "Ann",
    }


def bob(world: World) -> dict[str, Any]:
    return {
        "id": world.other_admin_id,
        "name": "Bob",
        "avatar": "",
        "type": "admin",
        "name_internal": "Bob",
    }


async def every_view(api: httpx.AsyncClient, world: World, cid: int) -> list[dict[str, Any]]:
    """The conversation as each read endpoint serves it: one, the user's conversations,
    and the app's list on v1 and v2 (the inbox's: "the conversation will appear in the
    Inbox section only after the user answers it", the `sendmessage` page)."""
    everything = {"include_not_assigned": True}
    one = ok(await api.get(f"/conversations/{cid}"))
    of_user = ok(await api.get(f"/users/{world.user_id}/conversations"))
    v1 = ok(await api.get(f"/v1/apps/{world.app_id}/conversations", params=everything))
    v2 = ok(await api.get(f"/apps/{world.app_id}/conversations", params=everything))
    views = [one, *(c for c in of_user if c["id"] == cid)]
    assert len(views) == 2
    in_inbox = [c for listed in (v1, v2) for c in listed if c["id"] == cid]
    assert len(in_inbox) == (2 if one["replied"] else 0)
    return views + in_inbox


async def pinned(
    api: httpx.AsyncClient,
    world: World,
    cid: int,
    expected: Flags,
    unread: int,
    last_admin: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """Check the flags, `unread_parts_count` and `last_admin` on every view; the parts."""
    for view in await every_view(api, world, cid):
        assert flags(view) == expected, view
        assert view["unread_parts_count"] == view["user_unread_count"] == unread
        assert view["last_admin"] == last_admin
    parts: list[dict[str, Any]] = ok(
        await api.get(f"/conversations/{cid}/parts", params={"count": 50})
    )
    return sorted(parts, key=lambda p: p["id"])


def reads(parts: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    return [(p["type"], p["read"]) for p in parts]


async def test_conversation_flags_across_a_conversation_a_message_started(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    sent = ok(await api.post(f"/users/{world.user_id}/sendmessage", data={"body": "Offer"}))
    cid = sent["conversation"]
    # Just sent: nothing read, no user reply; the sender is no admin; the message is unread
    # by the visitor.
    parts = await pinned(api, world, cid, (False, False, False, False), 1, None)
    assert reads(parts) == [("reply_admin", False)]

    ok(await api.post(f"/conversations/{cid}/reply", data={"body": "Any questions?"}))
    ok(
        await api.post(
            f"/conversations/{cid}/reply",
            data={"body": "Hi", "from_admin": str(world.admin_id)},
        )
    )
    parts = await pinned(api, world, cid, (False, False, False, False), 3, ann(world))
    assert reads(parts) == [("reply_admin", False)] * 3

    # The user reads: the first message is read, and so is every operator part.
    ok(await api.post(f"/conversations/{cid}/markread", data={"from_user": "true"}))
    parts = await pinned(api, world, cid, (True, False, False, False), 0, ann(world))
    assert reads(parts) == [("reply_admin", True)] * 3

    # The user answers: replied; the user's part is not read by an operator yet.
    ok(await api.post(f"/conversations/{cid}/reply", data={"body": "Yes", "from_user": "true"}))
    parts = await pinned(api, world, cid, (True, True, False, False), 0, ann(world))
    assert reads(parts)[-1] == ("reply_user", False)

    # An operator reads it (markread from the operators' side): the user's part is read.
    ok(await api.post(f"/conversations/{cid}/markread"))
    parts = await pinned(api, world, cid, (True, True, False, False), 0, ann(world))
    assert reads(parts)[-1] == ("reply_user", True)

    # A note is no reply: neither unread by the user nor the last admin's reply.
    ok(
        await api.post(
            f"/conversations/{cid}/reply",
            data={"body": "psst", "type": "note", "from_admin": str(world.other_admin_id)},
        )
    )
    parts = await pinned(api, world, cid, (True, True, False, False), 0, ann(world))
    assert reads(parts)[-1] == ("note", False)

    # Bob answers: the last admin, one part unread by the visitor.
    ok(
        await api.post(
            f"/conversations/{cid}/reply",
            data={"body": "Sure", "from_admin": str(world.other_admin_id)},
        )
    )
    parts = await pinned(api, world, cid, (True, True, False, False), 1, bob(world))
    assert reads(parts)[-1] == ("reply_admin", False)
    assert await service.check(app_db) == []


async def test_conversation_flags_across_a_conversation_its_user_started(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world, "Hello")
    # "Always true for conversations started by user"; replied at the first user reply.
    parts = await pinned(api, world, cid, (True, True, False, False), 0, None)
    assert reads(parts) == [("reply_user", False)]

    ok(
        await api.post(
            f"/conversations/{cid}/reply",
            data={"body": "Hi", "from_admin": str(world.admin_id)},
        )
    )
    # Answering means having read: the user's part is read; the answer is not yet.
    parts = await pinned(api, world, cid, (True, True, False, False), 1, ann(world))
    assert reads(parts) == [("reply_user", True), ("reply_admin", False)]

    ok(await api.post(f"/conversations/{cid}/markread", json={"from_user": True}))
    parts = await pinned(api, world, cid, (True, True, False, False), 0, ann(world))
    assert reads(parts) == [("reply_user", True), ("reply_admin", True)]
    assert await service.check(app_db) == []


async def test_reading_a_message_before_any_answer_reads_the_first_message(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    sent = ok(await api.post(f"/users/{world.user_id}/sendmessage", data={"body": "Offer"}))
    cid = sent["conversation"]
    # The message is the first message: the user reading it makes the conversation read.
    await service.perform(app_db, world.app_id, cid, ev.ReadByUser())
    await pinned(api, world, cid, (True, False, False, False), 0, None)
    assert await service.check(app_db) == []


# --- the message sender ---------------------------------------------------------------


async def test_message_sender_fields(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    async with app_db.write() as conn:
        other = (
            await conn.execute(
                insert(senders)
                .values(app_id=world.app_id, name="Sales team", avatar="https://a/s.png")
                .returning(senders.c.id)
            )
        ).scalar_one()
    cid = await started(app_db, world)
    by_default = ok(await api.post(f"/conversations/{cid}/reply", data={"body": "We got it"}))
    by_other = await service.start_by_message(
        app_db, world.app_id, world.user_id, body="Offer", sender=Author(AuthorKind.SENDER, other)
    )
    other_cid = by_other.outcome.state.id
    expected_default = {
        "id": world.sender_id,
        "name": "Acme",
        # No e-mail address of the app yet: nothing before `@`.
        "email_name": "",
        "is_default": True,
        "is_removed": False,
        "is_bot": False,
        "avatar": "",
        "type": "message_sender",
    }
    assert by_default["from"] == expected_default
    expected_other = {
        **expected_default,
        "id": other,
        "name": "Sales team",
        "is_default": False,
        "avatar": "https://a/s.png",
    }
    (first,) = ok(await api.get(f"/conversations/{other_cid}/parts"))
    assert first["from"] == expected_other

    # Once the app has its address (`<key>@<domain>`), every sender's mail leaves from it.
    key = await inbound.app_key(app_db, world.app_id)
    listed = ok(await api.get(f"/conversations/{cid}/parts", params={"count": 50}))
    (by_sender,) = [p for p in listed if p["id"] == by_default["id"]]
    assert by_sender["from"] == {**expected_default, "email_name": key}
    (first,) = ok(await api.get(f"/conversations/{other_cid}/parts"))
    assert first["from"] == {**expected_other, "email_name": key}
    as_strings = ok(
        await api.get(f"/conversations/{cid}/parts", params={"id_as_string": True, "count": 50})
    )
    (by_sender,) = [p for p in as_strings if p["id"] == str(by_default["id"])]
    assert by_sender["from"]["id"] == str(world.sender_id)
    # The chat widget shows the visitor the sender, without the app's address.
    visitor = widget.Visitor(session_id=0, app_id=world.app_id, user_id=world.user_id)
    shown = await widget.conversation(app_db, visitor, cid, "")
    senders_shown = [p["from"] for p in shown["parts"] if p["type"] == "reply_admin"]
    assert senders_shown == [{k: v for k, v in expected_default.items() if k != "email_name"}]


# --- the admin ------------------------------------------------------------------------


async def test_admin_name_internal_wherever_an_admin_is_served(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    ok(
        await api.post(
            f"/conversations/{cid}/assign",
            data={"admin": str(world.admin_id), "from_admin": str(world.other_admin_id)},
        )
    )
    reply = ok(
        await api.post(
            f"/conversations/{cid}/reply", data={"body": "Hi", "from_admin": str(world.admin_id)}
        )
    )
    assert reply["from"] == ann(world)
    got = ok(await api.get(f"/conversations/{cid}"))
    assert got["assignee"] == ann(world)
    assert got["last_admin"] == ann(world)
    assert got["reply_last"]["from"] == ann(world)
    parts = ok(await api.get(f"/conversations/{cid}/parts", params={"count": 50}))
    (assignment,) = [p for p in parts if p["type"] == "assigned"]
    assert assignment["from"] == bob(world)
    assert assignment["assignee"] == ann(world)
    channels = ok(await api.get(f"/apps/{world.app_id}/channels"))
    for channel in channels:
        assert ann(world) in channel["operators"]
        assert bob(world) in channel["operators"]
    records = ok(await api.get("/ext/apps/$self_app/admins"))
    assert {(a["name"], a["name_internal"]) for a in records} == {("Ann", "Ann"), ("Bob", "Bob")}


# --- the user -------------------------------------------------------------------------


async def test_user_removed_and_map_url(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    user = ok(await api.get(f"/conversations/{cid}"))["user"]
    assert (user["removed"], user["map_url"]) == (None, "")
    await service.perform(app_db, world.app_id, cid, ev.AdminReply(admin(world), "Hi"))
    listed = ok(await api.get(f"/users/{world.user_id}/conversations"))
    assert [(c["user"]["removed"], c["user"]["map_url"]) for c in listed] == [(None, "")]
    # Erased (GDPR): the user is removed, and so is the conversation, still served by id.
    await users.erase(app_db, world.app_id, world.user_id)
    got = ok(await api.get(f"/conversations/{cid}"))
    assert type(got["removed"]) is int
    assert type(got["user"]["removed"]) is int
    assert got["user"]["map_url"] == ""
    precise = ok(await api.get(f"/conversations/{cid}", params={"precise_times": True}))
    assert precise["user"]["removed"] <= precise["removed"]


# --- the migration --------------------------------------------------------------------


def test_the_migration_fills_read_from_the_first_reply(empty_url: str) -> None:
    upgrade(empty_url)

    async def make() -> dict[str, int]:
        db = Database(empty_url)
        try:
            world = await build_world(db)
            sender = Author(AuthorKind.SENDER, world.sender_id)
            by_user = await started(db, world)
            unread = (
                await service.start_by_message(
                    db, world.app_id, world.user_id, body="Offer", sender=sender
                )
            ).outcome.state.id
            seen = (
                await service.start_by_message(
                    db, world.app_id, world.user_id, body="News", sender=sender
                )
            ).outcome.state.id
            await service.perform(db, world.app_id, seen, ev.ReadByUser())
            # Answered without being read: the first message stays unread.
            answered = (
                await service.start_by_message(
                    db, world.app_id, world.user_id, body="Deal", sender=sender
                )
            ).outcome.state.id
            await service.perform(db, world.app_id, answered, ev.UserReply("What deal?"))
            async with db.write() as conn:
                # As stored before this revision: false everywhere.
                await conn.execute(update(conversations).values(read=False))
            return {"by_user": by_user, "unread": unread, "seen": seen, "answered": answered}
        finally:
            await db.dispose()

    made = asyncio.run(make())
    downgrade(empty_url, "0023")
    upgrade(empty_url)

    async def read() -> dict[int, bool]:
        db = Database(empty_url)
        try:
            async with db.read() as conn:
                rows = await conn.execute(text("SELECT id, read FROM conversations"))
                return {r[0]: bool(r[1]) for r in rows}
        finally:
            await db.dispose()

    assert asyncio.run(read()) == {
        made["by_user"]: True,
        made["unread"]: False,
        made["seen"]: True,
        made["answered"]: False,
    }

    async def drifts() -> list[object]:
        db = Database(empty_url)
        try:
            return list(await service.check(db))
        finally:
            await db.dispose()

    assert asyncio.run(drifts()) == []
