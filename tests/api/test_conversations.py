"""The vendor-compatible endpoints, each parameter through the real HTTP stack."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import client_for
from tests.api.helpers import admin, assigned, error, ok, started
from tests.conftest import World
from threadline.apps import service as apps
from threadline.apps.repository import AppRepository
from threadline.apps.service import issue_token, utcnow
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AssistantType, AuthorKind, PartType
from threadline.core.model import Author
from threadline.db.engine import Database

LIST = "/apps/$self_app/conversations"
ALL = {"include_not_assigned": "true"}


async def token_with(app_db: Database, world: World, *scopes: str) -> str:
    async with app_db.write() as conn:
        return await issue_token(AppRepository(conn), world.app_id, "t", list(scopes), utcnow())


def ids(data: list[dict[str, object]]) -> list[object]:
    return [c["id"] for c in data]


# ---------------------------------------------------------------------------
# The inbox list


async def test_list_holds_replied_live_conversations_newest_first(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    first = await started(app_db, world, "one")
    second = await started(app_db, world, "two")
    removed = await started(app_db, world, "three")
    await service.perform(app_db, world.app_id, removed, ev.Remove())
    outbound = ok(await api.post(f"/users/{world.user_id}/sendmessage", json={"body": "Offer"}))
    assert ids(ok(await api.get(LIST, params=ALL))) == [second, first]
    await service.perform(app_db, world.app_id, first, ev.UserReply("again"))
    assert ids(ok(await api.get(LIST, params=ALL))) == [first, second]
    # The outbound message's conversation joins once the user answers.
    await service.perform(app_db, world.app_id, outbound["conversation"], ev.UserReply("ok"))
    assert ids(ok(await api.get(LIST, params=ALL))) == [outbound["conversation"], first, second]


async def test_list_embeds(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    cid = await assigned(app_db, world)
    await service.perform(app_db, world.app_id, cid, ev.AdminReply(admin(world), "Hi"))
    await service.perform(
        app_db, world.app_id, cid, ev.ContentPart(PartType.NOTE, admin(world), "psst")
    )
    await service.perform(app_db, world.app_id, cid, ev.AddTag("vip", admin(world)))
    (c,) = ok(await api.get(LIST))
    assert c["user"] == {
        "id": world.user_id,
        "app": world.app_id,
        "user_id": "u-1",
        "presence": "offline",
        "props": {"$name": "Uma", "$email": "uma@example.com"},
        "removed": None,
        "map_url": "",
        "created": c["user"]["created"],
    }
    assert c["part_last"]["type"] == "tag_added"
    assert c["part_last"]["tag"] == "vip"
    assert c["important_part_last"]["type"] == "note"
    assert c["reply_last"]["type"] == "reply_admin"
    assert c["reply_last"]["from"] == {
        "id": world.admin_id,
        "name": "Ann",
        "avatar": "",
        "type": "admin",
        "name_internal": "Ann",
    }
    assert c["assignee"] == {
        "id": world.admin_id,
        "name": "Ann",
        "avatar": "",
        "type": "admin",
        "name_internal": "Ann",
    }
    assert c["last_admin"] == c["assignee"]
    assert "channel" not in c
    assert c["tags"] == ["vip"]
    assert c["unread_parts_count"] == c["user_unread_count"] == 1


async def test_list_filters(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    a = admin(world)
    unassigned = await started(app_db, world, "u")
    mine = await assigned(app_db, world, "mine")
    theirs = await started(app_db, world, "theirs")
    await service.perform(app_db, world.app_id, theirs, ev.Assign(world.other_admin_id, a))
    await service.perform(app_db, world.app_id, theirs, ev.AdminReply(a, "answered"))
    closed = await assigned(app_db, world, "closed")
    await service.perform(app_db, world.app_id, closed, ev.Close(a))
    snoozed = await assigned(app_db, world, "snoozed")
    await service.perform(app_db, world.app_id, snoozed, ev.Delay(utcnow() + timedelta(hours=1), a))
    tagged = await assigned(app_db, world, "tagged")
    for tag in ("x", "y"):
        await service.perform(app_db, world.app_id, tagged, ev.AddTag(tag, a))
    half = await assigned(app_db, world, "half")
    await service.perform(app_db, world.app_id, half, ev.AddTag("x", a))
    sales = await assigned(app_db, world, "sales")
    await service.perform(app_db, world.app_id, sales, ev.ChangeChannel(world.channel_id, a))
    nowhere = await assigned(app_db, world, "nowhere")
    await service.perform(app_db, world.app_id, nowhere, ev.ChangeChannel(None, a))
    bot = await started(app_db, world, "bot")
    await service.perform(app_db, world.app_id, bot, ev.BotTakeOver(AssistantType.LEAD_BOT))

    async def listed(**params: str) -> set[object]:
        return set(ids(ok(await api.get(LIST, params=params))))

    everything = {unassigned, mine, theirs, closed, snoozed, tagged, half, sales, nowhere, bot}
    assigned_ones = everything - {unassigned, bot}
    assert await listed(include_not_assigned="true") == everything
    assert await listed() == assigned_ones
    assert await listed(include_not_assigned="false") == assigned_ones
    assert await listed(closed="true") == {closed}
    assert await listed(closed="false") == assigned_ones - {closed}
    assert await listed(closed="FALSE", include_not_assigned="1") == everything - {closed}
    assert await listed(answered="true") == {theirs}
    assert await listed(answered="0") == assigned_ones - {theirs}
    assert await listed(delayed="true") == {snoozed}
    assert await listed(delayed="") == assigned_ones - {snoozed}
    assert await listed(assigned=str(world.other_admin_id)) == {theirs}
    assert await listed(assigned=str(world.other_admin_id), include_not_assigned="true") == {
        theirs,
        unassigned,
        bot,
    }
    assert await listed(assigned="0", include_not_assigned="true") == {unassigned, bot}
    assert await listed(assigned="0") == set()
    assert await listed(tags="x") == {tagged, half}
    assert await listed(tags="x,y") == {tagged}
    assert await listed(tags='["y"]', include_no_tags="true") == assigned_ones - {half}
    assert await listed(channel=str(world.channel_id)) == {sales}
    assert await listed(channel="0") == {nowhere}
    assert await listed(channel=str(world.default_channel_id)) == assigned_ones - {sales, nowhere}
    assert await listed(assistant_type="lead_bot", include_not_assigned="yes") == {bot}
    assert await listed(assistant_type="lead_bot") == set()


# ---------------------------------------------------------------------------
# One conversation and its parts


async def test_get_one(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    cid = await assigned(app_db, world)
    c = ok(await api.get(f"/conversations/{cid}"))
    assert c["id"] == cid
    assert c["channel"] == {
        "id": world.default_channel_id,
        "name": "Inbox",
        "type": "manual",
        "avatar": "",
    }
    assert c["user"]["id"] == world.user_id
    assert c["part_last"]["type"] == "assigned"
    assert c["important_part_last"]["type"] == "reply_user"
    assert c["reply_last"]["from"] == world.user_id
    assert c["reply_last"]["direction"] == "u2a"
    assert c["sended_time"] == c["created"]
    assert c["replied"] is True
    assert c["important"] is True
    # The user started it: its first message is read; no click or unsubscription tracked.
    assert c["read"] is True
    for legacy in ("clicked", "unsubscribed"):
        assert c[legacy] is False
    await service.perform(app_db, world.app_id, cid, ev.ChangeChannel(None, admin(world)))
    assert ok(await api.get(f"/v1/conversations/{cid}"))["channel"] is None
    error(await api.get("/conversations/987654"), 404, "NotFound")


async def test_parts_newest_first_with_notes_and_system_parts(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await assigned(app_db, world)
    a = admin(world)
    await service.perform(app_db, world.app_id, cid, ev.ContentPart(PartType.NOTE, a, "psst"))
    await service.perform(app_db, world.app_id, cid, ev.AddTag("t", a))
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    assert [p["type"] for p in parts] == ["tag_added", "note", "assigned", "reply_user"]
    assert parts[0]["tag"] == "t"
    assert "assignee" not in parts[0]
    assert parts[2]["assignee"]["id"] == world.admin_id
    assert "tag" not in parts[2]
    assert parts[3]["from"] == world.user_id
    assert parts[3]["read"] is False
    assert {p["part_group"] for p in parts} == {parts[3]["id"]}
    assert all(p["direction"] == "a2u" for p in parts[:3])
    # The vendor's list has no value for a system part: empty ("could not define").
    assert parts[2]["sent_via"] == ""
    error(await api.get("/conversations/987654/parts"), 404, "NotFound")


# ---------------------------------------------------------------------------
# Reply


async def test_reply_from_admin_and_default_admin(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    part = ok(
        await api.post(
            f"/conversations/{cid}/reply",
            json={"body": "<b>Hi</b>", "from_admin": str(world.admin_id)},
        )
    )
    assert part["type"] == "reply_admin"
    assert part["body"] == "<b>Hi</b>"
    # The answer shows the author as read in the write's own transaction, like a later read.
    assert part["from"] == {
        "id": world.admin_id,
        "name": "Ann",
        "avatar": "",
        "type": "admin",
        "name_internal": "Ann",
    }
    listed = ok(await api.get(f"/conversations/{cid}/parts", params={"count": 50}))
    assert [p for p in listed if p["id"] == part["id"]] == [part]
    # The vendor's list has no value for a reply through the API: empty.
    assert part["sent_via"] == ""
    assert part["direction"] == "a2u"
    assert part["conversation"] == cid
    for from_admin in ("default_admin", None):
        payload = {"body": "From the team"} | ({"from_admin": from_admin} if from_admin else {})
        part = ok(await api.post(f"/conversations/{cid}/reply", json=payload))
        assert part["from"] == {
            "id": world.sender_id,
            "name": "Acme",
            "email_name": "",
            "is_default": True,
            "is_removed": False,
            "is_bot": False,
            "avatar": "",
            "type": "message_sender",
        }
    c = ok(await api.get(f"/conversations/{cid}"))
    assert c["last_admin"]["id"] == world.admin_id  # the sender is no admin
    assert c["replies_count"] == 4
    error(
        await api.post(
            f"/conversations/{cid}/reply", json={"body": "x", "from_admin": world.foreign_admin_id}
        ),
        404,
        "NotFound",
    )
    error(
        await api.post(f"/conversations/{cid}/reply", json={"body": "x", "from_admin": 999999}),
        404,
        "NotFound",
    )


@pytest.mark.parametrize("kind", ["note", "article"])
async def test_reply_types(
    api: httpx.AsyncClient, app_db: Database, world: World, kind: str
) -> None:
    cid = await started(app_db, world)
    part = ok(
        await api.post(
            f"/conversations/{cid}/reply",
            data={"body": "text", "type": kind, "from_admin": world.admin_id},
        )
    )
    assert part["type"] == kind
    c = ok(await api.get(f"/conversations/{cid}"))
    assert c["replies_count"] == 1
    assert c["important_part_last"]["id"] == part["id"]


async def test_reply_as_user(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    for from_user in (str(world.user_id), "default_user"):
        part = ok(
            await api.post(
                f"/conversations/{cid}/reply",
                json={"body": "me again", "from_user": from_user, "type": "note"},
            )
        )
        assert part["type"] == "reply_user"  # `type` is ignored with from_user
        assert part["from"] == world.user_id
    other_user = await apps.create_user(app_db, world.app_id, site_user_id="u-2")
    message = error(
        await api.post(f"/conversations/{cid}/reply", json={"body": "x", "from_user": other_user}),
        400,
        "BadRequest",
    )
    assert message.startswith("from_user")
    token = await token_with(app_db, world, "conversations-write")
    async with client_for(app, token) as client:
        error(
            await client.post(
                f"/conversations/{cid}/reply", json={"body": "x", "from_user": "default_user"}
            ),
            403,
            "PermissionDenied",
        )
        ok(await client.post(f"/conversations/{cid}/reply", json={"body": "as the team"}))
    c = ok(await api.get(f"/conversations/{cid}"))
    assert c["replies_count"] == 4
    assert c["admin_unread_count"] == 0  # answering means having read


async def test_reply_fields_and_idempotency(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    payload = {
        "body": "Hi",
        "body_json": {"blocks": [1, 2]},
        "external_id": "ext-1",
        "random_id": 123456789012,
        "referrer": "https://example.com/page",
        "actions": '[{"type": "button"}]',
    }
    first = ok(await api.post(f"/conversations/{cid}/reply", json=payload))
    assert first["external_id"] == "ext-1"
    assert first["random_id"] == 123456789012
    assert first["body_json"] == {"blocks": [1, 2]}
    assert first["referrer"] == "https://example.com/page"
    assert first["actions"] == [{"type": "button"}]
    again = ok(await api.post(f"/conversations/{cid}/reply", json=payload))
    assert again == first
    assert ok(await api.get(f"/conversations/{cid}"))["parts_count"] == 2
    # body_json alone is content enough
    ok(await api.post(f"/conversations/{cid}/reply", json={"body_json": {"k": 1}}))


ACTIONS = [
    {"type": "button", "text": "Track my order", "url": "https://shop.test/track/42"},
    {"type": "button", "text": "A person", "payload": {"queue": "human", "n": [1, 2], "w": 0.5}},
]


async def test_referrer_and_actions_are_stored_and_served_on_the_part(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/reply"
    # The user writes from a page; the operator offers actions (JSON, or form-encoded text).
    by_user = ok(
        await api.post(
            url, json={"body": "Where?", "from_user": True, "referrer": "https://shop.test/cart"}
        )
    )
    by_admin = ok(
        await api.post(
            url,
            data={
                "body": "Choose",
                "from_admin": str(world.admin_id),
                "actions": json.dumps(ACTIONS),
                "referrer": "https://app.test/inbox",
            },
        )
    )
    note = ok(await api.post(url, json={"body": "hm", "type": "note", "actions": ACTIONS[:1]}))
    plain = ok(await api.post(url, json={"body": "no extras"}))
    assert (by_user["referrer"], by_user["actions"]) == ("https://shop.test/cart", None)
    assert (by_admin["referrer"], by_admin["actions"]) == ("https://app.test/inbox", ACTIONS)
    assert (note["referrer"], note["actions"]) == (None, ACTIONS[:1])
    assert (plain["referrer"], plain["actions"]) == (None, None)
    # Read back from storage: the parts list, and the conversation's embedded last parts.
    stored = {p["id"]: p for p in ok(await api.get(f"/conversations/{cid}/parts"))}
    for part in (by_user, by_admin, note, plain):
        # All as answered, but `read`: the operator's reply marked the user's part read.
        assert stored[part["id"]] | {"read": part["read"]} == part
    conversation = ok(await api.get(f"/conversations/{cid}"))
    assert conversation["reply_last"]["id"] == plain["id"]
    assert conversation["reply_last"]["actions"] is None
    ok(await api.post(url, json={"body": "last", "actions": ACTIONS}))
    assert ok(await api.get(f"/conversations/{cid}"))["reply_last"]["actions"] == ACTIONS


@pytest.mark.parametrize(
    ("values", "blamed"),
    [
        ({"actions": [1, 2]}, "actions"),
        ({"actions": [{"type": "button"}, "text"]}, "actions"),
        ({"actions": {"type": "button"}}, "actions"),
        ({"actions": "[{not json"}, "actions"),
        ({"actions": '[{"text": "a\\u0000b"}]'}, "actions"),  # NUL, escaped in JSON text
        ({"body_json": '{"text": "a\\u0000b"}'}, "body_json"),
        ({"referrer": "https://shop.test/" + "x" * 4096}, "referrer"),
    ],
)
async def test_bad_referrer_actions_or_json_are_refused_and_change_nothing(
    api: httpx.AsyncClient,
    app_db: Database,
    world: World,
    values: dict[str, object],
    blamed: str,
) -> None:
    cid = await started(app_db, world)
    before = ok(await api.get(f"/conversations/{cid}"))
    message = error(
        await api.post(f"/conversations/{cid}/reply", json={"body": "x"} | values),
        400,
        "BadRequest",
    )
    assert message.startswith(f"{blamed}:")
    assert ok(await api.get(f"/conversations/{cid}")) == before
    assert len(ok(await api.get(f"/conversations/{cid}/parts"))) == 1


async def test_reply_with_auto_assign_is_two_parts_in_one_transaction(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/reply"
    payload = {
        "body": "On it",
        "from_admin": world.admin_id,
        "auto_assign": world.other_admin_id,
        "random_id": 9,
        "auto_assign_random_id": 10,
    }
    part = ok(await api.post(url, json=payload))
    assert part["type"] == "reply_admin"
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    assert [p["type"] for p in parts] == ["reply_admin", "assigned", "reply_user"]
    assert parts[1]["assignee"]["id"] == world.other_admin_id
    assert parts[1]["id"] < parts[0]["id"]
    assert ok(await api.post(url, json=payload)) == part  # a retry creates nothing
    assert len(ok(await api.get(f"/conversations/{cid}/parts"))) == 3
    # A refused reply takes its assignment with it.
    other = await started(app_db, world)
    error(
        await api.post(
            f"/conversations/{other}/reply", json={"body": " ", "auto_assign": world.admin_id}
        ),
        400,
        "BadRequest",
    )
    state = await service.get_conversation(app_db, world.app_id, other)
    assert state.assignee_id is None
    assert state.parts_count == 1


# ---------------------------------------------------------------------------
# Assign, close, tags


async def test_assign_and_unassign(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/assign"
    ref = ok(
        await api.post(url, data={"admin": world.admin_id, "from_admin": world.other_admin_id})
    )
    assert set(ref) == {"id", "part_group"}
    assert ok(await api.post(url, data={"admin": world.admin_id})) == {}
    c = ok(await api.get(f"/conversations/{cid}"))
    assert c["assignee"]["id"] == world.admin_id
    assert c["part_last"]["from"]["id"] == world.other_admin_id
    assert set(ok(await api.post(url, data={"admin": ""}))) == {"id", "part_group"}
    assert ok(await api.get(f"/conversations/{cid}"))["assignee"] is None
    assert ok(await api.post(url, data={"admin": "0"})) == {}
    # random_id: the retry answers the first part even though the state moved on
    first = ok(await api.post(url, json={"admin": world.admin_id, "random_id": 5}))
    assert ok(await api.post(url, json={"admin": world.admin_id, "random_id": 5})) == first
    error(await api.post(url, json={"admin": world.foreign_admin_id}), 404, "NotFound")
    assert ok(await api.get(f"/conversations/{cid}"))["assignee"]["id"] == world.admin_id


async def test_close(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/close"
    ref = ok(await api.post(url, json={"from_admin": world.admin_id, "random_id": 3}))
    assert set(ref) == {"id", "part_group"}
    assert ok(await api.post(url, json={"random_id": 3})) == ref
    assert ok(await api.post(url)) == {}
    c = ok(await api.get(f"/conversations/{cid}"))
    assert c["closed"] is True
    assert c["parts_count"] == 2


async def test_tags_v2(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/tag"
    ref = ok(await api.post(url, json={"tag": "vip"}))
    assert set(ref) == {"id", "part_group"}
    error(await api.post(url, json={"tag": "vip"}), 400, "ConversationTagAlreadyAssigned")
    ok(await api.post(url, json={"tag": "b"}))
    assert ok(await api.get(f"/conversations/{cid}"))["tags"] == ["vip", "b"]
    assert set(ok(await api.delete(url, params={"tag": "vip"}))) == {"id", "part_group"}
    error(await api.delete(url, params={"tag": "vip"}), 400, "ConversationTagIsNotAssigned")
    error(await api.delete(f"/v1{url}", params={"tag": "vip"}), 400, "ConversationTagIsNotAssigned")
    assert ok(await api.get(f"/conversations/{cid}"))["tags"] == ["b"]
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    assert [(p["type"], p.get("tag")) for p in parts[:3]] == [
        ("tag_deleted", "vip"),
        ("tag_added", "b"),
        ("tag_added", "vip"),
    ]


async def test_tags_v1(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    cid = await started(app_db, world)
    url = f"/v1/conversations/{cid}/tag"
    assert ok(await api.post(url, data={"tag": "vip"})) == {}
    assert ok(await api.post(url, data={"tag": "vip", "action": "add"})) == {}
    assert ok(await api.post(url, data={"tag": "gone", "action": "delete"})) == {}
    assert ok(await api.get(f"/conversations/{cid}"))["tags"] == ["vip"]
    assert (
        ok(
            await api.post(
                f"/conversations/{cid}/tag", data={"tag": "vip", "action": "delete", "version": "1"}
            )
        )
        == {}
    )
    c = ok(await api.get(f"/conversations/{cid}"))
    assert c["tags"] == []
    assert c["parts_count"] == 3
    error(await api.post(url, data={"tag": "x", "action": "toggle"}), 400, "BadRequest")


# ---------------------------------------------------------------------------
# Users


async def test_user_conversations(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    first = await started(app_db, world)
    outbound = ok(await api.post(f"/users/{world.user_id}/sendmessage", json={"body": "Offer"}))
    second = await started(app_db, world)
    removed = await started(app_db, world)
    await service.perform(app_db, world.app_id, removed, ev.Remove())
    url = f"/users/{world.user_id}/conversations"
    data = ok(await api.get(url))
    assert ids(data) == [second, outbound["conversation"], first]
    # The vendor's page includes `user` by default here too.
    assert all(c["user"]["id"] == world.user_id for c in data)
    assert data[1]["reply_last"]["type"] == "reply_admin"
    assert ids(ok(await api.get(url, params={"with_user_replies_only": "true"}))) == [second, first]
    assert ids(ok(await api.get("/users/u-1/conversations", params={"by_user_id": "true"}))) == ids(
        data
    )
    # Every one here is for `all` recipients: on the web and in the SDK alike.
    assert ids(ok(await api.get(url, params={"recipient_type": "web"}))) == ids(data)
    assert ids(ok(await api.get(url, params={"recipient_type": "sdk"}))) == ids(data)
    assert ids(ok(await api.get(url, params={"recipient_type": "all"}))) == ids(data)
    error(
        await api.get("/users/nobody/conversations", params={"by_user_id": "1"}), 400, "LookupError"
    )
    error(await api.get("/users/987654/conversations"), 404, "NotFound")
    error(await api.get("/users/u-1/conversations"), 400, "BadRequest")


async def test_start_conversation(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    url = f"/users/{world.user_id}/startconversation"
    cid = ok(
        await api.post(url, data={"body": "Help!", "random_id": "42", "referrer": "https://x.test"})
    )["id"]
    assert ok(await api.post(url, data={"body": "Help!", "random_id": "42"}))["id"] == cid
    c = ok(await api.get(f"/conversations/{cid}"))
    assert c["parts_count"] == 1
    assert c["reply_last"]["body"] == "Help!"
    assert c["reply_last"]["random_id"] == 42
    # The page the user started from is on the conversation's first part.
    assert c["reply_last"]["referrer"] == "https://x.test"
    [first] = ok(await api.get(f"/conversations/{cid}/parts"))
    assert (first["referrer"], first["actions"]) == ("https://x.test", None)
    message = error(
        await api.post(
            "/users/site-79/startconversation",
            json={"body": "hi", "by_user_id": True, "referrer": "x" * 4097},
        ),
        400,
        "BadRequest",
    )
    assert message.startswith("referrer:")
    error(  # refused before the user was created
        await api.get("/users/site-79/conversations", params={"by_user_id": True}),
        400,
        "LookupError",
    )
    # by_user_id creates the user on first contact, then finds them
    new = ok(
        await api.post("/users/site-77/startconversation", json={"body": "hi", "by_user_id": True})
    )
    again = ok(
        await api.post("/users/site-77/startconversation", json={"body": "hi", "by_user_id": True})
    )
    assert new["id"] != again["id"]
    owners = {
        ok(await api.get(f"/conversations/{x['id']}"))["user"]["user_id"] for x in (new, again)
    }
    assert owners == {"site-77"}
    # refused requests create nothing, not even the user
    error(
        await api.post("/users/site-78/startconversation", json={"body": "", "by_user_id": True}),
        400,
        "BadRequest",
    )
    error(
        await api.get("/users/site-78/conversations", params={"by_user_id": True}),
        400,
        "LookupError",
    )
    error(await api.post("/users/987654/startconversation", json={"body": "hi"}), 404, "NotFound")
    token = await token_with(app_db, world, "conversations-write")
    async with client_for(app, token) as client:
        error(await client.post(url, json={"body": "hi"}), 403, "PermissionDenied")


@pytest.mark.parametrize(
    ("kind", "reply_type"),
    [("popup_chat", "text"), ("popup_small", "text"), ("popup_big", "text"), ("email", "email")],
)
async def test_send_message(
    api: httpx.AsyncClient, app_db: Database, world: World, kind: str, reply_type: str
) -> None:
    sent = ok(
        await api.post(f"/users/{world.user_id}/sendmessage", data={"body": "Offer", "type": kind})
    )
    assert set(sent) == {"conversation", "message"}
    c = ok(await api.get(f"/conversations/{sent['conversation']}"))
    assert c["message"] == sent["message"]
    assert c["type"] == kind
    assert c["reply_type"] == reply_type
    assert c["replied"] is False
    assert c["status"] == "created"
    assert c["reply_last"]["from"]["type"] == "message_sender"
    assert ids(ok(await api.get(LIST, params=ALL))) == []


async def test_send_message_params_and_scope(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    url = f"/users/{world.user_id}/sendmessage"
    error(await api.post(url, json={"body": "x", "type": "push"}), 400, "BadRequest")
    error(await api.post(url, json={}), 400, "BadRequest")
    error(
        await api.post("/users/nobody/sendmessage", json={"body": "x", "by_user_id": 1}),
        400,
        "LookupError",
    )
    assert ok(await api.post("/users/u-1/sendmessage", json={"body": "x", "by_user_id": 1}))[
        "conversation"
    ]
    token = await token_with(app_db, world, "conversations-write", "conversations-read")
    async with client_for(app, token) as client:
        error(await client.post(url, json={"body": "x"}), 403, "PermissionDenied")
    token = await token_with(app_db, world, "messages-manual-send-one")
    async with client_for(app, token) as client:
        ok(await client.post(url, json={"body": "x"}))


# ---------------------------------------------------------------------------
# Channels


async def test_channels_with_counts(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    a = admin(world)
    await started(app_db, world)  # unassigned, unread, default channel
    read = await assigned(app_db, world)
    await service.perform(app_db, world.app_id, read, ev.ReadByAdmin())
    sales = await started(app_db, world)
    await service.perform(app_db, world.app_id, sales, ev.ChangeChannel(world.channel_id, a))
    closed = await started(app_db, world)
    await service.perform(app_db, world.app_id, closed, ev.Close(a))
    channels = ok(await api.get("/apps/$self_app/channels"))
    operators = [
        {
            "id": world.admin_id,
            "name": "Ann",
            "avatar": "",
            "type": "admin",
            "name_internal": "Ann",
        },
        {
            "id": world.other_admin_id,
            "name": "Bob",
            "avatar": "",
            "type": "admin",
            "name_internal": "Bob",
        },
    ]
    fields = {
        "type": "manual",
        "avatar": "",
        "droppable": True,
        "operators": operators,
        "read_permission": True,
        "priority": 0,
        "auto_set_settings": {},
    }
    # `not_read_count` counts the unanswered ones (the last reply is the user's): in the
    # default channel the unread one and the read one.
    assert channels == [
        {
            "id": world.default_channel_id,
            "name": "Inbox",
            **fields,
            "not_assigned_count": 1,
            "not_read_count": 2,
            "auto_set": True,
        },
        {
            "id": world.channel_id,
            "name": "Sales",
            **fields,
            "not_assigned_count": 1,
            "not_read_count": 1,
            "auto_set": False,
        },
    ]


async def test_a_user_reply_with_auto_assign_assigns_first_by_the_system(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/reply"
    payload = {
        "body": "Still waiting",
        "from_user": str(world.user_id),
        "auto_assign": world.other_admin_id,
        "random_id": 31,
        "auto_assign_random_id": 32,
    }
    part = ok(await api.post(url, json=payload))
    assert part["type"] == "reply_user"
    assert part["random_id"] == 31
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    assert [p["type"] for p in parts] == ["reply_user", "assigned", "reply_user"]
    assert parts[1]["assignee"]["id"] == world.other_admin_id
    assert parts[1]["random_id"] == 32
    assert parts[1]["from"] is None  # by the system: neither the user nor an operator
    c = ok(await api.get(f"/conversations/{cid}"))
    assert c["assignee"]["id"] == world.other_admin_id
    assert c["admin_unread_count"] == 2
    assert ok(await api.post(url, json=payload)) == part  # a retry creates nothing
    assert len(ok(await api.get(f"/conversations/{cid}/parts"))) == 3
    # Another app's admin is not found, and nothing is written.
    refused = {**payload, "auto_assign": world.foreign_admin_id, "random_id": 33}
    error(await api.post(url, json=refused), 404, "NotFound")
    assert len(ok(await api.get(f"/conversations/{cid}/parts"))) == 3


async def test_bot_authored_parts_are_served_with_their_bot(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    bot = Author(AuthorKind.BOT, 7)
    await service.perform(
        app_db, world.app_id, cid, ev.AdminReply(author=bot, body="Hi, I am a bot")
    )
    await service.perform(
        app_db,
        world.app_id,
        cid,
        ev.ContentPart(type=PartType.CHAT_BOT_USER, author=bot, body="Pick one"),
    )
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    by_type = {p["type"]: p for p in parts}
    # A bot written without a name shows the vendor's default one.
    shown = {"id": 7, "name": "Bot", "avatar": "", "type": "bot"}
    assert by_type["reply_admin"]["from"] == shown
    assert by_type["reply_admin"]["direction"] == "a2u"
    assert by_type["chat_bot_user"]["from"] == shown
    c = ok(await api.get(f"/conversations/{cid}"))
    assert c["last_admin"] is None  # a bot is not an operator
    assert c["reply_last"]["from"] == shown
