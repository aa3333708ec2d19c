"""Requests exactly as existing vendor clients send them (issue 15, items 1, 3, 6, 7, 8).

Each test sends the bytes a client library sends: its encoding, its headers, its trailing
slash, its parameter forms; and checks the vendor's behaviour. Both databases.
"""

from __future__ import annotations

from urllib.parse import urlencode

import httpx

from tests.api.helpers import admin, error, ok, started
from tests.conftest import World
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db.engine import Database

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def _conversations(app_db: Database, world: World, n: int) -> list[int]:
    """`n` user-started conversations, oldest first."""
    return [await started(app_db, world, f"c{i}") for i in range(n)]


# --- item 1: a trailing slash keeps the version and is never redirected -------------------


async def test_trailing_slash_v1_list_pages_with_count_and_after(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    made = await _conversations(app_db, world, 3)
    url = f"/v1/apps/{world.app_id}/conversations/?count=2&include_not_assigned=true"
    first = await api.get(url)
    assert first.status_code == 200, first.text
    assert "location" not in first.headers
    body = first.json()
    assert [c["id"] for c in body["data"]] == made[::-1][:2]
    assert body["meta"]["next_after"] is not None  # v1 behaviour, not v2's
    after = body["meta"]["next_after"]
    second = ok(await api.get(url + f"&after={after}"))
    assert [c["id"] for c in second] == [made[0]]


async def test_trailing_slash_on_posts_and_unversioned_paths(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    answer = await api.post(
        f"/v1/conversations/{cid}/reply/",
        content=urlencode({"body": "Hello from a PHP client"}),
        headers=FORM,
    )
    part = ok(answer)
    assert part["body"] == "Hello from a PHP client"
    assert ok(await api.post(f"/conversations/{cid}/close/", data={})) != {}
    got = ok(await api.get(f"/conversations/{cid}/"))
    assert got["closed"] is True
    # A v1 tag through a trailing slash answers v1's `{}`.
    assert ok(await api.post(f"/v1/conversations/{cid}/tag/", data={"tag": "vip"})) == {}
    assert ok(await api.get(f"/v2/conversations/{cid}/"))["tags"] == ["vip"]


async def test_trailing_slash_unknown_path_is_still_404_in_the_envelope(
    api: httpx.AsyncClient,
) -> None:
    error(await api.get("/v1/no/such/thing/"), 404, "NotFound")


# --- item 3: after=0 and empty cursors mean "from the start" ------------------------------


async def test_after_zero_on_the_app_list(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    made = await _conversations(app_db, world, 2)
    for after in ("0", "", "0.0"):
        data = ok(
            await api.get(
                f"/v1/apps/{world.app_id}/conversations",
                params={"after": after, "include_not_assigned": "true"},
            )
        )
        assert [c["id"] for c in data] == made[::-1], after


async def test_after_zero_on_user_conversations_and_parts(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    await service.perform(app_db, world.app_id, cid, ev.AdminReply(admin(world), "Hi"))
    convs = ok(await api.get(f"/v1/users/{world.user_id}/conversations", params={"after": 0}))
    assert [c["id"] for c in convs] == [cid]
    parts = ok(await api.get(f"/v1/conversations/{cid}/parts", params={"after": "0"}))
    assert [p["body"] for p in parts] == ["Hi", "Hello"]
    # JSON body `0`, and v2's position given as zeros or empty.
    parts_json = ok(await api.request("GET", f"/v1/conversations/{cid}/parts", json={"after": 0}))
    assert len(parts_json) == 2
    for position in ("[0]", "[]", ""):
        assert (
            len(
                ok(
                    await api.get(
                        f"/conversations/{cid}/parts", params={"paginate_position": position}
                    )
                )
            )
            == 2
        ), position
    listed = ok(
        await api.get(
            f"/apps/{world.app_id}/conversations",
            params={"paginate_position": "[0, 0]", "include_not_assigned": "true"},
        )
    )
    assert [c["id"] for c in listed] == [cid]


# --- item 6: parameters in the body of a GET ---------------------------------------------


async def test_get_with_urlencoded_body_token_and_parameters(
    anon: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    made = await _conversations(app_db, world, 3)
    answer = await anon.request(
        "GET",
        f"/v1/apps/{world.app_id}/conversations",
        content=urlencode(
            {"auth_token": world.token, "count": "2", "include_not_assigned": "true"}
        ),
        headers=FORM,
    )
    body = answer.json()
    assert answer.status_code == 200, body
    assert [c["id"] for c in body["data"]] == made[::-1][:2]
    assert body["meta"]["next_after"] is not None


async def test_get_with_json_body(anon: httpx.AsyncClient, app_db: Database, world: World) -> None:
    cid = await started(app_db, world)
    answer = await anon.request(
        "GET", f"/conversations/{cid}", json={"auth_token": world.token, "id_as_string": True}
    )
    assert ok(answer)["id"] == str(cid)


async def test_get_with_a_bad_body_is_a_clear_400(anon: httpx.AsyncClient, world: World) -> None:
    message = error(
        await anon.request(
            "GET",
            f"/apps/{world.app_id}/conversations",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        ),
        400,
        "BadRequest",
    )
    assert "JSON" in message


# --- item 7: assign without `admin` removes the assignment --------------------------------


async def test_assign_without_admin_unassigns(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    ok(await api.post(f"/conversations/{cid}/assign", data={"admin": world.admin_id}))
    assert ok(await api.get(f"/conversations/{cid}"))["assignee"]["id"] == world.admin_id
    answer = ok(
        await api.post(
            f"/v1/conversations/{cid}/assign",
            content=urlencode({"from_admin": world.other_admin_id}),
            headers=FORM,
        )
    )
    assert set(answer) == {"id", "part_group"}
    assert ok(await api.get(f"/conversations/{cid}"))["assignee"] is None
    # Nothing left to remove: empty data, nothing written.
    assert ok(await api.post(f"/conversations/{cid}/assign")) == {}
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    assert [p["type"] for p in parts].count("assigned") == 2


# --- item 8: action=delete removes the tag on every version -------------------------------


async def test_tag_action_delete_on_every_version(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    for prefix in ("", "/v2", "/v1"):
        ok(await api.post(f"{prefix}/conversations/{cid}/tag", data={"tag": "vip"}))
        assert ok(await api.get(f"/conversations/{cid}"))["tags"] == ["vip"], prefix
        answer = ok(
            await api.post(
                f"{prefix}/conversations/{cid}/tag", data={"tag": "vip", "action": "delete"}
            )
        )
        if prefix == "/v1":
            assert answer == {}
        else:
            assert set(answer) == {"id", "part_group"}
            parts = ok(await api.get(f"/conversations/{cid}/parts", params={"paginate_count": 1}))
            assert parts[0]["type"] == "tag_deleted"
            assert parts[0]["id"] == answer["id"]
        assert ok(await api.get(f"/conversations/{cid}"))["tags"] == [], prefix


async def test_tag_action_is_quiet_and_plain_v2_add_stays_strict(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    # Deleting a missing tag, or adding an existing one, with `action`: nothing, no error.
    assert (
        ok(await api.post(f"/conversations/{cid}/tag", data={"tag": "x", "action": "delete"})) == {}
    )
    ok(await api.post(f"/conversations/{cid}/tag", json={"tag": "x", "action": "add"}))
    assert ok(await api.post(f"/conversations/{cid}/tag", json={"tag": "x", "action": "add"})) == {}
    error(
        await api.post(f"/conversations/{cid}/tag", data={"tag": "x"}),
        400,
        "ConversationTagAlreadyAssigned",
    )
    error(
        await api.post(f"/conversations/{cid}/tag", data={"tag": "x", "action": "remove"}),
        400,
        "BadRequest",
    )
    assert ok(await api.get(f"/conversations/{cid}"))["tags"] == ["x"]
