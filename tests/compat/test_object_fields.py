"""What the API serves of the vendor's objects, field by field, written from the object
pages (Dashly's English edition of Carrot quest's developer docs):

- ConversationPart (`/objects/conversationpart/`): every documented key of a part, and
  `first`: "will be true, if this part is the first part of conversation, else, this field
  is not shown";
- Attachment (`/objects/attachment/`): `created`, "attachment creation time";
- User (`/objects/user/`, and the conversation page's example of the embedded user):
  `app` and `presence` ("can be online, idle, offline");
- the v1 user-conversations page: its answer has no `user`;
- Channel (`/objects/channel/`): `type` is one of "email, mobile, manual, vk, facebook,
  instagram, telegram, viber, whatsapp"; the optional fields `droppable`, `operators`,
  `not_assigned_count`, `not_read_count` ("number of unanswered conversations (last reply
  in conversation is user reply)"), `read_permission`, `priority`, `auto_set`,
  `auto_set_settings`.

Both databases, through the real HTTP client (and a real server for presence).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text, update
from websockets.asyncio.client import connect

from tests.api.helpers import admin, error, ok, started
from tests.conftest import World, build_world
from tests.events.live import WAIT, serve
from tests.test_migrations import empty_url
from tests.waiting import until
from threadline.api.schemas import unix_seconds
from threadline.conversations import queries as conv_q
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AuthorKind
from threadline.core.model import Author
from threadline.db.engine import Database
from threadline.db.migrate import downgrade, upgrade
from threadline.db.schema import attachments, channels, conversation_parts
from threadline.widget import service as widget

__all__ = ["empty_url"]

# The keys every part carries (the ConversationPart page's fields, with Threadline's
# stored `random_id`, `external_id`, `referrer` and `actions`, and its own `body_html`: the
# body as the screens show it); `first`, `tag` and `assignee` come on top where the page says.
PART_KEYS = {
    "id",
    "created",
    "edited",
    "removed",
    "conversation",
    "part_group",
    "body",
    "body_html",
    "body_json",
    "direction",
    "type",
    "from",
    "sent_via",
    "read",
    "attachments",
    "random_id",
    "external_id",
    "referrer",
    "actions",
}
ATTACHMENT_KEYS = {"type", "id", "size", "filename", "mime_type", "url", "created"}
# The Channel page's type list.
CHANNEL_TYPES = {
    "email",
    "mobile",
    "manual",
    "vk",
    "facebook",
    "instagram",
    "telegram",
    "viber",
    "whatsapp",
}


def by_body(parts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["body"] or p["type"]: p for p in parts}


# --- ConversationPart: every key, and `first` ---------------------------------------------


async def test_every_documented_key_of_a_part_and_first_on_the_first_part_only(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world, "Hello")
    reply = ok(
        await api.post(
            f"/conversations/{cid}/reply",
            json={
                "body": "Hi there",
                "from_admin": world.admin_id,
                "random_id": 42,
                "external_id": "ext-7",
                "referrer": "https://shop.test/cart",
            },
        )
    )
    ok(await api.post(f"/conversations/{cid}/tag", data={"tag": "vip"}))
    ok(await api.post(f"/conversations/{cid}/assign", data={"admin": world.other_admin_id}))
    # The reply's own answer: not the first part, so no `first`.
    assert set(reply) == PART_KEYS
    v2 = ok(await api.get(f"/conversations/{cid}/parts", params={"paginate_count": 10}))
    v1 = ok(await api.get(f"/v1/conversations/{cid}/parts", params={"count": 10}))
    assert v1 == v2
    parts = by_body(v2)
    assert set(parts) == {"Hello", "Hi there", "tag_added", "assigned"}
    hello, answer = parts["Hello"], parts["Hi there"]
    assert set(hello) == PART_KEYS | {"first"}
    assert hello["first"] is True
    assert set(answer) == PART_KEYS
    assert set(parts["tag_added"]) == PART_KEYS | {"tag"}
    assert set(parts["assigned"]) == PART_KEYS | {"assignee"}
    # Values, key by key.
    assert hello["conversation"] == answer["conversation"] == cid
    assert hello["from"] == world.user_id
    assert (hello["type"], hello["direction"], hello["sent_via"]) == (
        "reply_user",
        "u2a",
        "web_user",
    )
    assert hello["read"] is True  # the operator's reply marked it read
    assert answer == reply | {"read": False}
    assert answer["from"] == {
        "id": world.admin_id,
        "name": "Ann",
        "avatar": "",
        "type": "admin",
        "name_internal": "Ann",
    }
    assert (answer["type"], answer["direction"], answer["sent_via"]) == ("reply_admin", "a2u", "")
    assert (answer["random_id"], answer["external_id"]) == (42, "ext-7")
    assert answer["referrer"] == "https://shop.test/cart"
    assert answer["actions"] is None
    assert answer["body_json"] is None
    assert (hello["body_html"], answer["body_html"]) == (hello["body"], answer["body"])
    assert (answer["edited"], answer["removed"]) == (None, None)
    assert answer["attachments"] == []
    assert type(answer["part_group"]) is int
    assert type(answer["created"]) is int
    assert answer["created"] >= hello["created"]
    assert hello["id"] < answer["id"]
    assert parts["tag_added"]["tag"] == "vip"
    assert parts["assigned"]["assignee"]["id"] == world.other_admin_id
    # Embedded in the conversation: the first part is none of the last ones here.
    conversation = ok(await api.get(f"/conversations/{cid}"))
    for key in ("part_last", "important_part_last", "reply_last"):
        assert "first" not in conversation[key], key
    # The event log (what realtime messages and webhooks carry) shows the same parts.
    events = ok(await api.get(f"/ext/apps/{world.app_id}/events", params={"count": 500}))
    carried = {e["part"]["id"]: e["part"] for e in events if e.get("part")}
    assert carried[hello["id"]]["first"] is True
    assert "first" not in carried[answer["id"]]


async def test_first_is_on_the_first_part_of_a_conversation_started_either_way(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    sent = ok(await api.post(f"/users/{world.user_id}/sendmessage", data={"body": "Offer"}))
    user_started = ok(
        await api.post(f"/users/{world.user_id}/startconversation", data={"body": "Question"})
    )
    for cid, body in ((sent["conversation"], "Offer"), (user_started["id"], "Question")):
        # The user's answer comes from the user's side, so the listing is the operators'.
        answer = ok(
            await api.post(f"/conversations/{cid}/reply", data={"body": "more", "from_user": 1})
        )
        assert "first" not in answer
        parts = by_body(ok(await api.get(f"/conversations/{cid}/parts")))
        assert parts[body]["first"] is True
        assert [p["body"] for p in parts.values() if p.get("first")] == [body]
        # A conversation whose only part is its first: its part_last carries `first`.
    only = await started(app_db, world, "Alone")
    conversation = ok(await api.get(f"/conversations/{only}"))
    assert conversation["part_last"]["first"] is True
    assert conversation["reply_last"]["first"] is True


# --- Attachment `created` ---------------------------------------------------------------


async def test_attachment_created_is_when_the_file_was_stored(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    part = ok(
        await api.post(
            f"/conversations/{cid}/reply",
            files={
                "attachment": ("a.txt", b"hello", "text/plain"),
                "attachment_file_name": (None, "note.txt"),
            },
        )
    )
    (file,) = part["attachments"]
    assert set(file) == ATTACHMENT_KEYS
    async with app_db.read() as conn:
        stored: datetime = (
            await conn.execute(select(attachments.c.created).where(attachments.c.id == file["id"]))
        ).scalar_one()
    assert file["created"] == unix_seconds(stored)
    assert type(file["created"]) is int
    assert file["created"] <= part["created"]
    # The same wherever the part is served: v1, v2, the event log, and precisely on demand.
    v1 = ok(await api.get(f"/v1/conversations/{cid}/parts"))
    v2 = ok(await api.get(f"/conversations/{cid}/parts"))
    for parts in (v1, v2):
        assert [p["attachments"] for p in parts if p["id"] == part["id"]] == [[file]]
    events = ok(await api.get(f"/ext/apps/{world.app_id}/events", params={"count": 500}))
    assert [
        e["part"]["attachments"] for e in events if (e.get("part") or {}).get("id") == part["id"]
    ] == [[file]]
    precise = ok(await api.get(f"/conversations/{cid}/parts", params={"precise_times": True}))
    (exact,) = [p["attachments"][0]["created"] for p in precise if p["id"] == part["id"]]
    assert exact == unix_seconds(stored, precise=True)
    # A part stored before files kept their time shows its own time for them.
    async with app_db.write() as conn:
        await conn.execute(
            update(conversation_parts)
            .where(conversation_parts.c.id == part["id"])
            .values(
                attachments=[
                    {"id": file["id"], "size": 5, "filename": "note.txt", "mime_type": "text/plain"}
                ]
            )
        )
    older = ok(await api.get(f"/conversations/{cid}/parts"))
    (shown,) = [p for p in older if p["id"] == part["id"]]
    assert shown["attachments"] == [file | {"created": shown["created"]}]


# --- the embedded User: `app` and `presence` --------------------------------------------


async def test_the_embedded_user_has_its_app_and_presence(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    expected = {
        "id": world.user_id,
        "app": world.app_id,
        "user_id": "u-1",
        "presence": "offline",  # no widget of theirs is open
        "props": {"$name": "Uma", "$email": "uma@example.com"},
        # The User page: `removed` null unless removed; Threadline keeps no map (empty).
        "removed": None,
        "map_url": "",
    }
    one = ok(await api.get(f"/conversations/{cid}"))["user"]
    everything = {"include_not_assigned": True}
    listed = ok(await api.get(f"/apps/{world.app_id}/conversations", params=everything))
    v1_listed = ok(await api.get(f"/v1/apps/{world.app_id}/conversations", params=everything))
    of_user = ok(await api.get(f"/users/{world.user_id}/conversations"))[0]["user"]
    for user in (one, listed[0]["user"], v1_listed[0]["user"], of_user):
        assert {k: v for k, v in user.items() if k != "created"} == expected
        assert type(user["created"]) is int
    as_strings = ok(await api.get(f"/conversations/{cid}", params={"id_as_string": True}))
    assert as_strings["user"]["app"] == str(world.app_id)
    assert as_strings["user"]["id"] == str(world.user_id)


async def test_presence_is_online_while_the_users_widget_is_open(
    db_url: str, tmp_path: Path
) -> None:
    async with serve(db_url, tmp_path) as live:
        w = live.world
        session = await widget.open_session(live.db, w.app_id, site_user_id=None, user_hash=None)
        visitor = session.visitor.user_id
        cid = await started(live.db, w, "From the widget", user_id=visitor)
        other = await started(live.db, w, "From Uma")  # the world's user: no widget open
        async with live.client() as http:

            async def presence() -> dict[int, str]:
                listed = ok(
                    await http.get(
                        f"/apps/{w.app_id}/conversations", params={"include_not_assigned": True}
                    )
                )
                return {c["id"]: c["user"]["presence"] for c in listed}

            assert await presence() == {cid: "offline", other: "offline"}
            channels_path = f"conversation.{w.app_id}.{visitor}"
            protocols = ["threadline", f"token.{session.token}"]
            url = f"ws://127.0.0.1:{live.port}/websocket/{channels_path}"
            async with connect(url, subprotocols=protocols) as sock:  # type: ignore[arg-type]
                assert sock.subprotocol == "threadline"

                async def online() -> bool:
                    return (await presence()) == {cid: "online", other: "offline"}

                await until(online, "the visitor shown online", WAIT)
                one = ok(await http.get(f"/conversations/{cid}"))
                assert one["user"]["presence"] == "online"
                assert one["user"]["app"] == w.app_id
            # The widget closed: offline again, on every process (the stream's slot is freed).

            async def offline() -> bool:
                return (await presence()) == {cid: "offline", other: "offline"}

            await until(offline, "the visitor shown offline", WAIT)


# --- v1 user conversations: no `user` -----------------------------------------------------


async def test_v1_user_conversations_leave_the_user_out_and_v2_includes_it(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    (v1,) = ok(await api.get(f"/v1/users/{world.user_id}/conversations"))
    assert v1["id"] == cid
    assert "user" not in v1
    for key in ("part_last", "important_part_last", "reply_last"):
        assert v1[key]["body"] == "Hello", key
    # `version=1` is v1 too; v2 and the unversioned path include the user.
    (by_param,) = ok(await api.get(f"/users/{world.user_id}/conversations", params={"version": 1}))
    assert "user" not in by_param
    for path in (
        f"/v2/users/{world.user_id}/conversations",
        f"/users/{world.user_id}/conversations",
    ):
        (v2,) = ok(await api.get(path))
        assert v2["user"]["id"] == world.user_id, path


# --- Channel: type, counts, optional fields -------------------------------------------------


async def channel_list(api: httpx.AsyncClient, world: World) -> dict[int, dict[str, Any]]:
    return {c["id"]: c for c in ok(await api.get(f"/apps/{world.app_id}/channels"))}


async def test_channel_types_are_from_the_vendors_list(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    listed = await channel_list(api, world)
    assert listed[world.default_channel_id]["type"] == "manual"
    assert listed[world.channel_id]["type"] == "manual"
    cid = await started(app_db, world)
    assert ok(await api.get(f"/conversations/{cid}"))["channel"]["type"] == "manual"
    # A channel added through the API: `manual` unless another type of the list is named.
    plain = ok(await api.post("/ext/apps/$self_app/channels", data={"name": "Plain"}))
    assert plain["type"] == "manual"
    tg = ok(await api.post("/ext/apps/$self_app/channels", data={"name": "TG", "type": "telegram"}))
    assert tg["type"] == "telegram"
    before = await channel_list(api, world)
    for bad in ("default", "sales"):
        message = error(
            await api.post("/ext/apps/$self_app/channels", data={"name": "X", "type": bad}),
            400,
            "BadRequest",
        )
        assert message.startswith("type")
    assert await channel_list(api, world) == before
    assert {c["type"] for c in before.values()} <= CHANNEL_TYPES


def test_the_migration_makes_default_channels_manual(empty_url: str) -> None:
    upgrade(empty_url)

    async def make() -> World:
        db = Database(empty_url)
        try:
            world = await build_world(db)
            async with db.write() as conn:
                # A type a client chose stays as it is.
                await conn.execute(
                    update(channels).where(channels.c.id == world.channel_id).values(type="sales")
                )
            return world
        finally:
            await db.dispose()

    world = asyncio.run(make())

    async def types() -> dict[int, str]:
        db = Database(empty_url)
        try:
            async with db.read() as conn:
                rows = await conn.execute(text("SELECT id, type FROM channels"))
                return {r[0]: r[1] for r in rows}
        finally:
            await db.dispose()

    downgrade(empty_url, "0020")
    stored = asyncio.run(types())
    assert stored[world.default_channel_id] == "default"
    assert stored[world.foreign_channel_id] == "default"
    assert stored[world.channel_id] == "sales"
    upgrade(empty_url)
    stored = asyncio.run(types())
    assert stored[world.default_channel_id] == "manual"
    assert stored[world.foreign_channel_id] == "manual"
    assert stored[world.channel_id] == "sales"


async def test_not_read_count_counts_unanswered_conversations(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    """The set-up tells the page's meaning (last reply is the user's) from "has unread
    user replies": `seen` is unanswered but read, `answered` is answered; only `waiting`
    is both unanswered and unread."""
    a = admin(world)
    seen = await started(app_db, world, "seen")
    await service.perform(app_db, world.app_id, seen, ev.ReadByAdmin())
    answered = await started(app_db, world, "answered")
    await service.perform(app_db, world.app_id, answered, ev.AdminReply(a, "done"))
    waiting = await started(app_db, world, "waiting")
    await service.perform(app_db, world.app_id, waiting, ev.AdminReply(a, "and?"))
    await service.perform(app_db, world.app_id, waiting, ev.UserReply("still here"))
    closed = await started(app_db, world, "closed")
    await service.perform(app_db, world.app_id, closed, ev.Close(a))
    # An operator's message the user never answered is not in the inbox at all.
    await service.start_by_message(
        app_db,
        world.app_id,
        world.user_id,
        body="Offer",
        sender=Author(AuthorKind.SENDER, world.sender_id),
    )
    in_sales = await started(app_db, world, "sales")
    await service.perform(app_db, world.app_id, in_sales, ev.ChangeChannel(world.channel_id, a))
    await service.perform(app_db, world.app_id, in_sales, ev.Assign(world.admin_id, a))
    listed = await channel_list(api, world)
    default, sales = listed[world.default_channel_id], listed[world.channel_id]
    assert default["not_read_count"] == 2  # seen, waiting (unread alone would be 1)
    assert default["not_assigned_count"] == 3  # seen, answered, waiting
    assert sales["not_read_count"] == 1
    assert sales["not_assigned_count"] == 0
    # The user's reply is what makes it unanswered, read or not.
    await service.perform(app_db, world.app_id, answered, ev.UserReply("one more"))
    await service.perform(app_db, world.app_id, answered, ev.ReadByAdmin())
    assert (await channel_list(api, world))[world.default_channel_id]["not_read_count"] == 3


async def test_channel_optional_fields_are_served_with_threadlines_values(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    admins = ok(await api.get("/ext/apps/$self_app/admins"))
    operators = [
        {
            "id": x["id"],
            "name": x["name"],
            "avatar": x["avatar"],
            "type": "admin",
            "name_internal": x["name"],
        }
        for x in sorted(admins, key=lambda x: x["id"])
    ]
    assert {o["id"] for o in operators} >= {world.admin_id, world.other_admin_id}
    listed = await channel_list(api, world)
    assert listed[world.default_channel_id] == {
        "id": world.default_channel_id,
        "name": "Inbox",
        "type": "manual",
        "avatar": "",
        "droppable": True,
        "operators": operators,
        "not_assigned_count": 0,
        "not_read_count": 0,
        "read_permission": True,
        "priority": 0,
        "auto_set": True,  # new conversations go to the app's default channel
        "auto_set_settings": {},
    }
    assert listed[world.channel_id] == listed[world.default_channel_id] | {
        "id": world.channel_id,
        "name": "Sales",
        "auto_set": False,
    }
    # A removed admin reads nothing any more; ids as strings where they are ids.
    ok(await api.delete(f"/ext/apps/$self_app/admins/{world.other_admin_id}"))
    strings = ok(await api.get(f"/apps/{world.app_id}/channels", params={"id_as_string": True}))
    for channel in strings:
        assert str(world.other_admin_id) not in {o["id"] for o in channel["operators"]}
        assert str(world.admin_id) in {o["id"] for o in channel["operators"]}


async def test_the_openapi_document_describes_the_served_fields(anon: httpx.AsyncClient) -> None:
    schemas = (await anon.get("/openapi.json")).json()["components"]["schemas"]
    channel = schemas["ChannelWithCounts"]
    optional = (
        "droppable",
        "operators",
        "not_assigned_count",
        "not_read_count",
        "read_permission",
        "priority",
        "auto_set",
        "auto_set_settings",
    )
    for key in optional:
        assert key in channel["required"], key
        assert channel["properties"][key]["description"], key
    assert "unanswered" in channel["properties"]["not_read_count"]["description"]
    assert "0 for every channel" in channel["properties"]["priority"]["description"]
    user = schemas["UserOut"]
    assert {"app", "presence"} <= set(user["required"])
    assert "never answers `idle`" in user["properties"]["presence"]["description"]
    part = schemas["PartOut"]
    assert "first" in part["properties"]
    assert "first" not in part["required"]
    assert "created" in schemas["AttachmentOut"]["required"]


async def test_first_part_ids_are_the_lowest_part_ids(app_db: Database, world: World) -> None:
    cid = await started(app_db, world)
    await service.perform(app_db, world.app_id, cid, ev.AdminReply(admin(world), "later"))
    other = await started(app_db, world, "Two")
    async with app_db.read() as conn:
        lowest = (
            await conn.execute(
                select(func.min(conversation_parts.c.id)).where(
                    conversation_parts.c.conversation_id == cid
                )
            )
        ).scalar_one()
        found = await conv_q.first_part_ids(conn, [cid, other, 987654321])
        nothing = await conv_q.first_part_ids(conn, [])
    assert found[cid] == lowest
    assert set(found) == {cid, other}  # an unknown conversation has no first part
    assert nothing == {}
