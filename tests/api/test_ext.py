"""Threadline's /ext/ endpoints: conversation writes, user erasure, managing the app."""

from __future__ import annotations

import time

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
from threadline.core.enums import AssistantType
from threadline.db.engine import Database

# ---------------------------------------------------------------------------
# Conversation writes


async def test_read_by_admin_and_user(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    await service.perform(app_db, world.app_id, cid, ev.AdminReply(admin(world), "Hi"))
    await service.perform(app_db, world.app_id, cid, ev.UserReply("more"))
    url = f"/ext/conversations/{cid}/read"
    c = ok(await api.post(url, json={"by": "admin"}))
    assert c["admin_unread_count"] == 0
    assert c["user_unread_count"] == 1
    assert "user" not in c
    c = ok(await api.post(url, data={"by": "user"}))
    assert c["user_unread_count"] == c["unread_parts_count"] == 0
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    assert all(p["read"] for p in parts)
    error(await api.post(url, json={"by": "bot"}), 400, "BadRequest")
    error(await api.post(url), 400, "BadRequest")
    async with app_db.write() as conn:
        token = await issue_token(
            AppRepository(conn), world.app_id, "w", ["conversations-write"], utcnow()
        )
    async with client_for(app, token) as client:
        # A write-only token marks read, and learns nothing of the conversation doing so.
        assert ok(await client.post(url, json={"by": "admin"})) == {}
        error(await client.post(url, json={"by": "user"}), 403, "PermissionDenied")


async def test_reopen(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    cid = await started(app_db, world)
    url = f"/ext/conversations/{cid}/reopen"
    assert ok(await api.post(url)) == {}
    await service.perform(app_db, world.app_id, cid, ev.Close(admin(world)))
    ref = ok(await api.post(url, json={"from_admin": world.admin_id, "random_id": 8}))
    assert set(ref) == {"id", "part_group"}
    assert ok(await api.post(url, json={"random_id": 8})) == ref
    c = ok(await api.get(f"/conversations/{cid}"))
    assert c["closed"] is False
    assert c["part_last"]["type"] == "opened"


@pytest.mark.parametrize("form", ["int", "decimal", "text-decimal"])
async def test_delay_and_clear(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await assigned(app_db, world)
    url = f"/ext/conversations/{cid}/delay"
    until_int = int(time.time()) + 3600
    until: object = {
        "int": until_int,
        "decimal": until_int + 0.25,
        "text-decimal": f"{until_int}.250000",
    }[form]
    ref = ok(await api.post(url, json={"until": until}))
    # Whole seconds, as the vendor answers; the fraction with precise_times.
    assert ok(await api.get(f"/conversations/{cid}"))["delayed_until"] == until_int
    c = ok(await api.get(f"/conversations/{cid}", params={"precise_times": "true"}))
    assert c["delayed_until"] == (until_int if form == "int" else until_int + 0.25)
    assert c["part_last"]["id"] == ref["id"]
    assert c["part_last"]["body_json"] == {"delayed_until": float(c["delayed_until"])}
    assert [
        x["id"] for x in ok(await api.get("/apps/$self_app/conversations", params={"delayed": 1}))
    ] == [cid]
    assert ok(await api.post(url, json={"until": until})) == {}
    assert set(ok(await api.post(url, data={"until": "0"}))) == {"id", "part_group"}
    assert ok(await api.get(f"/conversations/{cid}"))["delayed_until"] is None
    error(await api.post(url, json={"until": int(time.time()) - 10}), 400, "BadRequest")
    error(await api.post(url, json={"until": "tomorrow"}), 400, "BadRequest")
    error(await api.post(url, json={}), 400, "BadRequest")


async def test_change_channel(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    cid = await started(app_db, world)
    url = f"/ext/conversations/{cid}/channel"
    ref = ok(await api.post(url, json={"channel": world.channel_id, "random_id": 4}))
    assert ok(await api.post(url, json={"channel": world.channel_id, "random_id": 4})) == ref
    assert ok(await api.post(url, json={"channel": world.channel_id})) == {}
    c = ok(await api.get(f"/conversations/{cid}"))
    assert c["channel"]["id"] == world.channel_id
    assert c["part_last"]["body_json"] == {"channel": world.channel_id}
    ok(await api.post(url, json={"channel": 0}))
    assert ok(await api.get(f"/conversations/{cid}"))["channel"] is None
    error(await api.post(url, json={"channel": world.foreign_channel_id}), 404, "NotFound")
    error(await api.post(url, json={"channel": "sales"}), 400, "BadRequest")


async def test_typing(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    cid = await started(app_db, world)
    url = f"/ext/conversations/{cid}/typing"
    assert ok(await api.post(url, json={"body": "I am wri"})) == {}
    assert ok(await api.post(url, json={"body": "hel", "from_user": "default_user"})) == {}
    assert ok(await api.post(url, json={"body": "x", "from_admin": world.admin_id})) == {}
    error(await api.post(url, json={"from_admin": world.foreign_admin_id}), 400, "BadRequest")
    error(await api.post(url, json={"body": "x" * 70_000}), 400, "BadRequest")
    error(await api.post("/ext/conversations/987654/typing"), 404, "NotFound")
    assert ok(await api.get(f"/conversations/{cid}"))["parts_count"] == 1


async def test_status(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    sent = ok(await api.post(f"/users/{world.user_id}/sendmessage", json={"body": "Offer"}))
    url = f"/ext/conversations/{sent['conversation']}/status"
    for status in ("sent", "delivered"):
        assert ok(await api.post(url, json={"status": status}))["status"] == status
    error(await api.post(url, json={"status": "lost"}), 400, "BadRequest")
    cid = await started(app_db, world)
    error(
        await api.post(f"/ext/conversations/{cid}/status", json={"status": "sent"}),
        400,
        "BadRequest",
    )


async def test_assistant(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    cid = await started(app_db, world)
    url = f"/ext/conversations/{cid}/assistant"
    c = ok(await api.post(url, json={"assistant_type": "routing_bot"}))
    assert c["assistant_type"] == "routing_bot"
    c = ok(await api.post(url, json={"assistant_type": "", "admin": world.admin_id}))
    assert c["assistant_type"] is None
    assert c["assignee"]["id"] == world.admin_id
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    assert [p["type"] for p in parts[:2]] == ["assigned", "service"]
    error(await api.post(url, json={"assistant_type": "skynet"}), 400, "BadRequest")
    error(
        await api.post(url, json={"assistant_type": "lead_bot", "admin": world.admin_id}),
        400,
        "BadRequest",
    )
    state = await service.get_conversation(app_db, world.app_id, cid)
    assert state.assistant_type is None
    await service.perform(app_db, world.app_id, cid, ev.BotTakeOver(AssistantType.LEAD_BOT))
    assert ok(await api.post(url))["assistant_type"] is None


# ---------------------------------------------------------------------------
# GDPR erasure


@pytest.mark.parametrize("by_site_id", [False, True])
async def test_erase_user(
    api: httpx.AsyncClient, app_db: Database, world: World, by_site_id: bool
) -> None:
    first = await started(app_db, world, "my secret")
    second = await assigned(app_db, world, "another secret")
    other_user = await apps.create_user(app_db, world.app_id, site_user_id="u-2")
    kept = await started(app_db, world, "not theirs", user_id=other_user)
    # The page the user wrote from, and what the operator offered: erased with the body.
    extras = {"referrer": "https://shop.test/me?email=a@b.test", "actions": [{"type": "b"}]}
    ok(await api.post(f"/conversations/{first}/reply", json={"body": "hi"} | extras))
    path = "/ext/users/u-1" if by_site_id else f"/ext/users/{world.user_id}"
    assert ok(await api.delete(path, params={"by_user_id": "1"} if by_site_id else {})) == {}
    for cid in (first, second):
        c = ok(await api.get(f"/conversations/{cid}"))
        assert c["removed"] is not None
        assert c["user"]["props"] == {}
        assert c["user"]["user_id"] is None
        parts = ok(await api.get(f"/conversations/{cid}/parts"))
        assert all(p["body"] == "" and p["removed"] is not None for p in parts)
        assert all(p["referrer"] is None and p["actions"] is None for p in parts)
    listed = ok(await api.get("/apps/$self_app/conversations", params={"include_not_assigned": 1}))
    assert [c["id"] for c in listed] == [kept]
    error(await api.get(f"/users/{world.user_id}/conversations"), 404, "NotFound")
    error(
        await api.post(f"/users/{world.user_id}/startconversation", json={"body": "back"}),
        404,
        "NotFound",
    )
    error(await api.post(f"/conversations/{first}/reply", json={"body": "x"}), 400, "BadRequest")
    # erasing again is harmless; the site id is gone
    assert ok(await api.delete(f"/ext/users/{world.user_id}")) == {}
    error(await api.delete("/ext/users/u-1", params={"by_user_id": "1"}), 400, "LookupError")
    error(await api.delete("/ext/users/987654"), 404, "NotFound")


# ---------------------------------------------------------------------------
# Managing the app


async def test_admins(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    url = "/ext/apps/$self_app/admins"
    before = ok(await api.get(url))
    assert [a["name"] for a in before] == ["Ann", "Bob"]
    assert before[0]["email"] == "ann@acme.test"
    assert before[0]["type"] == "admin"
    new = ok(
        await api.post(
            url,
            data={
                "name": "Cy",
                "email": "Cy@Acme.test",
                "avatar": "https://a/b.png",
                "password": "s3cret-horse!",
            },
        )
    )
    assert new["email"] == "cy@acme.test"
    assert new["avatar"] == "https://a/b.png"
    error(await api.post(url, json={"name": "Cy2", "email": "cy@acme.test"}), 400, "BadRequest")
    error(await api.post(url, json={"name": " "}), 400, "BadRequest")
    cid = await started(app_db, world)
    ok(await api.post(f"/conversations/{cid}/assign", json={"admin": new["id"]}))
    assert ok(await api.delete(f"{url}/{new['id']}")) == {}
    assert [a["id"] for a in ok(await api.get(url))] == [a["id"] for a in before]
    error(await api.delete(f"{url}/{new['id']}"), 404, "NotFound")
    # a removed admin keeps their name in history but cannot act or be assigned
    assert ok(await api.get(f"/conversations/{cid}"))["assignee"]["name"] == "Cy"
    error(
        await api.post(f"/conversations/{cid}/assign", json={"admin": new["id"]}), 404, "NotFound"
    )
    error(
        await api.post(f"/conversations/{cid}/reply", json={"body": "x", "from_admin": new["id"]}),
        404,
        "NotFound",
    )
    assert ok(await api.delete(url, params={"id": world.other_admin_id})) == {}
    error(await api.delete(url), 400, "BadRequest")


async def test_channels(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    url = "/ext/apps/$self_app/channels"
    assert [c["name"] for c in ok(await api.get(url))] == ["Inbox", "Sales"]
    new = ok(
        await api.post(
            url, json={"name": "Support", "type": "telegram", "avatar": "https://a/s.png"}
        )
    )
    assert new == {
        "id": new["id"],
        "name": "Support",
        "type": "telegram",
        "avatar": "https://a/s.png",
    }
    cid = await started(app_db, world)
    ok(await api.post(f"/ext/conversations/{cid}/channel", json={"channel": new["id"]}))
    assert ok(await api.delete(f"{url}/{new['id']}")) == {}
    assert [c["name"] for c in ok(await api.get("/apps/$self_app/channels"))] == ["Inbox", "Sales"]
    assert ok(await api.get(f"/conversations/{cid}"))["channel"]["name"] == "Support"
    error(
        await api.post(f"/ext/conversations/{cid}/channel", json={"channel": new["id"]}),
        404,
        "NotFound",
    )
    error(await api.delete(f"{url}/{world.default_channel_id}"), 400, "BadRequest")
    error(await api.delete(f"{url}/{new['id']}"), 404, "NotFound")
    assert ok(await api.request("DELETE", url, data={"id": world.channel_id})) == {}
    error(await api.post(url, json={"name": ""}), 400, "BadRequest")
    # The type is one of the vendor's channel types (a free label is refused).
    error(await api.post(url, json={"name": "X", "type": "support"}), 400, "BadRequest")


async def test_tokens(app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    url = "/ext/apps/$self_app/tokens"
    (default,) = ok(await api.get(url))
    assert "token" not in default
    assert default["name"] == "default"
    created = ok(
        await api.post(url, data={"name": "reader", "scopes": "conversations-read,user-read"})
    )
    assert created["scopes"] == ["conversations-read", "user-read"]
    assert created["token"].startswith(created["prefix"])
    listed = ok(await api.get(url))
    assert [t["id"] for t in listed] == [default["id"], created["id"]]
    assert all("token" not in t for t in listed)
    cid = await started(app_db, world)
    async with client_for(app, created["token"]) as client:
        ok(await client.get(f"/conversations/{cid}"))
        error(await client.post(f"/conversations/{cid}/close"), 403, "PermissionDenied")
        error(await client.get(url), 403, "PermissionDenied")
        assert ok(await api.delete(f"{url}/{created['id']}")) == {}
        error(await client.get(f"/conversations/{cid}"), 401, "AuthenticationFailed")
    error(await api.post(url, json={"name": "x", "scopes": ["root"]}), 400, "BadRequest")
    error(await api.post(url, json={"name": "x", "scopes": []}), 400, "BadRequest")
    error(await api.post(url, json={"name": "x"}), 400, "BadRequest")
    error(await api.delete(f"{url}/{created['id']}"), 404, "NotFound")
    json_made = ok(await api.post(url, json={"name": "j", "scopes": ["admin"]}))
    assert ok(await api.request("DELETE", url, json={"id": json_made["id"]})) == {}


async def test_typing_as_another_user_or_in_a_removed_conversation_is_refused(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    url = f"/ext/conversations/{cid}/typing"
    assert ok(await api.post(url, json={"body": "hi", "from_user": str(world.user_id)})) == {}
    other_user = await apps.create_user(app_db, world.app_id, props={"$name": "Eve"})
    message = error(
        await api.post(url, json={"body": "hi", "from_user": str(other_user)}), 400, "BadRequest"
    )
    assert "from_user" in message
    assert "not the user of this conversation" in message
    await service.perform(app_db, world.app_id, cid, ev.Remove())
    message = error(await api.post(url, json={"body": "hi"}), 400, "BadRequest")
    assert "removed" in message
