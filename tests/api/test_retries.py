"""`random_id` makes every write safe to retry: the same key for the same conversation and
kind of write creates nothing new and answers what the first request created, even after
the conversation moved on; as JSON or as form text alike."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.helpers import assigned, error, ok, started
from tests.api.test_creation_retries import KINDS as CREATIONS
from tests.conftest import World
from threadline.db.engine import Database


async def _parts(api: httpx.AsyncClient, cid: int) -> list[Any]:
    data: list[Any] = ok(await api.get(f"/conversations/{cid}/parts", params={"count": 50}))
    return data


def _same(answer: dict[str, Any]) -> tuple[Any, ...]:
    """What a retry must repeat: the written part (its `read` flag may have moved on)."""
    return tuple(answer.get(k) for k in ("id", "part_group", "type", "body", "random_id"))


async def test_every_write_that_takes_random_id_is_safe_to_retry(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    # (path, first body, a write that moves the conversation on in between)
    cases: list[tuple[str, str, dict[str, Any], tuple[str, str, dict[str, Any]]]] = [
        ("POST", "reply", {"body": "Hi"}, ("POST", "reply", {"body": "Other"})),
        ("POST", "reply", {"body": "Note", "type": "note"}, ("POST", "close", {})),
        (
            "POST",
            "reply",
            {"body": "Mine", "from_user": "default_user"},
            ("POST", "reply", {"body": "Answer"}),
        ),
        (
            "POST",
            "assign",
            {"admin": world.other_admin_id},
            ("POST", "assign", {"admin": world.admin_id}),
        ),
        ("POST", "close", {}, ("POST", "/ext/reopen", {})),
        ("POST", "tag", {"tag": "vip"}, ("DELETE", "tag", {"tag": "vip"})),
        ("POST", "/ext/reopen", {}, ("POST", "close", {})),
        ("POST", "/ext/delay", {"until": 4_102_444_800}, ("POST", "/ext/delay", {"until": 0})),
        (
            "POST",
            "/ext/channel",
            {"channel": world.channel_id},
            ("POST", "/ext/channel", {"channel": 0}),
        ),
    ]
    documented = {
        (method.upper(), path)
        for path, operations in (await api.get("/openapi.json")).json()["paths"].items()
        for method, operation in operations.items()
        if any(p["name"] == "random_id" for p in operation["parameters"])
    }
    covered = set()
    for method, action, params, between in cases:
        cid = await assigned(app_db, world)
        if action == "/ext/reopen":
            ok(await api.post(f"/conversations/{cid}/close"))
        if params.get("from_user"):
            ok(await api.post(f"/conversations/{cid}/reply", json={"body": "Answer"}))

        def url(verb: str, cid: int = cid) -> str:
            if verb.startswith("/ext/"):
                return f"/ext/conversations/{cid}/{verb.removeprefix('/ext/')}"
            return f"/conversations/{cid}/{verb}"

        covered.add((method, url(action).replace(str(cid), "{id}")))
        first = ok(await api.request(method, url(action), json={**params, "random_id": 77}))
        assert first, (action, first)
        ok(await api.request(between[0], url(between[1]), json=between[2]))
        before = await _parts(api, cid)
        conversation = ok(await api.get(f"/conversations/{cid}"))
        # The retry as JSON and as form text (the key as a string) alike.
        again = ok(await api.request(method, url(action), json={**params, "random_id": 77}))
        form = {k: str(v) for k, v in {**params, "random_id": "77"}.items()}
        again_form = ok(await api.request(method, url(action), data=form))
        assert _same(again) == _same(first), action
        assert _same(again_form) == _same(first), action
        assert await _parts(api, cid) == before, action
        assert ok(await api.get(f"/conversations/{cid}")) == conversation, action
    # startconversation: per user, one key starts one conversation.
    url = f"/users/{world.user_id}/startconversation"
    first = ok(await api.post(url, json={"body": "Hello", "random_id": 5}))
    assert ok(await api.post(url, data={"body": "Hello", "random_id": "5"})) == first
    covered.add(("POST", "/users/{id}/startconversation"))
    # sendmessage: per user, one key sends one message (and opens one conversation).
    url = f"/users/{world.user_id}/sendmessage"
    listed = f"/users/{world.user_id}/conversations"
    sent = ok(await api.post(url, json={"body": "Offer", "random_id": 6}))
    conversations = ok(await api.get(listed))
    assert ok(await api.post(url, data={"body": "Offer", "random_id": "6"})) == sent
    assert ok(await api.post(url, json={"body": "Offer", "random_id": 6})) == sent
    assert ok(await api.get(listed)) == conversations
    # A key that started the user's own conversation is not a message's.
    error(await api.post(url, json={"body": "Offer", "random_id": 5}), 409, "IdempotencyKeyReused")
    assert ok(await api.get(listed)) == conversations
    covered.add(("POST", "/users/{id}/sendmessage"))
    # The app's objects' creations are covered by test_creation_retries.py.
    covered |= {("POST", f"/ext/apps/{{app}}/{kind}") for kind in CREATIONS}
    assert documented - covered <= {("DELETE", "/conversations/{id}/tag")}, documented - covered


async def test_the_same_key_for_another_kind_of_write_is_a_new_write(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    close = ok(await api.post(f"/conversations/{cid}/close", json={"random_id": 9}))
    tag = ok(await api.post(f"/conversations/{cid}/tag", json={"tag": "x", "random_id": 9}))
    assert close["id"] != tag["id"]
    untag_url = f"/conversations/{cid}/tag"
    untag = ok(await api.request("DELETE", untag_url, json={"tag": "x", "random_id": 9}))
    assert ok(await api.request("DELETE", untag_url, json={"tag": "x", "random_id": 9})) == untag
    assert untag["id"] not in (close["id"], tag["id"])
    assert ok(await api.get(f"/conversations/{cid}"))["tags"] == []
