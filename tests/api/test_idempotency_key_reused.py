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
