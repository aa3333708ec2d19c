"""The rules every endpoint shares: envelope, errors, auth, encodings, versions, ids."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import httpx
import orjson
import pytest
from fastapi import FastAPI

from tests.api.conftest import client_for
from tests.api.helpers import admin, assigned, error, ok, started
from tests.conftest import World
from threadline.api import params as P
from threadline.api.schemas import ConversationOut, PartOut, adapter, unix_seconds
from threadline.apps.repository import AppRepository
from threadline.apps.service import issue_token, utcnow
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db.engine import Database

# ---------------------------------------------------------------------------
# Envelope and error names


async def test_unknown_route_is_not_found_in_the_envelope(api: httpx.AsyncClient) -> None:
    for path in ("/nope", "/v1/nope", "/v2/conversations/1/nope", "/v0/conversations/1"):
        error(await api.get(path), 404, "NotFound")


async def test_wrong_method_is_method_not_allowed(api: httpx.AsyncClient, world: World) -> None:
    error(await api.put("/conversations/1/reply"), 405, "MethodNotAllowed")
    error(await api.delete("/v1/apps/$self_app/conversations"), 405, "MethodNotAllowed")
    error(await api.post("/conversations/1"), 405, "MethodNotAllowed")


async def test_missing_and_bad_tokens(anon: httpx.AsyncClient, world: World) -> None:
    error(await anon.get("/apps/$self_app/conversations"), 401, "AuthenticationFailed")
    error(
        await anon.get("/apps/$self_app/conversations", headers={"Authorization": "Token nope"}),
        401,
        "AuthenticationFailed",
    )
    error(
        await anon.get(
            "/apps/$self_app/conversations", headers={"Authorization": f"Basic {world.token}"}
        ),
        401,
        "AuthenticationFailed",
    )
    error(
        await anon.get("/apps/$self_app/conversations", params={"auth_token": ""}),
        401,
        "AuthenticationFailed",
    )


@pytest.mark.parametrize(
    "how",
    ["token-header", "bearer-header", "lowercase-scheme", "query", "form", "json", "multipart"],
)
async def test_every_way_to_send_the_token(
    anon: httpx.AsyncClient, app_db: Database, world: World, how: str
) -> None:
    cid = await assigned(app_db, world)
    url = f"/conversations/{cid}/close"
    if how == "token-header":
        r = await anon.post(url, headers={"Authorization": f"Token {world.token}"})
    elif how == "bearer-header":
        r = await anon.post(url, headers={"Authorization": f"Bearer {world.token}"})
    elif how == "lowercase-scheme":
        r = await anon.post(url, headers={"Authorization": f"token {world.token}"})
    elif how == "query":
        r = await anon.post(url, params={"auth_token": world.token})
    elif how == "form":
        r = await anon.post(url, data={"auth_token": world.token})
    elif how == "json":
        r = await anon.post(url, json={"auth_token": world.token})
    else:
        r = await anon.post(url, files={"auth_token": (None, world.token)})
    assert set(ok(r)) == {"id", "part_group"}


async def test_revoked_token_is_refused(app: FastAPI, app_db: Database, world: World) -> None:
    async with app_db.write() as conn:
        token = await issue_token(
            AppRepository(conn), world.app_id, "t", ["conversations-read"], utcnow()
        )
    async with client_for(app, token) as client:
        ok(await client.get("/apps/$self_app/conversations"))
        async with client_for(app, world.token) as owner:
            tokens = ok(await owner.get("/ext/apps/$self_app/tokens"))
            (mine,) = [t for t in tokens if t["name"] == "t"]
            ok(await owner.delete(f"/ext/apps/$self_app/tokens/{mine['id']}"))
        error(await client.get("/apps/$self_app/conversations"), 401, "AuthenticationFailed")


async def test_missing_scope_is_permission_denied(
    app: FastAPI, app_db: Database, world: World
) -> None:
    cid = await assigned(app_db, world)
    async with app_db.write() as conn:
        token = await issue_token(
            AppRepository(conn), world.app_id, "ro", ["conversations-read"], utcnow()
        )
    async with client_for(app, token) as client:
        ok(await client.get(f"/conversations/{cid}"))
        message = error(await client.post(f"/conversations/{cid}/close"), 403, "PermissionDenied")
        assert "conversations-write" in message
        error(await client.get("/ext/apps/$self_app/admins"), 403, "PermissionDenied")
    detail = await service.get_conversation(app_db, world.app_id, cid)
    assert not detail.closed


async def test_auth_comes_before_parameter_checks(anon: httpx.AsyncClient) -> None:
    error(await anon.get("/conversations/abc"), 401, "AuthenticationFailed")
    error(
        await anon.post(
            "/conversations/1/reply", content=b"{bad", headers={"Content-Type": "application/json"}
        ),
        400,
        "BadRequest",
    )


async def test_bad_input_names_the_parameter(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    cases = [
        (api.get("/apps/$self_app/conversations", params={"paginate_count": 51}), "paginate_count"),
        (
            api.get("/apps/$self_app/conversations", params={"paginate_count": "x"}),
            "paginate_count",
        ),
        (api.get("/v1/apps/$self_app/conversations", params={"count": 0}), "count"),
        (
            api.get("/apps/$self_app/conversations", params={"paginate_direction": "up"}),
            "paginate_direction",
        ),
        (
            api.get("/apps/$self_app/conversations", params={"paginate_position": "[1"}),
            "paginate_position",
        ),
        (
            api.get("/apps/$self_app/conversations", params={"paginate_position": "[1]"}),
            "paginate_position",
        ),
        (api.get("/apps/$self_app/conversations", params={"assigned": "me"}), "assigned"),
        (
            api.get("/apps/$self_app/conversations", params={"assistant_type": "robot"}),
            "assistant_type",
        ),
        (api.get("/apps/$self_app/conversations", params={"version": "2.x"}), "version"),
        (api.get("/apps/abc/conversations"), "app"),
        (api.get("/conversations/-1"), "id"),
        (api.get(f"/conversations/{2**63}"), "id"),
        (api.post(f"/conversations/{cid}/reply", json={"body": ""}), "body"),
        (
            api.post(f"/conversations/{cid}/reply", json={"body": "x", "body_json": "[1]"}),
            "body_json",
        ),
        (
            api.post(f"/conversations/{cid}/reply", data={"body": "x", "body_json": "{bad"}),
            "body_json",
        ),
        (
            api.post(f"/conversations/{cid}/reply", json={"body": "x", "random_id": 2**63}),
            "random_id",
        ),
        (api.post(f"/conversations/{cid}/reply", json={"body": "x", "type": "poem"}), "type"),
        (
            api.post(f"/conversations/{cid}/reply", json={"body": "x", "from_admin": "ann"}),
            "from_admin",
        ),
        (
            api.post(f"/conversations/{cid}/reply", json={"body": "x", "auto_assign": True}),
            "auto_assign",
        ),
        (api.post(f"/conversations/{cid}/assign", json={"admin": "ann"}), "admin"),
        (api.post(f"/conversations/{cid}/tag", json={"tag": ""}), "tag"),
        (api.post(f"/conversations/{cid}/tag", json={"tag": "x" * 256}), "tag"),
        (api.post(f"/conversations/{cid}/tag", json={}), "tag"),
        (api.post(f"/conversations/{cid}/close", json=[1, 2]), "body"),
        (
            api.post(
                f"/conversations/{cid}/close",
                content=b"\xff",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
            "body",
        ),
        (
            api.post(
                f"/conversations/{cid}/close", content=b"x", headers={"Content-Type": "text/csv"}
            ),
            "body",
        ),
        (
            api.post(
                f"/conversations/{cid}/close",
                content=b"--x\r\nbroken",
                headers={"Content-Type": "multipart/form-data"},
            ),
            "body",
        ),
        (api.get("/apps/$self_app/conversations", params={"id_as_string": "[]"}), None),
    ]
    for request, name in cases:
        r = await request
        if name is None:
            ok(r)
            continue
        message = error(r, 400, "BadRequest")
        assert message.startswith(f"{name}"), (name, message)
    detail = await service.get_conversation(app_db, world.app_id, cid)
    assert detail.parts_count == 1
    assert not detail.tags
    assert not detail.closed


async def test_reply_too_big(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    cid = await started(app_db, world)
    error(
        await api.post(f"/conversations/{cid}/reply", json={"body": "x" * 65_537}),
        400,
        "ReplyTooBig",
    )
    ok(await api.post(f"/conversations/{cid}/reply", json={"body": "x" * 65_536}))


async def test_oversized_request_body_is_refused(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    big = orjson.dumps({"body": "x" * (P.MAX_PLAIN_BODY_BYTES + 1)})
    error(
        await api.post(
            f"/conversations/{cid}/reply", content=big, headers={"Content-Type": "application/json"}
        ),
        400,
        "BadRequest",
    )


async def test_a_bug_is_a_500_in_the_envelope(app: FastAPI, world: World) -> None:
    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom-for-test", boom)
    async with client_for(app, world.token, raise_app_exceptions=False) as client:
        r = await client.get("/boom-for-test")
    assert r.status_code == 500
    assert r.json() == {
        "meta": {"status": 500, "error": "InternalError", "error_message": "internal error"},
        "data": {},
    }


# ---------------------------------------------------------------------------
# Parameter encodings


@pytest.mark.parametrize("encoding", ["query", "urlencoded", "multipart", "json", "curl-json"])
async def test_every_encoding_of_parameters(
    api: httpx.AsyncClient, app_db: Database, world: World, encoding: str
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/reply"
    fields = {
        "body": "Hi",
        "from_admin": str(world.admin_id),
        "type": "note",
        "random_id": "77",
        "body_json": '{"k": 1}',
    }
    if encoding == "query":
        r = await api.post(url, params=fields)
    elif encoding == "urlencoded":
        r = await api.post(url, data=fields)
    elif encoding == "multipart":
        r = await api.post(url, files={k: (None, v) for k, v in fields.items()})
    elif encoding == "json":
        r = await api.post(
            url,
            json={**fields, "random_id": 77, "from_admin": world.admin_id, "body_json": {"k": 1}},
        )
    else:
        r = await api.post(
            url,
            content=orjson.dumps(fields),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    part = ok(r)
    assert part["type"] == "note"
    assert part["body"] == "Hi"
    assert part["body_json"] == {"k": 1}
    assert part["random_id"] == 77
    assert part["from"]["id"] == world.admin_id


async def test_body_wins_over_query(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    cid = await started(app_db, world)
    part = ok(
        await api.post(
            f"/conversations/{cid}/reply",
            params={"body": "query", "type": "note"},
            json={"body": "json"},
        )
    )
    assert part["body"] == "json"
    assert part["type"] == "note"  # a parameter only in the query still counts
    part = ok(
        await api.post(
            f"/conversations/{cid}/reply", params={"body": "query"}, data={"body": "form"}
        )
    )
    assert part["body"] == "form"


def test_vendor_booleans() -> None:
    for value in ("false", "FALSE", "False", "0", "", " ", 0, False, 0.0):
        assert P.vendor_bool(value) is False, value
    # "Any other string is true", a JSON object's text among them.
    for value in ("true", "1", "yes", "no", "anything", 1, True, 2, '{"a": 1}'):
        assert P.vendor_bool(value) is True, value
    assert P.vendor_bool(None) is None
    for value in ([], {"a": 1}):  # no string: an array or object of a JSON body
        with pytest.raises(ValueError, match="boolean"):
            P.vendor_bool(value)


def test_arrays_and_timestamps() -> None:
    assert P.parse_str_list("a,b , c,,") == ["a", "b", "c"]
    assert P.parse_str_list('["a,b", "c"]') == ["a,b", "c"]
    assert P.parse_str_list(["a", 1]) == ["a", "1"]
    assert P.parse_str_list("") == []
    with pytest.raises(ValueError, match="array"):
        P.parse_str_list('[1, {"a": 1}]')
    assert P.parse_timestamp(1684739969) == datetime(2023, 5, 22, 7, 19, 29, tzinfo=UTC)
    assert P.parse_timestamp("1684739969.358085") == datetime(
        2023, 5, 22, 7, 19, 29, 358085, tzinfo=UTC
    )
    assert P.parse_timestamp(1684739969.358085) == datetime(
        2023, 5, 22, 7, 19, 29, 358085, tzinfo=UTC
    )
    assert P.parse_timestamp(Decimal("1684739969.5")).microsecond == 500000
    assert P.parse_timestamp_or_zero("0") is None
    for bad in ("soon", "-1", "1e20", "nan", True):
        with pytest.raises(ValueError, match=r"number|timestamp"):
            P.parse_timestamp(bad)
    assert unix_seconds(datetime(2023, 5, 22, 7, 19, 29, tzinfo=UTC)) == 1684739969
    # Answers carry whole seconds; `precise` (the precise_times parameter) the fraction.
    assert unix_seconds(datetime(2023, 5, 22, 7, 19, 29, 358085, tzinfo=UTC)) == 1684739969
    assert (
        unix_seconds(datetime(2023, 5, 22, 7, 19, 29, 358085, tzinfo=UTC), precise=True)
        == 1684739969.358085
    )


def test_ids() -> None:
    assert P.parse_id("12") == 12
    assert P.parse_id(2**63 - 1) == 2**63 - 1
    for bad in ("0", 0, 2**63, "1.5", "x", True, -3, "", "١٢"):
        with pytest.raises(ValueError, match=r"id|integer"):
            P.parse_id(bad)
    assert P.parse_id_or_zero("") == 0
    assert P.parse_random_id("0") is None
    assert P.parse_random_id("") is None
    # Signed 64-bit: negative keys (Java's Random.nextInt()) are keys of their own.
    assert P.parse_random_id("-5") == -5
    assert P.parse_random_id(-(2**63)) == -(2**63)
    assert P.parse_random_id(2**63 - 1) == 2**63 - 1
    for bad in (2**63, -(2**63) - 1, "1.5", "x", True):
        with pytest.raises(ValueError, match=r"between|integer"):
            P.parse_random_id(bad)


async def test_arrays_in_every_form(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    tagged = await assigned(app_db, world)
    for tag in ("a", "b"):
        await service.perform(app_db, world.app_id, tagged, ev.AddTag(tag, admin(world)))
    half = await assigned(app_db, world)
    await service.perform(app_db, world.app_id, half, ev.AddTag("a", admin(world)))
    url = "/apps/$self_app/conversations"
    for tags in ("a,b", '["a","b"]', "b, a"):
        data = ok(await api.get(url, params={"tags": tags}))
        assert [c["id"] for c in data] == [tagged]
    data = ok(await api.get(url, params=[("tags", "a"), ("tags", "b")]))
    assert [c["id"] for c in data] == [tagged]


# ---------------------------------------------------------------------------
# Versions and paths


async def test_three_paths_and_the_version_parameter(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/parts"
    v1 = {"status": 200, "next_after": None}
    v2 = {"status": 200, "next_before_position": None, "next_after_position": None}
    assert (await api.get(f"/v1{url}")).json()["meta"] == v1
    assert (await api.get(f"/v2{url}")).json()["meta"] == v2
    assert (await api.get(url)).json()["meta"] == v2
    assert (await api.get(url, params={"version": 1})).json()["meta"] == v1
    assert (await api.get(url, params={"version": "2"})).json()["meta"] == v2
    assert (await api.get(f"/v2{url}", params={"version": 1})).json()["meta"] == v2
    assert (await api.get(f"/v1{url}", params={"version": 2})).json()["meta"] == v1


async def test_self_app_and_explicit_app(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    params = {"include_not_assigned": "true"}
    mine = ok(await api.get("/apps/$self_app/conversations", params=params))
    assert [c["id"] for c in mine] == [cid]
    assert ok(await api.get(f"/apps/{world.app_id}/conversations", params=params)) == mine
    error(await api.get(f"/apps/{world.foreign_app_id}/conversations"), 404, "NotFound")
    error(await api.get("/apps/999999/conversations"), 404, "NotFound")


# ---------------------------------------------------------------------------
# id_as_string and serialisation


def _ids_of_conversation(c: dict[str, object]) -> list[object]:
    found: list[object] = [c["id"], c["message"]]
    for key in ("assignee", "last_admin"):
        obj = c[key]
        if isinstance(obj, dict):
            found.append(obj["id"])
    user = c.get("user")
    if isinstance(user, dict):
        found.append(user["id"])
    for key in ("part_last", "important_part_last", "reply_last"):
        part = c.get(key)
        if isinstance(part, dict):
            found.extend(_ids_of_part(part))
    return [i for i in found if i is not None]


def _ids_of_part(p: dict[str, object]) -> list[object]:
    found = [p["id"], p["conversation"], p["part_group"], p["random_id"]]
    author = p["from"]
    found.append(author["id"] if isinstance(author, dict) else author)
    assignee = p.get("assignee")
    if isinstance(assignee, dict):
        found.append(assignee["id"])
    return [i for i in found if i is not None]


async def test_id_as_string(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    cid = await assigned(app_db, world)
    await service.perform(app_db, world.app_id, cid, ev.AdminReply(admin(world), "Hi", random_id=5))
    await started(app_db, world, "second")
    await service.perform(app_db, world.app_id, cid, ev.UserReply("more"))
    url = "/apps/$self_app/conversations"
    everything = {"include_not_assigned": "1"}
    as_numbers = ok(await api.get(url, params={"paginate_count": 1, **everything}))
    ids = _ids_of_conversation(as_numbers[0])
    assert len(ids) >= 8
    assert all(type(i) is int for i in ids)
    r = await api.get(url, params={"paginate_count": 1, "id_as_string": "true", **everything})
    as_strings = ok(r)
    ids = _ids_of_conversation(as_strings[0])
    assert len(ids) >= 8
    assert all(isinstance(i, str) for i in ids)
    position = r.json()["meta"]["next_before_position"]
    assert all(isinstance(v, str) for v in position)
    # The string cursor is accepted back and continues the walk.
    rest = ok(
        await api.get(
            url, params={"paginate_position": orjson.dumps(position).decode(), **everything}
        )
    )
    assert len(rest) == 1
    assert rest[0]["id"] != as_strings[0]["id"]
    parts = ok(await api.get(f"/conversations/{cid}/parts", params={"id_as_string": "1"}))
    assert all(isinstance(i, str) for p in parts for i in _ids_of_part(p))
    v1 = await api.get(f"/v1/conversations/{cid}/parts", params={"id_as_string": "1", "count": 1})
    assert isinstance(v1.json()["meta"]["next_after"], str)
    numbers = ok(await api.get(f"/conversations/{cid}/parts", params={"id_as_string": "false"}))
    assert all(type(i) is int for p in numbers for i in _ids_of_part(p))


async def test_answers_match_their_declared_models(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await assigned(app_db, world)
    await service.perform(app_db, world.app_id, cid, ev.AddTag("vip", admin(world)))
    conversation = ok(await api.get(f"/conversations/{cid}"))
    adapter(ConversationOut).validate_python(conversation)
    for part in ok(await api.get(f"/conversations/{cid}/parts")):
        adapter(PartOut).validate_python(part)
    assert isinstance(conversation["created"], float | int)
