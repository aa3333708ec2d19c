"""The vendor's parameter types ("Types" page) as every endpoint reads them: booleans, and
v2 positions as a JSON array or comma-separated. See README.md for the list."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.api.helpers import admin, assigned, error, ok, started
from tests.compat.forms import FORMS, JSON, READ_FORMS, send
from tests.conftest import World
from threadline.apps.service import utcnow
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db.engine import Database

# "Any spelling of the word false is false (False, false, FALSE, FalsE); the character 0 and
# the empty string '' are false; any other string is true." A JSON body adds its own
# `false`/`true` and numbers.
FALSE_FORMS: list[Any] = [False, "false", "FALSE", "False", "FalsE", "0", 0, ""]
TRUE_FORMS: list[Any] = [True, "true", "TRUE", "1", 1, "yes", "on", "anything", '{"a": 1}']


# ---------------------------------------------------------------------------
# Booleans


@pytest.mark.parametrize("form", READ_FORMS)
async def test_every_boolean_of_the_conversation_list_in_every_true_and_false_form(
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
    await service.perform(app_db, world.app_id, tagged, ev.AddTag("x", a))
    other_tag = await assigned(app_db, world, "other tag")
    await service.perform(app_db, world.app_id, other_tag, ev.AddTag("y", a))
    mine = {answered, closed, snoozed, tagged, other_tag}
    untagged = mine - {tagged, other_tag}

    async def listed(**params: Any) -> set[int]:
        answer = await send(api, "GET", f"/apps/{world.app_id}/conversations", params, form)
        return {c["id"] for c in ok(answer)}

    # (parameter, other parameters, listed when true, listed when false)
    table: list[tuple[str, dict[str, Any], set[int], set[int]]] = [
        ("closed", {}, {closed}, mine - {closed}),
        ("answered", {}, {answered}, mine - {answered}),
        ("delayed", {}, {snoozed}, mine - {snoozed}),
        ("include_not_assigned", {}, mine | {unassigned}, mine),
        ("include_no_tags", {"tags": ["x"]}, {tagged} | untagged, {tagged}),
    ]
    for name, others, when_true, when_false in table:
        for value in TRUE_FORMS:
            assert await listed(**others, **{name: value}) == when_true, (name, value)
        for value in FALSE_FORMS:
            assert await listed(**others, **{name: value}) == when_false, (name, value)
    for value in TRUE_FORMS:
        got = ok(await send(api, "GET", f"/conversations/{tagged}", {"id_as_string": value}, form))
        assert got["id"] == str(tagged), value
    for value in FALSE_FORMS:
        got = ok(await send(api, "GET", f"/conversations/{tagged}", {"id_as_string": value}, form))
        assert got["id"] == tagged, value
        got = ok(await send(api, "GET", f"/conversations/{tagged}", {"precise_times": value}, form))
        assert type(got["last_update"]) is int, value


@pytest.mark.parametrize("form", READ_FORMS)
async def test_every_boolean_of_user_conversations_and_parts_in_every_form(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    by_user = await started(app_db, world)
    for i in range(2):
        await service.perform(app_db, world.app_id, by_user, ev.AdminReply(admin(world), f"r{i}"))
    sent = ok(await api.post(f"/users/{world.user_id}/sendmessage", json={"body": "Offer"}))
    both = [sent["conversation"], by_user]

    async def listed(user: object, **params: Any) -> list[int]:
        answer = await send(api, "GET", f"/users/{user}/conversations", params, form)
        return [c["id"] for c in ok(answer)]

    for value in TRUE_FORMS:
        assert await listed("u-1", by_user_id=value) == both, value
        assert await listed(world.user_id, with_user_replies_only=value) == [by_user], value
    for value in FALSE_FORMS:
        assert await listed(world.user_id, by_user_id=value) == both, value
        assert await listed(world.user_id, with_user_replies_only=value) == both, value
    # With by_user_id false the path's "u-1" is no Threadline user id.
    error(
        await send(api, "GET", "/users/u-1/conversations", {"by_user_id": "false"}, form),
        400,
        "BadRequest",
    )
    parts = ok(await api.get(f"/conversations/{by_user}/parts"))
    middle = parts[1]["id"]
    url = f"/conversations/{by_user}/parts"
    for value in TRUE_FORMS:
        page = ok(
            await send(
                api, "GET", url, {"paginate_position": [middle], "paginate_including": value}, form
            )
        )
        assert [p["id"] for p in page] == [p["id"] for p in parts[1:]], value
    for value in FALSE_FORMS:
        page = ok(
            await send(
                api, "GET", url, {"paginate_position": [middle], "paginate_including": value}, form
            )
        )
        assert [p["id"] for p in page] == [p["id"] for p in parts[2:]], value


@pytest.mark.parametrize("form", FORMS)
async def test_by_user_id_of_the_writes_in_every_true_and_false_form(
    api: httpx.AsyncClient, world: World, form: str
) -> None:
    for i, value in enumerate(TRUE_FORMS):
        started_id = ok(
            await send(
                api,
                "POST",
                f"/users/site-{i}/startconversation",
                {"body": "Hi", "by_user_id": value},
                form,
            )
        )["id"]
        got = ok(await api.get(f"/conversations/{started_id}"))
        assert got["user"]["user_id"] == f"site-{i}", value
        sent = ok(
            await send(
                api, "POST", "/users/u-1/sendmessage", {"body": "Hi", "by_user_id": value}, form
            )
        )
        got = ok(await api.get(f"/conversations/{sent['conversation']}"))
        assert got["user"]["id"] == world.user_id, value
    for value in FALSE_FORMS:
        answer = await send(
            api,
            "POST",
            f"/users/{world.user_id}/startconversation",
            {"body": "Hi", "by_user_id": value},
            form,
        )
        got = ok(await api.get(f"/conversations/{ok(answer)['id']}"))
        assert got["user"]["id"] == world.user_id, value
        # A site id read as Threadline's own is refused, and no user is created.
        error(
            await send(
                api,
                "POST",
                "/users/site-new/startconversation",
                {"body": "Hi", "by_user_id": value},
                form,
            ),
            400,
            "BadRequest",
        )
    error(
        await send(
            api,
            "POST",
            "/users/site-new/startconversation",
            {"body": "Hi", "by_user_id": False},
            form,
        ),
        400,
        "BadRequest",
    )
    error(
        await api.get("/users/site-new/conversations", params={"by_user_id": "true"}),
        400,
        "LookupError",
    )


@pytest.mark.parametrize("form", FORMS)
async def test_from_user_in_every_true_and_false_form(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    """`from_user` is the vendor's boolean, with user ids besides: a false form writes as an
    operator, any other word as the conversation's user, a whole number is a user id."""
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/reply"
    for value in [*TRUE_FORMS, "default_user", world.user_id, str(world.user_id)]:
        part = ok(await send(api, "POST", url, {"body": "me", "from_user": value}, form))
        assert (part["type"], part["from"]) == ("reply_user", world.user_id), value
    for value in FALSE_FORMS:
        part = ok(await send(api, "POST", url, {"body": "op", "from_user": value}, form))
        assert part["type"] == "reply_admin", value
    count = ok(await api.get(f"/conversations/{cid}"))["parts_count"]
    # A user id that is not the conversation's, or no id at all: refused, nothing written.
    for value in (world.foreign_user_id, "-5", 2**63):
        message = error(
            await send(api, "POST", url, {"body": "x", "from_user": value}, form),
            400,
            "BadRequest",
        )
        assert message.startswith("from_user"), value
    assert ok(await api.get(f"/conversations/{cid}"))["parts_count"] == count
    typing = f"/conversations/{cid}/settyping"
    for value in ("maybe", world.user_id, "false"):
        assert ok(await send(api, "POST", typing, {"body": "Hel", "from_user": value}, form)) == {}
    error(
        await send(api, "POST", typing, {"from_user": world.foreign_user_id}, form),
        400,
        "BadRequest",
    )


