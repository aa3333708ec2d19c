"""The vendor's general Web API rules (developers.dashly.io/webapi, "Basics", "Pagination",
"Authorization"), as every endpoint applies them. See README.md for the list."""

from __future__ import annotations

import httpx
import pytest

from tests.api.helpers import error, foreign_conversation, ok, started
from tests.compat.forms import READ_FORMS, send
from tests.conftest import World
from threadline.db.engine import Database


@pytest.mark.parametrize("form", READ_FORMS)
async def test_auth_token_as_a_parameter_in_every_form(
    anon: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    answer = await send(anon, "GET", f"/conversations/{cid}", {"auth_token": world.token}, form)
    assert ok(answer)["id"] == cid


@pytest.mark.parametrize("scheme", ["Token", "Bearer"])
async def test_auth_token_in_the_authorization_header(
    anon: httpx.AsyncClient, app_db: Database, world: World, scheme: str
) -> None:
    cid = await started(app_db, world)
    answer = await anon.get(
        f"/conversations/{cid}", headers={"Authorization": f"{scheme} {world.token}"}
    )
    assert ok(answer)["id"] == cid


async def test_missing_or_bad_token_is_authentication_failed(
    anon: httpx.AsyncClient, world: World
) -> None:
    error(await anon.get("/apps/$self_app/conversations"), 401, "AuthenticationFailed")
    error(
        await anon.get("/apps/$self_app/conversations", params={"auth_token": "nope"}),
        401,
        "AuthenticationFailed",
    )


async def test_envelope_on_success_and_error(api: httpx.AsyncClient, world: World) -> None:
    body = (await api.get("/apps/$self_app/channels")).json()
    assert set(body) == {"meta", "data"}
    assert body["meta"]["status"] == 200
    refused = (await api.get("/conversations/987654")).json()
    assert refused["data"] == {}
    assert set(refused["meta"]) == {"status", "error", "error_message"}
    assert refused["meta"]["status"] == 404


async def test_wrong_method_is_method_not_allowed(api: httpx.AsyncClient, world: World) -> None:
    error(await api.delete("/apps/$self_app/conversations"), 405, "MethodNotAllowed")


async def test_another_apps_object_is_not_found(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    """The vendor documents PermissionDenied here; we answer NotFound (README: knowingly
    different), so that ids of other apps cannot be probed."""
    theirs = await foreign_conversation(app_db, world)
    error(await api.get(f"/conversations/{theirs}"), 404, "NotFound")
    error(await api.get(f"/conversations/{theirs}/parts"), 404, "NotFound")
    error(await api.post(f"/conversations/{theirs}/markread"), 404, "NotFound")
    error(await api.get(f"/apps/{world.foreign_app_id}/conversations"), 404, "NotFound")


@pytest.mark.parametrize("value", [True, "true", "1"])
async def test_id_as_string(
    api: httpx.AsyncClient, app_db: Database, world: World, value: object
) -> None:
    cid = await started(app_db, world)
    got = ok(await api.get(f"/conversations/{cid}", params={"id_as_string": value}))
    assert got["id"] == str(cid)
    assert got["user"]["id"] == str(world.user_id)
    assert got["part_last"]["conversation"] == str(cid)
    assert got["part_last"]["from"] == str(world.user_id)


@pytest.mark.parametrize("prefix", ["", "/v1", "/v2"])
async def test_every_path_with_and_without_a_trailing_slash(
    api: httpx.AsyncClient, app_db: Database, world: World, prefix: str
) -> None:
    cid = await started(app_db, world)
    for path in (
        f"/apps/{world.app_id}/conversations",
        f"/conversations/{cid}",
        f"/conversations/{cid}/parts",
        f"/users/{world.user_id}/conversations",
        f"/apps/{world.app_id}/channels",
    ):
        plain = await api.get(prefix + path)
        slashed = await api.get(prefix + path + "/")
        assert slashed.status_code == 200, slashed.text
        assert slashed.json() == plain.json(), path


async def test_v1_pagination_by_after_and_count(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    made = [await started(app_db, world, str(i)) for i in range(3)]
    url = f"/v1/apps/{world.app_id}/conversations"
    base = {"include_not_assigned": "true"}
    first = (await api.get(url, params={**base, "count": 2})).json()
    assert [c["id"] for c in first["data"]] == made[::-1][:2]
    # "We recommend saving the cursor as a string": it comes back as it went out.
    after = str(first["meta"]["next_after"])
    second = (await api.get(url, params={**base, "count": 2, "after": after})).json()
    assert [c["id"] for c in second["data"]] == [made[0]]
    assert second["meta"]["next_after"] is None
    default = (await api.get(url, params=base)).json()
    assert len(default["data"]) == 3  # count defaults to 20
    for count in ("0", "51", "x"):
        error(await api.get(url, params={**base, "count": count}), 400, "BadRequest")


async def test_version_parameter_chooses_v1_pagination(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    await started(app_db, world)
    body = (
        await api.get(
            f"/apps/{world.app_id}/conversations",
            params={"version": 1, "include_not_assigned": "true"},
        )
    ).json()
    assert "next_after" in body["meta"]
    assert "next_before_position" not in body["meta"]
