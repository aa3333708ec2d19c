"""Request forms the endpoint modules leave out: negative `random_id`s, version numbers,
`include_no_tags` alone, `id_as_string` on the writes' answers, `sendmessage`'s v1 `email`
type, the v1 "all these tags" rule and v2's `paginate_count` bounds. Each through the real
HTTP client, in every form a client may send it. See README.md for the list."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from tests.api.helpers import admin, assigned, error, ok, started
from tests.compat.forms import FORMS, READ_FORMS, send
from tests.conftest import World
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db.engine import Database

# The edges of the signed 32-bit range (`Random.nextInt()`) and of the stored 64-bit one.
INT32_MIN = -(2**31)
INT64_MIN = -(2**63)


async def _snapshot(api: httpx.AsyncClient, cid: int) -> tuple[Any, Any]:
    """The conversation and its parts, to tell that a request changed nothing."""
    parts = ok(await api.get(f"/conversations/{cid}/parts", params={"paginate_count": 50}))
    return ok(await api.get(f"/conversations/{cid}")), parts


# ---------------------------------------------------------------------------
# random_id: "Optional[integer]", "a random 32-bit number"; negative ones too


@pytest.mark.parametrize("form", FORMS)
async def test_negative_random_id_on_reply_is_kept_echoed_and_retried(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/reply"
    for key in (-1, INT32_MIN, INT64_MIN):
        part = ok(await send(api, "POST", url, {"body": f"Hi {key}", "random_id": key}, form))
        assert part["random_id"] == key
        # A retry answers the first part and adds none.
        before = await _snapshot(api, cid)
        assert ok(await send(api, "POST", url, {"body": f"Hi {key}", "random_id": key}, form)) == (
            part
        )
        assert await _snapshot(api, cid) == before
        # The positive twin is another key: a write of its own.
        if key != INT64_MIN:
            twin = ok(await send(api, "POST", url, {"body": f"Hi {key}", "random_id": -key}, form))
            assert twin["id"] != part["id"]
            assert twin["random_id"] == -key
    parts = ok(await api.get(f"/conversations/{cid}/parts", params={"paginate_count": 50}))
    keys = [p["random_id"] for p in parts if p["random_id"] is not None]
    assert sorted(keys) == sorted([-1, 1, INT32_MIN, -INT32_MIN, INT64_MIN])


@pytest.mark.parametrize("form", FORMS)
async def test_negative_random_id_on_assign_close_tag_and_ext_writes(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}"
    # (method, path, parameters); each written once, then retried.
    writes: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", f"{url}/assign", {"admin": world.other_admin_id}),
        ("POST", f"{url}/tag", {"tag": "vip"}),
        ("DELETE", f"{url}/tag", {"tag": "vip"}),
        ("POST", f"{url}/close", {}),
        ("POST", f"/ext/conversations/{cid}/reopen", {}),
        ("POST", f"{url}/reply", {"body": "On it", "auto_assign": world.admin_id}),
    ]
    for n, (method, path, params) in enumerate(writes, 1):
        key = INT32_MIN + n
        sent = {**params, "random_id": key}
        if path.endswith("/reply"):
            sent["auto_assign_random_id"] = -key
        first = ok(await send(api, method, path, sent, form))
        assert first, path
        before = await _snapshot(api, cid)
        assert ok(await send(api, method, path, sent, form)) == first, path
        assert await _snapshot(api, cid) == before, path
    parts = ok(await api.get(f"/conversations/{cid}/parts", params={"paginate_count": 50}))
    keyed = {(p["type"], p["random_id"]) for p in parts if p["random_id"] is not None}
    assert keyed == {
        ("assigned", INT32_MIN + 1),
        ("tag_added", INT32_MIN + 2),
        ("tag_deleted", INT32_MIN + 3),
        ("closed", INT32_MIN + 4),
        ("opened", INT32_MIN + 5),
        ("assigned", -(INT32_MIN + 6)),  # the reply's auto_assign_random_id
        ("reply_admin", INT32_MIN + 6),
    }


@pytest.mark.parametrize("form", FORMS)
async def test_negative_random_id_starts_one_conversation_per_key(
    api: httpx.AsyncClient, world: World, form: str
) -> None:
    start = f"/users/{world.user_id}/startconversation"
    message = f"/users/{world.user_id}/sendmessage"
    first = ok(await send(api, "POST", start, {"body": "Hello", "random_id": -12}, form))
    assert ok(await send(api, "POST", start, {"body": "Hello", "random_id": -12}, form)) == first
    other = ok(await send(api, "POST", start, {"body": "Hello", "random_id": 12}, form))
    assert other["id"] != first["id"]
    sent = ok(await send(api, "POST", message, {"body": "Offer", "random_id": -13}, form))
    assert ok(await send(api, "POST", message, {"body": "Offer", "random_id": -13}, form)) == sent
    positive = ok(await send(api, "POST", message, {"body": "Offer", "random_id": 13}, form))
    assert positive["conversation"] != sent["conversation"]
    [part] = ok(await api.get(f"/conversations/{first['id']}/parts"))
    assert part["random_id"] == -12


@pytest.mark.parametrize("form", FORMS)
async def test_a_negative_key_reused_for_other_content_is_409_and_changes_nothing(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/reply"
    ok(await send(api, "POST", url, {"body": "Yes", "random_id": -77}, form))
    before = await _snapshot(api, cid)
    error(
        await send(api, "POST", url, {"body": "No", "random_id": -77}, form),
        409,
        "IdempotencyKeyReused",
    )
    assert await _snapshot(api, cid) == before
    start = f"/users/{world.user_id}/startconversation"
    ok(await send(api, "POST", start, {"body": "Hello", "random_id": -78}, form))
    error(
        await send(api, "POST", start, {"body": "Other", "random_id": -78}, form),
        409,
        "IdempotencyKeyReused",
    )


@pytest.mark.parametrize("form", FORMS)
async def test_a_random_id_beyond_64_bits_is_refused_and_changes_nothing(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    before = await _snapshot(api, cid)
    for key in (INT64_MIN - 1, 2**63, "1.5", "abc"):
        for path, params in (
            (f"/conversations/{cid}/reply", {"body": "x"}),
            (f"/conversations/{cid}/close", {}),
            (f"/conversations/{cid}/tag", {"tag": "t"}),
        ):
            message = error(
                await send(api, "POST", path, {**params, "random_id": key}, form), 400, "BadRequest"
            )
            assert message.startswith("random_id"), message
    assert await _snapshot(api, cid) == before


# ---------------------------------------------------------------------------
# Versions: "semantic versioning", "you can set only version prefix"; v3 announced


def _style(body: dict[str, Any]) -> int:
    """Which pagination answered: 1 (`next_after`) or 2 (`next_before_position`)."""
    meta = body["meta"]
    assert body["meta"]["status"] == 200, body
    if "next_after" in meta:
        assert "next_before_position" not in meta
        return 1
    assert "next_before_position" in meta
    return 2


@pytest.mark.parametrize("form", READ_FORMS)
async def test_version_numbers_by_parameter(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    await started(app_db, world)
    url = f"/apps/{world.app_id}/conversations"
    base = {"include_not_assigned": True}
    for version in (1, "1", "1.0", "1.1.0", " 1.2.3 ", "01"):
        assert _style((await send(api, "GET", url, {**base, "version": version}, form)).json()) == (
            1
        ), version
    for version in (2, "2", "2.0", "2.1.1", "2.10.5", 3, "3", "3.0.0", "10", ""):
        assert _style((await send(api, "GET", url, {**base, "version": version}, form)).json()) == (
            2
        ), version
    for bad in ("0", "0.9", "-1", "2.x", "v2", "2.", ".2", "1.2.3.4", "two", "1e2", "9" * 10):
        message = error(
            await send(api, "GET", url, {**base, "version": bad}, form), 400, "BadRequest"
        )
        assert message.startswith("version"), (bad, message)


async def test_version_numbers_as_json_numbers(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    await started(app_db, world)
    url = f"/apps/{world.app_id}/conversations"
    base = {"include_not_assigned": True}
    assert _style((await api.request("GET", url, json={**base, "version": 1.0})).json()) == 1
    assert _style((await api.request("GET", url, json={**base, "version": 2.0})).json()) == 2
    assert _style((await api.request("GET", url, json={**base, "version": 3})).json()) == 2
    for bad in (2.5, True, 0, [2], {"major": 2}):
        error(await api.request("GET", url, json={**base, "version": bad}), 400, "BadRequest")


async def test_version_paths_above_2_are_served_as_2_and_the_path_wins(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    url = f"/apps/{world.app_id}/conversations"
    base = {"include_not_assigned": "true"}
    for prefix, param, style in (
        ("/v3", None, 2),
        ("/v3", "1", 2),  # the path wins over the parameter
        ("/v1", "3", 1),
        ("/v1", "2.1.1", 1),
        ("/v2", "1.0", 2),
        ("", "3.0.0", 2),
        ("", "1.1.0", 1),
    ):
        params = {**base, **({"version": param} if param else {})}
        for path in (prefix + url, prefix + url + "/"):
            assert _style((await api.get(path, params=params)).json()) == style, (path, param)
    # Writes too: the v1 tag answer is `{}`, v2's the part.
    made = ok(await api.post(f"/v3/conversations/{cid}/tag", data={"tag": "a"}))
    assert set(made) == {"id", "part_group"}
    assert (
        ok(await api.post(f"/conversations/{cid}/tag", data={"tag": "b", "version": "1.5"})) == {}
    )
    # No version 0, and an unknown prefix stays an unknown path.
    error(await api.get(f"/v0{url}"), 404, "NotFound")
    error(await api.get(f"/vx{url}"), 404, "NotFound")


# ---------------------------------------------------------------------------
# include_no_tags: "Set true to get conversations without tags in result. Can be used
# only without tags argument" (the older edition: "to add conversations without tags")


@pytest.mark.parametrize("form", READ_FORMS)
async def test_include_no_tags_alone_lists_only_conversations_without_tags(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    both = await assigned(app_db, world, "both")
    only_a = await assigned(app_db, world, "only a")
    untagged = await assigned(app_db, world, "untagged")
    untagged_again = await assigned(app_db, world, "tagged, then untagged")
    for cid, tags in ((both, ("a", "b")), (only_a, ("a",)), (untagged_again, ("a",))):
        for tag in tags:
            await service.perform(app_db, world.app_id, cid, ev.AddTag(tag, admin(world)))
    await service.perform(app_db, world.app_id, untagged_again, ev.RemoveTag("a", admin(world)))
    unassigned_untagged = await started(app_db, world, "nobody's")
    url = f"/apps/{world.app_id}/conversations"

    async def listed(**params: Any) -> set[int]:
        return {c["id"] for c in ok(await send(api, "GET", url, params, form))}

    assert await listed(include_no_tags=True) == {untagged, untagged_again}
    assert await listed(include_no_tags=True, include_not_assigned=True) == {
        untagged,
        untagged_again,
        unassigned_untagged,
    }
    assert await listed(include_no_tags=True, tags=[]) == {untagged, untagged_again}
    # With tags (the older edition's "add"): the ones with all the tags, and the untagged.
    assert await listed(include_no_tags=True, tags=["a", "b"]) == {both, untagged, untagged_again}
    assert await listed(include_no_tags=True, tags="a") == {
        both,
        only_a,
        untagged,
        untagged_again,
    }
    assert await listed(include_no_tags=False) == {both, only_a, untagged, untagged_again}
    # The other filters still apply.
    await service.perform(app_db, world.app_id, untagged, ev.Close(admin(world)))
    assert await listed(include_no_tags=True, closed=False) == {untagged_again}
    assert await listed(include_no_tags=True, closed=True) == {untagged}


async def test_include_no_tags_alone_pages_on_v1_and_v2(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    """Untagged conversations among tagged ones, page by page: each once, newest first."""
    untagged: list[int] = []
    for i in range(9):
        cid = await assigned(app_db, world, str(i))
        if i % 3:
            untagged.append(cid)
        else:
            await service.perform(app_db, world.app_id, cid, ev.AddTag("t", admin(world)))
    url = f"/apps/{world.app_id}/conversations"
    expected = untagged[::-1]
    seen: list[int] = []
    params: dict[str, Any] = {"include_no_tags": "true", "count": 2}
    while True:
        body = (await api.get("/v1" + url, params=params)).json()
        seen += [c["id"] for c in body["data"]]
        if body["meta"]["next_after"] is None:
            break
        params["after"] = str(body["meta"]["next_after"])
    assert seen == expected
    seen = []
    params = {"include_no_tags": "true", "paginate_count": 2}
    while True:
        body = (await api.get(url, params=params)).json()
        seen += [c["id"] for c in body["data"]]
        position = body["meta"]["next_before_position"]
        if position is None:
            break
        params["paginate_position"] = str(position)
    assert seen == expected


async def test_the_untagged_list_probes_the_tag_rows_by_key_on_sqlite(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    """SQLite's plan of the list: the inbox index walked in order, each entry's tags looked
    up by `conversation_tags`' key (never a scan of it, nor of `conversations`)."""
    if not app_db.is_sqlite:
        pytest.skip("SQLite plans (PostgreSQL's: tests/inbox/test_plans.py)")
    for i in range(3):
        cid = await assigned(app_db, world, str(i))
        if i:
            await service.perform(app_db, world.app_id, cid, ev.AddTag("t", admin(world)))
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "any_tag" in statement and statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    engines = {app_db.read_engine.sync_engine, app_db.write_engine.sync_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", capture)
    try:
        listed = ok(
            await api.get(f"/apps/{world.app_id}/conversations", params={"include_no_tags": 1})
        )
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", capture)
    assert len(listed) == 1
    assert statements
    async with app_db.read() as conn:
        for statement, parameters in statements:
            result = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            details = [str(row[-1]) for row in result]
            tag_steps = [d for d in details if "any_tag" in d]
            assert tag_steps, details
            assert all(d.startswith("SEARCH") for d in tag_steps), details
            walks = [d for d in details if re.match(r"(SCAN|SEARCH) conversations\b", d)]
            assert any("ix_inbox_" in d for d in walks), details
            assert all("INDEX" in d or "PRIMARY KEY" in d for d in walks), details


# ---------------------------------------------------------------------------
# id_as_string on the writes' answers ("can be passed to all API queries")


@pytest.mark.parametrize("form", FORMS)
async def test_id_as_string_on_every_writes_answer_on_v2(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    url = f"/v2/conversations/{cid}"
    flag = {"id_as_string": True}
    part = ok(await send(api, "POST", f"{url}/reply", {**flag, "body": "Hi"}, form))
    assert part["id"] == str(int(part["id"]))
    assert part["conversation"] == str(cid)
    assert isinstance(part["part_group"], str)
    for method, path, params in (
        ("POST", "assign", {"admin": world.admin_id}),
        ("POST", "tag", {"tag": "vip"}),
        ("DELETE", "tag", {"tag": "vip"}),
        ("POST", "close", {}),
    ):
        ref = ok(await send(api, method, f"{url}/{path}", {**flag, **params}, form))
        assert set(ref) == {"id", "part_group"}, path
        assert all(isinstance(v, str) and v.isdigit() for v in ref.values()), (path, ref)
    user = f"/v2/users/{world.user_id}"
    started_ref = ok(
        await send(api, "POST", f"{user}/startconversation", {**flag, "body": "A"}, form)
    )
    assert isinstance(started_ref["id"], str)
    assert ok(await api.get(f"/conversations/{started_ref['id']}"))["id"] == int(started_ref["id"])
    sent = ok(await send(api, "POST", f"{user}/sendmessage", {**flag, "body": "B"}, form))
    assert set(sent) == {"conversation", "message"}
    assert all(isinstance(v, str) and v.isdigit() for v in sent.values()), sent
    got = ok(await api.get(f"/conversations/{sent['conversation']}"))
    assert got["message"] == int(sent["message"])
    # Without the flag, numbers.
    plain = ok(await send(api, "POST", f"{url}/reply", {"body": "Hi"}, form))
    assert isinstance(plain["id"], int)
    assert isinstance(plain["conversation"], int)


# ---------------------------------------------------------------------------
# v1 sendmessage `type`: "popup_chat, popup_small, popup_big, email"


@pytest.mark.parametrize("form", FORMS)
async def test_v1_send_message_of_type_email(
    api: httpx.AsyncClient, world: World, form: str
) -> None:
    url = f"/v1/users/{world.user_id}/sendmessage"
    sent = ok(await send(api, "POST", url, {"body": "Our offer", "type": "email"}, form))
    assert set(sent) == {"conversation", "message"}
    got = ok(await api.get(f"/v1/conversations/{sent['conversation']}"))
    assert (got["type"], got["reply_type"]) == ("email", "email")
    assert got["message"] == sent["message"]
    error(await send(api, "POST", url, {"body": "x", "type": "sms"}, form), 400, "BadRequest")


# ---------------------------------------------------------------------------
# v1 `tags`: only conversations with all these tags


@pytest.mark.parametrize("form", READ_FORMS)
async def test_v1_tags_lists_only_conversations_with_all_of_them(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    both = await assigned(app_db, world, "both")
    only_a = await assigned(app_db, world, "only a")
    only_b = await assigned(app_db, world, "only b")
    await assigned(app_db, world, "none")
    for cid, tags in ((both, ("a", "b")), (only_a, ("a",)), (only_b, ("b",))):
        for tag in tags:
            await service.perform(app_db, world.app_id, cid, ev.AddTag(tag, admin(world)))
    url = f"/v1/apps/{world.app_id}/conversations"

    async def listed(tags: object) -> list[int]:
        body = (await send(api, "GET", url, {"tags": tags}, form)).json()
        assert "next_after" in body["meta"]
        return [c["id"] for c in body["data"]]

    for tags in (["a", "b"], "a,b", ["b", "a"]):
        assert await listed(tags) == [both], tags
    assert await listed(["a"]) == [only_a, both]
    assert await listed("b") == [only_b, both]


# ---------------------------------------------------------------------------
# v2 `paginate_count`: "Integer from 1 to 50"


@pytest.mark.parametrize("form", READ_FORMS)
async def test_v2_paginate_count_is_1_to_50(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    for i in range(50):
        await service.perform(app_db, world.app_id, cid, ev.UserReply(f"m{i}"))
    for url in (
        f"/apps/{world.app_id}/conversations",
        f"/users/{world.user_id}/conversations",
        f"/conversations/{cid}/parts",
    ):
        base = {"include_not_assigned": True} if url.startswith("/apps") else {}
        one = ok(await send(api, "GET", url, {**base, "paginate_count": 1}, form))
        assert len(one) == 1, url
        if url.endswith("/parts"):
            fifty = ok(await send(api, "GET", url, {"paginate_count": 50}, form))
            assert len(fifty) == 50
        for bad in (0, 51, -1, "x", 2.5):
            message = error(
                await send(api, "GET", url, {**base, "paginate_count": bad}, form),
                400,
                "BadRequest",
            )
            assert message.startswith("paginate_count"), (url, bad, message)