async def test_a_json_array_or_object_is_no_boolean(api: httpx.AsyncClient, world: World) -> None:
    """In a JSON body a boolean is `true`/`false`, a number or text: an array or an object is
    refused, naming the parameter, and changes nothing."""
    for value in ([], {"a": 1}, [True]):
        message = error(
            await api.request("GET", "/apps/$self_app/conversations", json={"id_as_string": value}),
            400,
            "BadRequest",
        )
        assert message.startswith("id_as_string:")
        message = error(
            await api.post(
                "/users/site-z/startconversation", json={"body": "hi", "by_user_id": value}
            ),
            400,
            "BadRequest",
        )
        assert message.startswith("by_user_id:")
        message = error(
            await api.post(
                f"/users/{world.user_id}/startconversation",
                json={"body": "hi", "by_user_id": value},
            ),
            400,
            "BadRequest",
        )
        assert message.startswith("by_user_id:")
    assert ok(await api.get(f"/users/{world.user_id}/conversations")) == []
    error(
        await api.get("/users/site-z/conversations", params={"by_user_id": "true"}),
        400,
        "LookupError",
    )


# ---------------------------------------------------------------------------
# v2 positions: a JSON array ("paginate_position - JSON array") or, as any one-level array
# of numbers or strings, comma-separated ("param=1,2,3").


