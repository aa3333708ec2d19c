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


# --- item 2: markread and settyping under the vendor's names ------------------------------


async def test_markread_from_the_operator_side_marks_the_users_parts_read(
    anon: httpx.AsyncClient, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    await service.perform(app_db, world.app_id, cid, ev.AdminReply(admin(world), "Hi"))
    await service.perform(app_db, world.app_id, cid, ev.UserReply("more"))
    await service.perform(app_db, world.app_id, cid, ev.UserReply("again"))
    before = ok(await api.get(f"/conversations/{cid}"))
    assert before["admin_unread_count"] == 2
    assert before["user_unread_count"] == 1
    # A PHP client: token and parameters as a urlencoded body, under /v1/.
    answer = await anon.post(
        f"/v1/conversations/{cid}/markread",
        content=urlencode({"auth_token": world.token}),
        headers=FORM,
    )
    assert answer.json() == {"meta": {"status": 200}, "data": {}}
    after = ok(await api.get(f"/conversations/{cid}"))
    assert after["admin_unread_count"] == 0
    assert after["user_unread_count"] == 1  # the operators' reply is still unread by the user
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    assert [(p["body"], p["read"]) for p in parts] == [
        ("again", True),
        ("more", True),
        ("Hi", False),
        ("Hello", True),
    ]


async def test_markread_from_the_user_side_and_its_refusals(
    api: httpx.AsyncClient, app: object, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    await service.perform(app_db, world.app_id, cid, ev.AdminReply(admin(world), "Hi"))
    await service.perform(app_db, world.app_id, cid, ev.UserReply("more"))
    ok(await api.post(f"/conversations/{cid}/markread", json={"from_user": True}))
    state = ok(await api.get(f"/conversations/{cid}"))
    assert state["user_unread_count"] == 0
    assert state["admin_unread_count"] == 1
    error(await api.post("/conversations/987654/markread"), 404, "NotFound")
    # A whole number is a user id; a negative one is none.
    error(
        await api.post(f"/conversations/{cid}/markread", data={"from_user": "-1"}),
        400,
        "BadRequest",
    )
    # A user id that is not the conversation's: refused, nothing read.
    other = world.foreign_user_id
    error(
        await api.post(f"/conversations/{cid}/markread", data={"from_user": str(other)}),
        *_NOT_THEIRS,
    )
    assert ok(await api.get(f"/conversations/{cid}"))["admin_unread_count"] == 1


_NOT_THEIRS = (400, "BadRequest")


# --- item 4: from_user=true, the v1 boolean form ------------------------------------------


async def test_reply_from_user_in_every_boolean_form(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    sends = [
        ("form true", {"data": {"body": "a", "from_user": "true"}}),
        ("form True", {"data": {"body": "b", "from_user": "True"}}),
        ("PHP multipart true", {"files": {"body": (None, "c"), "from_user": (None, "1")}}),
        ("JSON true", {"json": {"body": "d", "from_user": True}}),
        ("default_user", {"data": {"body": "e", "from_user": "default_user"}}),
        ("the user's id", {"json": {"body": "f", "from_user": world.user_id}}),
    ]
    for what, kwargs in sends:
        part = ok(await api.post(f"/v1/conversations/{cid}/reply", **kwargs))  # type: ignore[arg-type]
        assert part["type"] == "reply_user", what
        assert part["from"] == world.user_id, what
    for what, kwargs in [
        ("form false", {"data": {"body": "g", "from_user": "false"}}),
        ("PHP multipart false", {"files": {"body": (None, "h"), "from_user": (None, "")}}),
        ("JSON false", {"json": {"body": "i", "from_user": False}}),
        ("zero", {"data": {"body": "j", "from_user": "0"}}),
    ]:
        part = ok(await api.post(f"/conversations/{cid}/reply", **kwargs))  # type: ignore[arg-type]
        assert part["type"] == "reply_admin", what


async def test_reply_from_user_refusals_change_nothing(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    count = ok(await api.get(f"/conversations/{cid}"))["parts_count"]
    for value in ("-1", str(2**63), "1.5"):  # numbers, and no user id
        message = error(
            await api.post(f"/conversations/{cid}/reply", data={"body": "x", "from_user": value}),
            400,
            "BadRequest",
        )
        assert message.startswith("from_user:"), value
    for value in (1.5, [], {"id": 1}):
        message = error(
            await api.post(f"/conversations/{cid}/reply", json={"body": "x", "from_user": value}),
            400,
            "BadRequest",
        )
        assert message.startswith("from_user:"), value
    error(
        await api.post(
            f"/conversations/{cid}/reply", json={"body": "x", "from_user": world.foreign_user_id}
        ),
        *_NOT_THEIRS,
    )
    assert ok(await api.get(f"/conversations/{cid}"))["parts_count"] == count


async def test_openapi_tells_a_boolean_from_a_user_id(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    for path in ("/conversations/{id}/reply", "/conversations/{id}/settyping"):
        parameters = document["paths"][path]["post"]["parameters"]
        (from_user,) = [p for p in parameters if p["name"] == "from_user"]
        text = from_user["description"]
        assert "/v1/" in text
        assert "`1`" in text
        assert "user id" in text
        kinds = from_user["schema"]["anyOf"]
        assert {"type": "boolean"} in kinds


# --- item 5: integer timestamps; cursors keep their precision -----------------------------


async def test_timestamps_are_whole_seconds_and_precise_times_opts_in(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    await service.perform(app_db, world.app_id, cid, ev.AdminReply(admin(world), "Hi"))
    conversation = ok(await api.get(f"/conversations/{cid}"))
    for key in ("created", "last_update", "sended_time", "last_user_reply_time"):
        assert type(conversation[key]) is int, key
    assert type(conversation["part_last"]["created"]) is int
    assert type(conversation["user"]["created"]) is int
    for part in ok(await api.get(f"/v1/conversations/{cid}/parts")):
        assert type(part["created"]) is int
    precise = ok(await api.get(f"/conversations/{cid}", params={"precise_times": "true"}))
    assert int(precise["last_update"]) == conversation["last_update"]
    assert precise["last_update"] >= conversation["last_update"]


async def test_pagination_walks_return_each_row_once_when_rows_share_a_second(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    """Many conversations and parts in the same second: v1 and v2 walks, page size 2, see
    every row exactly once (the cursors carry microseconds, the answers whole seconds)."""
    made = await _conversations(app_db, world, 7)
    cid = made[0]
    for i in range(6):
        await service.perform(app_db, world.app_id, cid, ev.AdminReply(admin(world), f"r{i}"))
    listed = ok(
        await api.get(f"/apps/{world.app_id}/conversations", params={"include_not_assigned": 1})
    )
    assert len({c["last_update"] for c in listed}) < len(listed)  # whole seconds collide
    expected = sorted(made)

    # v1, conversation list and user conversations.
    for url in (
        f"/v1/apps/{world.app_id}/conversations",
        f"/v1/users/{world.user_id}/conversations",
    ):
        seen: list[int] = []
        after: object = 0
        while after is not None:
            body = (
                await api.get(url, params={"count": 2, "after": after, "include_not_assigned": 1})
            ).json()
            seen += [c["id"] for c in body["data"]]
            after = body["meta"]["next_after"]
        assert sorted(seen) == expected, url
        assert len(seen) == len(set(seen)), url

    # v2, conversation list.
    seen = []
    position: object = None
    while True:
        params: dict[str, object] = {"paginate_count": 2, "include_not_assigned": 1}
        if position is not None:
            params["paginate_position"] = str(position).replace("'", '"')
        body = (await api.get(f"/apps/{world.app_id}/conversations", params=params)).json()
        seen += [c["id"] for c in body["data"]]
        position = body["meta"]["next_before_position"]
        if position is None:
            break
    assert sorted(seen) == expected
    assert len(seen) == len(set(seen))

    # v1 parts.
    part_ids: list[int] = []
    after = ""
    while after is not None:
        body = (
            await api.get(f"/v1/conversations/{cid}/parts", params={"count": 2, "after": after})
        ).json()
        part_ids += [p["id"] for p in body["data"]]
        after = body["meta"]["next_after"]
    assert len(part_ids) == len(set(part_ids)) == 7


# --- item 9: field shapes as the vendor's objects -----------------------------------------


async def test_vendor_object_shapes(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    cid = await started(app_db, world)
    ok(await api.post(f"/conversations/{cid}/assign", data={"admin": world.admin_id}))
    reply = ok(await api.post(f"/conversations/{cid}/reply", data={"body": "From the team"}))
    assert reply["from"]["type"] == "message_sender"
    assert isinstance(reply["from"]["avatar"], str)
    conversation = ok(await api.get(f"/conversations/{cid}"))
    # A chat started by a user: the vendor's own example shows popup_chat / text.
    assert conversation["type"] == "popup_chat"
    assert conversation["reply_type"] == "text"
    assert conversation["message"] is None
    assert isinstance(conversation["assignee"]["avatar"], str)
    # An operator's message keeps its own type.
    sent = ok(
        await api.post(f"/users/{world.user_id}/sendmessage", data={"body": "Hi", "type": "email"})
    )
    outbound = ok(await api.get(f"/conversations/{sent['conversation']}"))
    assert outbound["type"] == "email"
    assert outbound["reply_type"] == "email"


async def test_v1_tag_with_a_comma_is_refused(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    message = error(
        await api.post(f"/v1/conversations/{cid}/tag", data={"tag": "a,b", "action": "add"}),
        400,
        "BadRequest",
    )
    assert message.startswith("tag:")
    assert ok(await api.get(f"/conversations/{cid}"))["tags"] == []
    # v2 documents 1-255 characters, no other rule.
    ok(await api.post(f"/conversations/{cid}/tag", data={"tag": "a,b"}))
    assert ok(await api.get(f"/conversations/{cid}"))["tags"] == ["a,b"]
