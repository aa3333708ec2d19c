"""The vendor's user endpoints that touch conversations, and the channel list, parameter by
parameter in every form. See README.md for the list."""

from __future__ import annotations

import httpx
import pytest

from tests.api.helpers import error, ok, started
from tests.compat.forms import FORMS, QUERY, READ_FORMS, send
from tests.conftest import World
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import ConversationType, RecipientType
from threadline.core.model import Author
from threadline.db.engine import Database


@pytest.mark.parametrize("form", READ_FORMS)
async def test_user_conversations_every_parameter(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    by_user = await started(app_db, world)
    sent = ok(await api.post(f"/users/{world.user_id}/sendmessage", data={"body": "Offer"}))
    outbound = sent["conversation"]

    async def listed(user: object, **params: object) -> list[int]:
        return [
            c["id"]
            for c in ok(await send(api, "GET", f"/users/{user}/conversations", params, form))
        ]

    assert await listed(world.user_id) == [outbound, by_user]
    assert await listed("u-1", by_user_id=True) == [outbound, by_user]
    assert await listed(world.user_id, with_user_replies_only=True) == [by_user]
    assert await listed(world.user_id, with_user_replies_only=False) == [outbound, by_user]
    assert await listed(world.user_id, recipient_type="web") == [outbound, by_user]
    # Both are for `all` recipients, which the web and the SDK both get.
    assert await listed(world.user_id, recipient_type="sdk") == [outbound, by_user]
    # `app`: "ID of requesting application. Default: calculated based on access token."
    assert await listed(world.user_id, app=world.app_id) == [outbound, by_user]
    # "user, important_part_last, reply_last, part_last optional fields are included by
    # default."
    one = ok(await send(api, "GET", f"/users/{world.user_id}/conversations", {}, form))[0]
    assert {"user", "part_last", "reply_last", "important_part_last"} <= set(one)
    assert one["user"]["id"] == world.user_id
    error(
        await send(api, "GET", "/users/nobody/conversations", {"by_user_id": True}, form),
        400,
        "LookupError",
    )


async def test_user_conversations_v1_and_v2_pagination(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    made = [await started(app_db, world, str(i)) for i in range(3)]
    url = f"/users/{world.user_id}/conversations"
    first = (await api.get("/v1" + url, params={"count": 2})).json()
    assert [c["id"] for c in first["data"]] == made[::-1][:2]
    rest = ok(await api.get("/v1" + url, params={"count": 2, "after": first["meta"]["next_after"]}))
    assert [c["id"] for c in rest] == [made[0]]
    v2 = (await api.get(url, params={"paginate_count": 2})).json()
    position = v2["meta"]["next_before_position"]
    rest2 = ok(await api.get(url, params={"paginate_count": 2, "paginate_position": str(position)}))
    assert [c["id"] for c in rest2] == [made[0]]


@pytest.mark.parametrize("form", FORMS)
async def test_start_conversation_every_parameter(
    api: httpx.AsyncClient, world: World, form: str
) -> None:
    started_id = ok(
        await send(
            api,
            "POST",
            f"/users/{world.user_id}/startconversation",
            {
                "body": "Hello",
                "random_id": 12,
                "referrer": "https://shop.test",
                "app": world.app_id,
            },
            form,
        )
    )["id"]
    again = ok(
        await send(
            api,
            "POST",
            f"/users/{world.user_id}/startconversation",
            {"body": "Hello", "random_id": 12},
            form,
        )
    )
    assert again["id"] == started_id
    [first] = ok(await api.get(f"/conversations/{started_id}/parts"))
    assert first["referrer"] == "https://shop.test"
    by_site_id = ok(
        await send(
            api,
            "POST",
            "/users/new-site-user/startconversation",
            {"body": "Hi", "by_user_id": True},
            form,
        )
    )
    got = ok(await api.get(f"/conversations/{by_site_id['id']}"))
    assert got["user"]["user_id"] == "new-site-user"
    assert got["type"] == "popup_chat"
    if form != QUERY:  # no client puts 70 000 characters into a URL
        error(
            await send(
                api,
                "POST",
                f"/users/{world.user_id}/startconversation",
                {"body": "x" * 70_000},
                form,
            ),
            400,
            "ReplyTooBig",
        )


async def test_start_conversation_with_a_file(api: httpx.AsyncClient, world: World) -> None:
    cid = ok(
        await api.post(
            f"/users/{world.user_id}/startconversation",
            files={"file": ("a.png", b"\x89PNG....", "image/png"), "filename": (None, "shot.png")},
        )
    )["id"]
    part = ok(await api.get(f"/conversations/{cid}"))["part_last"]
    assert part["attachments"][0]["filename"] == "shot.png"


@pytest.mark.parametrize("form", FORMS)
async def test_send_message_every_parameter(
    api: httpx.AsyncClient, world: World, form: str
) -> None:
    for kind in ("popup_chat", "popup_small", "popup_big"):
        sent = ok(
            await send(
                api,
                "POST",
                f"/users/{world.user_id}/sendmessage",
                {"body": "Hi", "type": kind},
                form,
            )
        )
        assert set(sent) == {"conversation", "message"}
        got = ok(await api.get(f"/conversations/{sent['conversation']}"))
        assert got["type"] == kind
        assert got["message"] == sent["message"]
    default = ok(
        await send(
            api,
            "POST",
            "/users/u-1/sendmessage",
            {"body": "Hi", "by_user_id": True, "app": world.app_id},
            form,
        )
    )
    assert ok(await api.get(f"/conversations/{default['conversation']}"))["type"] == "popup_chat"
    error(
        await send(
            api, "POST", "/users/nobody/sendmessage", {"body": "Hi", "by_user_id": True}, form
        ),
        400,
        "LookupError",
    )


@pytest.mark.parametrize("form", READ_FORMS)
async def test_channels_with_counts(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    await service.perform(app_db, world.app_id, cid, ev.UserReply("more"))
    channels = ok(await send(api, "GET", f"/apps/{world.app_id}/channels", {}, form))
    default = next(c for c in channels if c["id"] == world.default_channel_id)
    assert default["not_assigned_count"] == 1
    assert default["not_read_count"] == 1
    for channel in channels:
        assert {"id", "name", "avatar", "type", "not_assigned_count", "not_read_count"} <= set(
            channel
        )
        assert isinstance(channel["avatar"], str)


async def test_app_parameter_of_another_app_is_not_found_and_changes_nothing(
    api: httpx.AsyncClient, world: World
) -> None:
    theirs = {"app": world.foreign_app_id}
    error(await api.get(f"/users/{world.user_id}/conversations", params=theirs), 404, "NotFound")
    error(
        await api.post(f"/users/{world.user_id}/startconversation", data={"body": "x", **theirs}),
        404,
        "NotFound",
    )
    error(
        await api.post(f"/users/{world.user_id}/sendmessage", data={"body": "x", **theirs}),
        404,
        "NotFound",
    )
    assert (
        ok(await api.get(f"/users/{world.user_id}/conversations", params={"app": "$self_app"}))
        == []
    )


async def test_recipient_type_defaults_to_web(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    """ "Available values: web (default) or sdk": a message for SDK recipients only is left
    out unless `sdk` (or Threadline's `all`) is asked for."""
    web = await started(app_db, world)
    sdk = await service.start_by_message(
        app_db,
        world.app_id,
        world.user_id,
        body="Push",
        sender=Author.system(),
        type_=ConversationType.SDK_PUSH,
        recipient_type=RecipientType.SDK,
    )
    sdk_id = sdk.outcome.state.id
    url = f"/users/{world.user_id}/conversations"

    async def listed(**params: str) -> list[int]:
        return [c["id"] for c in ok(await api.get(url, params=params))]

    assert await listed() == [web]
    assert await listed(recipient_type="web") == [web]
    assert await listed(recipient_type="sdk") == [sdk_id, web]
    assert await listed(recipient_type="all") == [sdk_id, web]