def _comma(position: list[Any]) -> str:
    return ",".join(str(item) for item in position)


@pytest.mark.parametrize("form", READ_FORMS)
async def test_positions_as_json_or_comma_separated_with_numbers_or_strings(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    talk = await started(app_db, world, "talk")
    for i in range(3):
        await service.perform(app_db, world.app_id, talk, ev.AdminReply(admin(world), f"r{i}"))
    made = [await started(app_db, world, str(i)) for i in range(3)]
    newest_first = [*made[::-1], talk]
    parts = [p["id"] for p in ok(await api.get(f"/conversations/{talk}/parts"))]
    lists = [
        (f"/apps/{world.app_id}/conversations", {"include_not_assigned": True}, newest_first),
        (f"/users/{world.user_id}/conversations", {}, newest_first),
        (f"/conversations/{talk}/parts", {}, parts),
    ]
    for url, base, rows in lists:
        for as_string in (False, True):
            first = (
                await send(
                    api,
                    "GET",
                    url,
                    {**base, "paginate_count": 2, "id_as_string": as_string},
                    form,
                )
            ).json()
            position = first["meta"]["next_before_position"]
            assert all(type(item) is str for item in position) is as_string, position
            rest = rows[2:4]
            for sent in (
                position,  # a JSON array (form text: its JSON text)
                json.dumps(position),  # JSON text, also in a JSON body
                _comma(position),  # comma-separated
                _comma(position).replace(",", " , "),
                [str(item) for item in position],  # string ids
                json.dumps([str(item) for item in position]),
            ):
                params = {**base, "paginate_count": 2, "paginate_position": sent}
                page = ok(await send(api, "GET", url, params, form))
                assert [int(row["id"]) for row in page] == rest, (url, sent)
            # Empty: from the start, as "0" and "0,0" are.
            for start in ("", "0", "0,0", "[]"):
                params = {**base, "paginate_count": 2, "paginate_position": start}
                page = ok(await send(api, "GET", url, params, form))
                assert [int(row["id"]) for row in page] == rows[:2], (url, start)


@pytest.mark.parametrize("form", READ_FORMS)
async def test_bad_positions_are_refused_in_the_envelope(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    timed = f"/apps/{world.app_id}/conversations"
    parts = f"/conversations/{cid}/parts"
    bad: list[tuple[str, Any]] = [
        (timed, "abc"),
        (timed, "1700000000.5"),  # one item where two are needed
        (timed, "1700000000.5,12,13"),
        (timed, "[1700000000.5,12,13]"),
        (timed, "x,12"),
        (timed, "1700000000.5,x"),
        (timed, "-1,12"),
        (timed, "1700000000.5,-12"),
        (timed, "1700000000.5,"),
        (timed, "[1700000000.5"),
        (timed, '{"a": 1}'),
        (parts, "1.5"),
        (parts, "12,13"),
        (parts, "[12,13]"),
        (parts, "abc"),
        (parts, "-3"),
        (parts, str(2**64)),
    ]
    if form == JSON:
        bad += [(timed, {"a": 1}), (parts, 12), (parts, [True]), (parts, [[12]])]
    for url, position in bad:
        message = error(
            await send(api, "GET", url, {"paginate_position": position}, form), 400, "BadRequest"
        )
        assert message.startswith("paginate_position"), (url, position, message)
    error(await send(api, "GET", parts, {"paginate_direction": "around"}, form), 400, "BadRequest")
