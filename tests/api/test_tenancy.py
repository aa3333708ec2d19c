"""Tenancy: a token of another app sees the first app's objects as non-existent.

Every route is called with a second app's token (all scopes) against the first app's ids:
each answers 404 `NotFound`, and the first app's data is byte-for-byte unchanged.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from fastapi import FastAPI

from tests.api.conftest import client_for
from tests.api.helpers import admin, error, ok, started
from tests.conftest import World
from threadline.apps import service as apps
from threadline.apps.repository import AppRepository
from threadline.apps.service import ALL_SCOPES, issue_token, utcnow
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db.engine import Database


async def snapshot(api: httpx.AsyncClient, world: World, cid: int) -> list[Any]:
    return [
        (await api.get(path)).json()
        for path in (
            f"/conversations/{cid}",
            f"/conversations/{cid}/parts",
            "/apps/$self_app/conversations?include_not_assigned=1",
            "/apps/$self_app/channels",
            f"/users/{world.user_id}/conversations",
            "/ext/apps/$self_app/admins",
            "/ext/apps/$self_app/channels",
            "/ext/apps/$self_app/tokens",
            "/ext/apps/$self_app/audit",
            "/ext/apps/$self_app/email/addresses",
        )
    ]


def matrix(
    world: World, cid: int, token_id: int, attachment_id: int, address_id: int
) -> list[tuple[str, str, dict[str, Any]]]:
    a, u, c = world.app_id, world.user_id, cid
    later = int(time.time()) + 3600
    return [
        ("GET", f"/apps/{a}/conversations", {}),
        ("GET", f"/apps/{a}/channels", {}),
        ("GET", f"/conversations/{c}", {}),
        ("GET", f"/conversations/{c}/parts", {}),
        ("GET", f"/ext/conversations/{c}/deliveries", {}),
        ("POST", f"/conversations/{c}/reply", {"body": "x"}),
        ("POST", f"/conversations/{c}/reply", {"body": "x", "from_user": "default_user"}),
        ("POST", f"/conversations/{c}/assign", {"admin": world.foreign_admin_id}),
        ("POST", f"/conversations/{c}/close", {}),
        ("POST", f"/conversations/{c}/tag", {"tag": "new"}),
        ("DELETE", f"/conversations/{c}/tag", {"tag": "kept"}),
        ("POST", f"/conversations/{c}/markread", {}),
        ("POST", f"/conversations/{c}/settyping", {"body": "x"}),
        ("GET", f"/users/{u}/conversations", {}),
        ("POST", f"/users/{u}/startconversation", {"body": "x"}),
        ("POST", f"/users/{u}/sendmessage", {"body": "x"}),
        ("POST", f"/ext/conversations/{c}/read", {"by": "admin"}),
        ("POST", f"/ext/conversations/{c}/reopen", {}),
        ("POST", f"/ext/conversations/{c}/delay", {"until": later}),
        ("POST", f"/ext/conversations/{c}/channel", {"channel": world.foreign_channel_id}),
        ("POST", f"/ext/conversations/{c}/typing", {"body": "x"}),
        ("POST", f"/ext/conversations/{c}/status", {"status": "sent"}),
        ("POST", f"/ext/conversations/{c}/assistant", {"assistant_type": "lead_bot"}),
        ("DELETE", f"/ext/users/{u}", {}),
        ("GET", f"/ext/apps/{a}/admins", {}),
        ("POST", f"/ext/apps/{a}/admins", {"name": "Mallory"}),
        ("DELETE", f"/ext/apps/{a}/admins/{world.admin_id}", {}),
        ("POST", f"/ext/apps/{a}/admins/{world.admin_id}/role", {"role": "owner"}),
        ("POST", f"/ext/apps/$self_app/admins/{world.admin_id}/role", {"role": "owner"}),
        ("DELETE", f"/ext/apps/{a}/admins/{world.admin_id}/two-factor", {}),
        ("DELETE", f"/ext/apps/$self_app/admins/{world.admin_id}/two-factor", {}),
        ("DELETE", f"/ext/apps/{a}/admins", {"id": world.admin_id}),
        ("DELETE", f"/ext/apps/$self_app/admins/{world.admin_id}", {}),
        ("DELETE", "/ext/apps/$self_app/admins", {"id": world.admin_id}),
        ("GET", f"/ext/apps/{a}/channels", {}),
        ("POST", f"/ext/apps/{a}/channels", {"name": "Mine now"}),
        ("DELETE", f"/ext/apps/{a}/channels/{world.channel_id}", {}),
        ("DELETE", f"/ext/apps/{a}/channels", {"id": world.channel_id}),
        ("DELETE", f"/ext/apps/$self_app/channels/{world.channel_id}", {}),
        ("DELETE", "/ext/apps/$self_app/channels", {"id": world.channel_id}),
        ("GET", f"/ext/apps/{a}/tokens", {}),
        ("POST", f"/ext/apps/{a}/tokens", {"name": "steal", "scopes": "admin"}),
        ("DELETE", f"/ext/apps/{a}/tokens/{token_id}", {}),
        ("POST", f"/ext/apps/{a}/tokens/{token_id}/owner", {"admin": world.admin_id}),
        ("POST", f"/ext/apps/$self_app/tokens/{token_id}/owner", {"admin": world.admin_id}),
        ("DELETE", f"/ext/apps/{a}/tokens", {"id": token_id}),
        ("DELETE", f"/ext/apps/$self_app/tokens/{token_id}", {}),
        ("DELETE", "/ext/apps/$self_app/tokens", {"id": token_id}),
        ("GET", f"/ext/attachments/{attachment_id}", {}),
        ("GET", f"/ext/apps/{a}/events", {}),
        ("GET", f"/ext/apps/{a}/inbox", {}),
        ("GET", f"/ext/apps/{a}/search", {"q": "hello"}),
        ("GET", f"/ext/apps/{a}/webhooks", {}),
        ("POST", f"/ext/apps/{a}/webhooks", {"url": "https://receiver.example/x"}),
        ("DELETE", f"/ext/apps/{a}/webhooks", {"webhook": 1}),
        ("GET", f"/ext/apps/{a}/webhooks/deliveries", {"webhook": 1}),
        ("POST", f"/ext/apps/{a}/webhooks/replay", {"delivery": 1}),
        ("GET", f"/ext/apps/{a}/widget", {}),
        ("GET", f"/ext/apps/{a}/audit", {}),
        ("POST", f"/ext/apps/{a}/widget/secret", {}),
        ("POST", f"/ext/apps/{a}/email/inbound", {}),
        ("GET", f"/ext/apps/{a}/email/addresses", {}),
        ("POST", f"/ext/apps/{a}/email/addresses", {"address": "steal@acme.test"}),
        ("DELETE", f"/ext/apps/{a}/email/addresses/{address_id}", {}),
    ]


async def test_second_app_sees_nothing_and_changes_nothing(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    await service.perform(app_db, world.app_id, cid, ev.AddTag("kept", admin(world)))
    await service.perform(app_db, world.app_id, cid, ev.Assign(world.admin_id, admin(world)))
    (own_token,) = ok(await api.get("/ext/apps/$self_app/tokens"))
    files = {"attachment": ("a.txt", b"hello", "text/plain")}
    sent = ok(await api.post(f"/conversations/{cid}/reply", files=files))
    attachment_id = sent["attachments"][0]["id"]
    async with app_db.write() as conn:
        foreign_token = await issue_token(
            AppRepository(conn), world.foreign_app_id, "all", list(ALL_SCOPES), utcnow()
        )
    address = {"address": "help@acme.test"}
    address_id = ok(await api.post("/ext/apps/$self_app/email/addresses", json=address))["id"]
    # The app's e-mail key is made on first use (the sender's `email_name` shows it): made
    # before the first snapshot, so that only the foreign app's calls could change anything.
    ok(await api.get("/ext/apps/$self_app/email/addresses"))
    before = await snapshot(api, world, cid)
    calls = matrix(world, cid, own_token["id"], attachment_id, address_id)
    covered = {(m, _shape(p)) for m, p, _ in calls}
    async with client_for(app, foreign_token) as foreign:
        for method, path, params in calls:
            for where in ("json", "query"):
                for prefix in ("", "/v1", "/v2"):
                    kwargs: dict[str, Any] = (
                        {"params": params}
                        if method == "GET" or where == "query"
                        else {"json": params}
                    )
                    r = await foreign.request(method, prefix + path, **kwargs)
                    assert r.status_code == 404, (method, prefix + path, where, r.json())
                    error(r, 404, "NotFound")
    assert await snapshot(api, world, cid) == before

    # Every API route is in the matrix (so a new route cannot forget its tenancy test).
    documented = app.openapi()["paths"]
    assert len(documented) > 20
    for path, operations in documented.items():
        for method in operations:
            assert (method.upper(), _shape(path)) in covered, (method, path)


def _shape(path: str) -> str:
    """`/conversations/12/parts` and `/conversations/{conversation_id}/parts` both become
    `/conversations/*/parts`."""
    parts = []
    for piece in path.split("/"):
        parts.append(
            "*" if piece.startswith("{") or piece.isdigit() or piece == "$self_app" else piece
        )
    return "/".join(parts)


async def test_references_to_another_apps_objects_are_unknown(
    app: FastAPI, app_db: Database, world: World
) -> None:
    """The second app writing to its own conversation, naming the first app's objects."""
    outcome = await service.start_by_user(
        app_db, world.foreign_app_id, world.foreign_user_id, ev.UserReply(body="hi")
    )
    theirs = outcome.state.id
    async with app_db.write() as conn:
        token = await issue_token(
            AppRepository(conn), world.foreign_app_id, "all", list(ALL_SCOPES), utcnow()
        )
    first_app_user = await apps.create_user(app_db, world.app_id, site_user_id="only-first")
    async with client_for(app, token) as foreign:
        before = (await foreign.get(f"/conversations/{theirs}/parts")).json()
        for method, path, params in [
            ("POST", f"/conversations/{theirs}/assign", {"admin": world.admin_id}),
            ("POST", f"/conversations/{theirs}/reply", {"body": "x", "from_admin": world.admin_id}),
            (
                "POST",
                f"/conversations/{theirs}/reply",
                {"body": "x", "auto_assign": world.admin_id},
            ),
            ("POST", f"/conversations/{theirs}/close", {"from_admin": world.admin_id}),
            ("POST", f"/ext/conversations/{theirs}/channel", {"channel": world.channel_id}),
            ("POST", f"/ext/conversations/{theirs}/assistant", {"admin": world.admin_id}),
            ("POST", f"/users/{first_app_user}/startconversation", {"body": "x"}),
            ("GET", f"/users/{first_app_user}/conversations", {}),
        ]:
            r = (
                await foreign.request(method, path, json=params)
                if method != "GET"
                else await foreign.get(path)
            )
            error(r, 404, "NotFound")
        error(
            await foreign.get("/users/only-first/conversations", params={"by_user_id": 1}),
            400,
            "LookupError",
        )
        assert (await foreign.get(f"/conversations/{theirs}/parts")).json() == before
