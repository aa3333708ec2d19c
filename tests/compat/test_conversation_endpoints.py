"""The vendor's conversation endpoints, parameter by parameter, in every form a client
may send them (query, urlencoded, multipart, JSON). See README.md for the list."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from tests.api.helpers import admin, assigned, error, ok, started
from tests.compat.forms import FORMS, READ_FORMS, send
from tests.conftest import World
from threadline.apps.service import utcnow
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AssistantType
from threadline.db.engine import Database

# ---------------------------------------------------------------------------
# GET /apps/{id}/conversations


@pytest.mark.parametrize("form", READ_FORMS)
async def test_app_conversations_every_filter(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    a = admin(world)
    unassigned = await started(app_db, world, "u")
    answered = await assigned(app_db, world, "answered")
    await service.perform(app_db, world.app_id, answered, ev.AdminReply(a, "yes"))
    closed = await assigned(app_db, world, "closed")
    await service.perform(app_db, world.app_id, closed, ev.Close(a))
    snoozed = await assigned(app_db, world, "snoozed")
    await service.perform(app_db, world.app_id, snoozed, ev.Delay(utcnow() + timedelta(hours=1), a))
    tagged = await assigned(app_db, world, "tagged")
    for tag in ("x", "y"):
        await service.perform(app_db, world.app_id, tagged, ev.AddTag(tag, a))
    sales = await assigned(app_db, world, "sales")
    await service.perform(app_db, world.app_id, sales, ev.ChangeChannel(world.channel_id, a))
    nowhere = await assigned(app_db, world, "nowhere")
    await service.perform(app_db, world.app_id, nowhere, ev.ChangeChannel(None, a))
    bot = await started(app_db, world, "bot")
    await service.perform(app_db, world.app_id, bot, ev.BotTakeOver(AssistantType.LEAD_BOT))
    everything = {unassigned, answered, closed, snoozed, tagged, sales, nowhere, bot}
    mine = everything - {unassigned, bot}

    async def listed(**params: object) -> set[int]:
        answer = await send(api, "GET", f"/apps/{world.app_id}/conversations", params, form)
        return {c["id"] for c in ok(answer)}

    assert await listed() == mine
    assert await listed(include_not_assigned=True) == everything
    assert await listed(include_not_assigned=False) == mine
    assert await listed(closed=True) == {closed}
    assert await listed(closed=False) == mine - {closed}
    assert await listed(answered=True) == {answered}
    assert await listed(answered=False) == mine - {answered}
    assert await listed(delayed=True) == {snoozed}
    assert await listed(delayed=False) == mine - {snoozed}
    assert await listed(assigned=world.admin_id) == mine
    assert await listed(assigned=0, include_not_assigned=True) == {unassigned, bot}
    assert await listed(tags=["x"]) == {tagged}
    assert await listed(tags=["x", "y"]) == {tagged}
    assert await listed(tags=["y"], include_no_tags=True) == mine
    assert await listed(channel=world.channel_id) == {sales}
    assert await listed(channel=0) == {nowhere}
    assert await listed(assistant_type="lead_bot", include_not_assigned=True) == {bot}
    # `$self_app` and the token's app id name the same app.
    answer = await send(api, "GET", "/apps/$self_app/conversations", {}, form)
    assert {c["id"] for c in ok(answer)} == mine


async def test_app_conversations_tags_as_comma_separated_and_repeated(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    a = admin(world)
    both = await assigned(app_db, world)
    for tag in ("x", "y"):
        await service.perform(app_db, world.app_id, both, ev.AddTag(tag, a))
    url = f"/apps/{world.app_id}/conversations"
    assert [c["id"] for c in ok(await api.get(url, params={"tags": "x,y"}))] == [both]
    assert [c["id"] for c in ok(await api.get(url, params=[("tags", "x"), ("tags", "y")]))] == [
        both
    ]


async def test_app_conversations_embeds_and_v2_pagination(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    made = [await started(app_db, world, str(i)) for i in range(3)]
    url = f"/apps/{world.app_id}/conversations"
    base = {"include_not_assigned": "true", "paginate_count": 2}
    first = (await api.get(url, params=base)).json()
    assert [c["id"] for c in first["data"]] == made[::-1][:2]
    for key in ("user", "part_last", "important_part_last", "reply_last"):
        assert key in first["data"][0], key
    position = first["meta"]["next_before_position"]
    assert len(position) == 2
    rest = ok(await api.get(url, params={**base, "paginate_position": str(position)}))
    assert [c["id"] for c in rest] == [made[0]]
    asc = ok(await api.get(url, params={**base, "paginate_page_order": "asc"}))
    assert [c["id"] for c in asc] == made[::-1][:2][::-1]
    newer = ok(
        await api.get(
            url,
            params={**base, "paginate_position": str(position), "paginate_direction": "after"},
        )
    )
    assert [c["id"] for c in newer] == [made[2]]
    including = ok(
        await api.get(
            url,
            params={
                **base,
                "paginate_position": str(position),
                "paginate_including": "true",
            },
        )
    )
    assert [c["id"] for c in including] == [made[1], made[0]]


# ---------------------------------------------------------------------------
# GET /conversations/{id} and /conversations/{id}/parts


async def test_one_conversation_has_the_documented_fields(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await assigned(app_db, world)
    got = ok(await api.get(f"/conversations/{cid}"))
    documented = {
        "id", "created", "user", "read", "replied", "clicked", "unsubscribed", "closed",
        "message", "type", "reply_type", "part_last", "parts_count", "assignee",
        "unread_parts_count", "last_admin", "last_update", "tags", "channel",
        "important_part_last", "reply_last",
    }  # fmt: skip
    assert documented <= set(got)
    for key in ("id", "created", "last_update", "parts_count", "unread_parts_count"):
        assert type(got[key]) is int, key
    assert set(got["assignee"]) == {"id", "name", "avatar", "type", "name_internal"}
    assert got["assignee"]["type"] == "admin"
    assert set(got["channel"]) >= {"id", "name", "avatar", "type"}
    assert got["reply_last"]["sent_via"] == "web_user"


@pytest.mark.parametrize("form", READ_FORMS)
async def test_parts_v1_after_count_and_v2_positions(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    for i in range(3):
        await service.perform(app_db, world.app_id, cid, ev.AdminReply(admin(world), f"r{i}"))
    url = f"/v1/conversations/{cid}/parts"
    first = (await send(api, "GET", url, {"count": 2}, form)).json()
    assert [p["body"] for p in first["data"]] == ["r2", "r1"]
    after = first["meta"]["next_after"]
    rest = ok(await send(api, "GET", url, {"count": 2, "after": after}, form))
    assert [p["body"] for p in rest] == ["r0", "Hello"]
    v2 = (await send(api, "GET", f"/conversations/{cid}/parts", {"paginate_count": 3}, form)).json()
    assert [p["body"] for p in v2["data"]] == ["r2", "r1", "r0"]
    assert len(v2["meta"]["next_before_position"]) == 1
    part = v2["data"][0]
    for key in ("id", "created", "conversation", "body", "read", "type", "sent_via", "from"):
        assert key in part, key


# ---------------------------------------------------------------------------
# POST /conversations/{id}/reply


@pytest.mark.parametrize("form", FORMS)
async def test_reply_every_parameter(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/reply"
    part = ok(
        await send(
            api,
            "POST",
            url,
            {
                "body": "<b>Hi</b>",
                "body_json": {"k": "v"},
                "from_admin": world.admin_id,
                "type": "reply_admin",
                "external_id": "ext-1",
                "random_id": 1650977560,
                "auto_assign": world.other_admin_id,
                "auto_assign_random_id": 77,
                "referrer": "https://shop.test/page",
                "actions": [{"type": "button", "text": "Yes"}],
            },
            form,
        )
    )
    assert part["type"] == "reply_admin"
    assert part["body"] == "<b>Hi</b>"
    assert part["body_json"] == {"k": "v"}
    assert part["from"]["id"] == world.admin_id
    assert part["external_id"] == "ext-1"
    assert part["random_id"] == 1650977560
    assert part["referrer"] == "https://shop.test/page"
    assert part["actions"] == [{"type": "button", "text": "Yes"}]
    state = ok(await api.get(f"/conversations/{cid}"))
    assert state["assignee"]["id"] == world.other_admin_id
    # random_id: a retry (the same content again) writes nothing new and answers the first
    # part; the same key with other content is refused (tests/api/test_idempotency_key_reused).
    retry = {
        "body": "<b>Hi</b>",
        "body_json": {"k": "v"},
        "from_admin": world.admin_id,
        "random_id": 1650977560,
        "actions": [{"type": "button", "text": "Yes"}],  # content: a retry sends it again
    }
    again = ok(await send(api, "POST", url, retry, form))
    assert again["id"] == part["id"]
    note = ok(await send(api, "POST", url, {"body": "psst", "type": "note"}, form))
    assert note["type"] == "note"
    article = ok(await send(api, "POST", url, {"body": "kb", "type": "article"}, form))
    assert article["type"] == "article"
    default = ok(
        await send(api, "POST", url, {"body": "team", "from_admin": "default_admin"}, form)
    )
    assert default["from"]["type"] == "message_sender"
    as_user = ok(
        await send(api, "POST", url, {"body": "me", "from_user": True, "type": "note"}, form)
    )
    assert as_user["type"] == "reply_user"  # `type` is ignored with from_user
    as_default_user = ok(
        await send(api, "POST", url, {"body": "me", "from_user": "default_user"}, form)
    )
    assert as_default_user["from"] == world.user_id


async def test_reply_attachment_multipart(
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
    assert part["body"] == ""
    assert part["attachments"][0]["filename"] == "note.txt"


async def test_reply_too_big_and_bad_type(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    error(
        await api.post(f"/conversations/{cid}/reply", json={"body": "x" * 70_000}),
        400,
        "ReplyTooBig",
    )
    error(
        await api.post(f"/conversations/{cid}/reply", json={"body": "x", "type": "email"}),
        400,
        "BadRequest",
    )
    assert ok(await api.get(f"/conversations/{cid}"))["parts_count"] == 1


# ---------------------------------------------------------------------------
# POST /conversations/{id}/assign and /close


@pytest.mark.parametrize("form", FORMS)
async def test_assign_every_parameter(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/assign"
    made = ok(
        await send(
            api,
            "POST",
            url,
            {"admin": world.admin_id, "from_admin": world.other_admin_id, "random_id": 5},
            form,
        )
    )
    assert set(made) == {"id", "part_group"}
    # Already assigned to this admin: 200, empty data.
    assert ok(await send(api, "POST", url, {"admin": world.admin_id}, form)) == {}
    # `admin` empty (or left out): the assignment is removed.
    ok(await send(api, "POST", url, {"admin": "", "from_admin": "default_admin"}, form))
    assert ok(await api.get(f"/conversations/{cid}"))["assignee"] is None


@pytest.mark.parametrize("form", FORMS)
async def test_close_every_parameter(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/close"
    made = ok(await send(api, "POST", url, {"from_admin": world.admin_id, "random_id": 9}, form))
    assert set(made) == {"id", "part_group"}
    assert ok(await send(api, "POST", url, {"from_admin": "default_admin"}, form)) == {}
    assert ok(await api.get(f"/conversations/{cid}"))["closed"] is True


# ---------------------------------------------------------------------------
# POST / DELETE /conversations/{id}/tag


@pytest.mark.parametrize("form", FORMS)
async def test_tag_post_and_delete_every_parameter(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/tag"
    made = ok(
        await send(
            api, "POST", url, {"tag": "mytag", "from_admin": world.admin_id, "random_id": 3}, form
        )
    )
    assert set(made) == {"id", "part_group"}
    error(
        await send(api, "POST", url, {"tag": "mytag"}, form), 400, "ConversationTagAlreadyAssigned"
    )
    removed = ok(
        await send(api, "DELETE", url, {"tag": "mytag", "from_admin": "default_admin"}, form)
    )
    assert set(removed) == {"id", "part_group"}
    error(
        await send(api, "DELETE", url, {"tag": "mytag"}, form), 400, "ConversationTagIsNotAssigned"
    )
    error(await send(api, "POST", url, {"tag": "x" * 256}, form), 400, "BadRequest")
    assert ok(await api.get(f"/conversations/{cid}"))["tags"] == []


@pytest.mark.parametrize("form", FORMS)
async def test_v1_tag_action_add_and_delete(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    url = f"/v1/conversations/{cid}/tag"
    for _ in range(2):  # "If such a tag already exists, or does not yet: status 200"
        assert ok(await send(api, "POST", url, {"tag": "mytag", "action": "add"}, form)) == {}
    assert ok(await api.get(f"/conversations/{cid}"))["tags"] == ["mytag"]
    for _ in range(2):
        assert ok(await send(api, "POST", url, {"tag": "mytag", "action": "delete"}, form)) == {}
    assert ok(await api.get(f"/conversations/{cid}"))["tags"] == []


# ---------------------------------------------------------------------------
# POST /conversations/{id}/markread and /settyping


@pytest.mark.parametrize("form", FORMS)
async def test_markread_and_settyping_in_every_form(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    assert ok(await send(api, "POST", f"/conversations/{cid}/markread", {}, form)) == {}
    assert ok(await api.get(f"/conversations/{cid}"))["admin_unread_count"] == 0
    for params in (
        {"body": "My Message", "from_user": True},
        {"body": "My Message", "from_admin": world.admin_id},
        {"body": "My Message", "from_admin": "default_admin"},
    ):
        assert ok(await send(api, "POST", f"/conversations/{cid}/settyping", params, form)) == {}
    error(
        await send(api, "POST", f"/conversations/{cid}/settyping", {"from_admin": 987654}, form),
        400,
        "BadRequest",
    )
