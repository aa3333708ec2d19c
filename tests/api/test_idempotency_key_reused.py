"""A random_id reused with different content is refused with 409 IdempotencyKeyReused; a true
retry still answers the first write's part. Both databases, through the HTTP API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.helpers import error, ok, started
from tests.conftest import World
from threadline.db.engine import Database

KEY = 987654321


def variants(world: World) -> list[tuple[str, dict[str, Any]]]:
    first = {"body": "Hi", "from_admin": world.admin_id, "random_id": KEY}
    return [
        ("another body", first | {"body": "Bye"}),
        ("another author", first | {"from_admin": world.other_admin_id}),
        ("another type", first | {"type": "note"}),
        ("a structured body", first | {"body_json": {"blocks": [1]}}),
        ("the user's reply", {"body": "Hi", "from_user": world.user_id, "random_id": KEY}),
        ("actions offered", first | {"actions": [{"type": "button", "text": "Yes"}]}),
    ]


@pytest.mark.parametrize("case", range(6))
async def test_reused_key_with_other_content_is_409_and_changes_nothing(
    api: httpx.AsyncClient, app_db: Database, world: World, case: int
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/reply"
    payload = {"body": "Hi", "from_admin": world.admin_id, "random_id": KEY}
    first = ok(await api.post(url, json=payload))
    before = ok(await api.get(f"/conversations/{cid}"))
    what, other = variants(world)[case]
    message = error(await api.post(url, json=other), 409, "IdempotencyKeyReused")
    assert "random_id" in message, what
    assert ok(await api.get(f"/conversations/{cid}")) == before
    # A true retry, even after the refused one, is still answered with the first part.
    assert ok(await api.post(url, json=payload)) == first
    parts = ok(await api.get(f"/conversations/{cid}/parts", params={"count": 50}))
    assert [p["id"] for p in parts if p.get("random_id") == KEY] == [first["id"]]


async def test_a_true_retry_ignores_transport_details(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/reply"
    payload = {"body": "Hi", "from_admin": world.admin_id, "random_id": KEY, "external_id": "a"}
    first = ok(await api.post(url, json=payload | {"referrer": "https://shop.test/a"}))
    again = ok(
        await api.post(url, json=payload | {"external_id": "b", "referrer": "https://shop.test/b"})
    )
    assert again["id"] == first["id"]
    assert again["referrer"] == "https://shop.test/a"  # the first write's part


def start_variants(kind: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A first start of `kind` and starts that reuse its key for other content."""
    if kind == "startconversation":
        first = {"body": "Hello", "random_id": KEY}
        return first, [first | {"body": "Goodbye"}, first | {"body": "Hello!"}]
    first = {"body": "Offer", "type": "popup_chat", "random_id": KEY}
    return first, [first | {"body": "Another offer"}, first | {"type": "email"}]


@pytest.mark.parametrize("kind", ["startconversation", "sendmessage"])
async def test_a_start_reused_with_other_content_is_409_and_starts_nothing(
    api: httpx.AsyncClient, world: World, kind: str
) -> None:
    url = f"/users/{world.user_id}/{kind}"
    listed = f"/users/{world.user_id}/conversations"
    first_payload, others = start_variants(kind)
    first = ok(await api.post(url, json=first_payload))
    conversations = ok(await api.get(listed))
    for other in others:
        message = error(await api.post(url, json=other), 409, "IdempotencyKeyReused")
        assert "random_id" in message, other
    assert ok(await api.get(listed)) == conversations
    # A true retry, even after the refused ones, answers the first start.
    assert ok(await api.post(url, json=first_payload)) == first
    assert ok(await api.get(listed)) == conversations


async def test_a_key_that_started_one_kind_of_conversation_is_409_for_the_other(
    api: httpx.AsyncClient, world: World
) -> None:
    listed = f"/users/{world.user_id}/conversations"
    by_user = {"body": "Hello", "random_id": KEY}
    by_message = {"body": "Hello", "random_id": KEY + 1}
    ok(await api.post(f"/users/{world.user_id}/startconversation", json=by_user))
    ok(await api.post(f"/users/{world.user_id}/sendmessage", json=by_message))
    conversations = ok(await api.get(listed))
    crossed = [
        ("sendmessage", by_user),
        ("startconversation", by_message),
    ]
    for kind, payload in crossed:
        response = await api.post(f"/users/{world.user_id}/{kind}", json=payload)
        error(response, 409, "IdempotencyKeyReused")
    assert ok(await api.get(listed)) == conversations


async def test_a_creation_retry_is_compared_with_the_request_not_the_object(
    api: httpx.AsyncClient, world: World
) -> None:
    """An admin whose role changed since is still the answer to a true retry of its
    creation; a retry asking for the new role is another request."""
    url = "/ext/apps/$self_app/admins"
    payload = {"name": "Cy", "email": "cy@acme.test", "role": "operator", "random_id": KEY}
    first = ok(await api.post(url, json=payload))
    ok(await api.post(f"{url}/{first['id']}/role", json={"role": "administrator"}))
    again = ok(await api.post(url, json=payload))
    assert again["id"] == first["id"]
    assert again["role"] == "administrator"
    error(
        await api.post(url, json=payload | {"role": "administrator"}), 409, "IdempotencyKeyReused"
    )
    # The password is not part of what is compared (only its slow hash is kept).
    assert (
        ok(await api.post(url, json=payload | {"password": "another-horse!!"}))["id"]
        == (first["id"])
    )
    listed = ok(await api.get(url))
    assert [a["id"] for a in listed].count(first["id"]) == 1
