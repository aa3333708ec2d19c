"""Every route's answer to a wrong method, unknown routes, writes to a removed conversation,
and the envelope's promises that span every endpoint."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from tests.api.conftest import client_for
from tests.api.helpers import admin, assigned, error, ok, started
from tests.conftest import World
from threadline.api.envelope import install_error_handlers
from threadline.apps.repository import AppRepository
from threadline.apps.service import issue_token, utcnow
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db.engine import Database

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _url(path: str) -> str:
    return path.replace("{app}", "$self_app").replace("{id}", "1")


async def test_every_route_answers_a_wrong_method_with_405(
    app: FastAPI, api: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    checked = 0
    for path, operations in app.openapi()["paths"].items():
        allowed = {method.upper() for method in operations}
        for method in METHODS:
            if method in allowed:
                continue
            for prefix, client in (("", api), ("/v1", api), ("/v2", anon)):
                response = await client.request(method, prefix + _url(path))
                error(response, 405, "MethodNotAllowed")
                assert set(response.headers["Allow"].split(", ")) == allowed, path
                checked += 1
    assert checked > 100


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/v1/nope",
        "/v2/ext/nope",
        "/conversations",
        "/conversations/1/nope",
        "/apps/$self_app",
        "/ext/conversations/1",
        "/v0/conversations/1",
        "/v1/v2/conversations/1",
    ],
)
async def test_unknown_routes_are_not_found_in_the_envelope(
    api: httpx.AsyncClient, anon: httpx.AsyncClient, path: str
) -> None:
    for client in (api, anon):
        for method in ("GET", "POST", "DELETE"):
            message = error(await client.request(method, path), 404, "NotFound")
            assert message == "no such endpoint"


async def _removed(db: Database, world: World) -> int:
    cid = await assigned(db, world)
    await service.perform(db, world.app_id, cid, ev.AddTag("vip", admin(world)))
    await service.perform(db, world.app_id, cid, ev.Remove())
    return cid


async def test_a_removed_conversation_reads_erased_and_refuses_every_write(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await _removed(app_db, world)
    conversation = ok(await api.get(f"/conversations/{cid}"))
    assert conversation["removed"] is not None
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    assert parts
    assert all(p["body"] == "" and p["body_json"] is None for p in parts)
    # It has left every list.
    listed = ok(await api.get("/apps/$self_app/conversations", params={"closed": "false"}))
    assert cid not in [c["id"] for c in listed]
    mine = ok(await api.get(f"/users/{world.user_id}/conversations"))
    assert cid not in [c["id"] for c in mine]

    writes: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "reply", {"body": "hi"}),
        ("POST", "reply", {"body": "hi", "from_user": "default_user"}),
        ("POST", "reply", {"body": "note", "type": "note"}),
        ("POST", "assign", {"admin": world.other_admin_id}),
        ("POST", "assign", {"admin": 0}),
        ("POST", "close", {}),
        ("POST", "tag", {"tag": "new"}),
        ("DELETE", "tag", {"tag": "vip"}),
        ("POST", "tag", {"tag": "vip", "action": "delete"}),
        ("POST", "markread", {}),
        ("POST", "settyping", {"body": "draft"}),
        ("POST", "/ext/read", {"by": "admin"}),
        ("POST", "/ext/read", {"by": "user"}),
        ("POST", "/ext/reopen", {}),
        ("POST", "/ext/delay", {"until": 4_102_444_800}),
        ("POST", "/ext/channel", {"channel": world.channel_id}),
        ("POST", "/ext/typing", {"body": "draft"}),
        ("POST", "/ext/status", {"status": "delivered"}),
        ("POST", "/ext/assistant", {"assistant_type": "lead_bot"}),
        ("POST", "/ext/assistant", {"admin": world.admin_id}),
    ]
    for method, action, params in writes:
        if action.startswith("/ext/"):
            url = f"/ext/conversations/{cid}/{action.removeprefix('/ext/')}"
        else:
            url = f"/conversations/{cid}/{action}"
        for prefix in ("", "/v1"):
            message = error(await api.request(method, prefix + url, json=params), 400, "BadRequest")
            assert message == f"id: conversation {cid} is removed", (url, message)
    assert ok(await api.get(f"/conversations/{cid}")) == conversation
    assert ok(await api.get(f"/conversations/{cid}/parts")) == parts


async def test_a_removed_conversation_of_another_app_is_not_found(
    app: FastAPI, app_db: Database, world: World
) -> None:
    cid = await _removed(app_db, world)
    async with app_db.write() as conn:
        foreign = await issue_token(
            AppRepository(conn), world.foreign_app_id, "all", ["conversations-write"], utcnow()
        )
    async with client_for(app, foreign) as other:
        error(await other.post(f"/conversations/{cid}/close"), 404, "NotFound")


async def test_ids_inside_a_channel_change_follow_id_as_string(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    url = f"/ext/conversations/{cid}/channel"
    ok(await api.post(url, json={"channel": world.channel_id}))
    (part,) = [
        p
        for p in ok(await api.get(f"/conversations/{cid}/parts", params={"id_as_string": 1}))
        if p["type"] == "channel_changed"
    ]
    assert part["body_json"] == {"channel": str(world.channel_id)}
    (part,) = [
        p
        for p in ok(await api.get(f"/conversations/{cid}/parts"))
        if p["type"] == "channel_changed"
    ]
    assert part["body_json"] == {"channel": world.channel_id}


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
async def test_a_repeated_form_field_is_an_array(
    api: httpx.AsyncClient, world: World, encoding: str
) -> None:
    fields = [("name", "two scopes"), ("scopes", "conversations-read"), ("scopes", "user-read")]
    if encoding == "urlencoded":
        response = await api.post(
            "/ext/apps/$self_app/tokens",
            content="&".join(f"{k}={v}" for k, v in fields),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    else:
        response = await api.post(
            "/ext/apps/$self_app/tokens",
            files=[(k, (None, v.encode())) for k, v in fields],
        )
    assert ok(response)["scopes"] == ["conversations-read", "user-read"]
    # A repeated text parameter is not a text: refused, naming it.
    message = error(
        await api.post(
            "/ext/apps/$self_app/channels",
            content="name=a&name=b",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        400,
        "BadRequest",
    )
    assert message.startswith("name:")


async def test_removing_by_parameter_needs_the_id(api: httpx.AsyncClient) -> None:
    for kind in ("admins", "channels", "tokens"):
        message = error(await api.delete(f"/ext/apps/$self_app/{kind}"), 400, "BadRequest")
        assert message == "id: is required"
        message = error(
            await api.delete(f"/ext/apps/$self_app/{kind}", params={"id": "x"}), 400, "BadRequest"
        )
        assert message.startswith("id:")


class SizedBody(BaseModel):
    size: int


async def test_fastapi_validation_errors_answer_the_envelope() -> None:
    """The API's own routes parse their parameters themselves; a route that leaves it to
    FastAPI (a typed query or body) still answers 400 BadRequest in the envelope, naming
    the parameter."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/count")
    async def count(n: int) -> dict[str, int]:
        return {"n": n}

    @app.post("/sized")
    async def sized(body: SizedBody) -> dict[str, int]:
        return {"size": body.size}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/count", params={"n": "3"})).json() == {"n": 3}
        message = error(await client.get("/count", params={"n": "three"}), 400, "BadRequest")
        assert message.startswith("n: ")
        assert "integer" in message
        assert error(await client.get("/count"), 400, "BadRequest") == "n: is required"
        message = error(await client.post("/sized", json={"size": "big"}), 400, "BadRequest")
        assert message.startswith("size: ")
        assert error(await client.post("/sized", json={}), 400, "BadRequest") == (
            "size: is required"
        )
