"""`random_id` makes the creations under `/ext/apps/{app}/` safe to retry: the same key in the
same app and for the same kind of object creates nothing new and answers what the first
request created, even when concurrent duplicates race or when the object was removed since;
the key reused for other content is refused (409 IdempotencyKeyReused). A token's text is
never shown again."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Table, func, select

from tests.api.conftest import client_for
from tests.api.helpers import error, ok
from tests.conftest import World
from threadline.apps.repository import AppRepository
from threadline.apps.service import ALL_SCOPES, issue_token, utcnow
from threadline.db.engine import Database
from threadline.db.schema import admins, api_tokens, channels, webhook_endpoints

BASE = "/ext/apps/$self_app"
KINDS = ("admins", "channels", "tokens", "webhooks")
TABLES: dict[str, Table] = {
    "admins": admins,
    "channels": channels,
    "tokens": api_tokens,
    "webhooks": webhook_endpoints,
}


def params(kind: str, n: int) -> dict[str, Any]:
    """Valid parameters for one creation; `n` makes them differ from another's."""
    if kind == "admins":
        return {"name": f"Cy {n}", "email": f"cy{n}@acme.test", "password": "s3cret-horse!"}
    if kind == "channels":
        return {"name": f"Support {n}", "type": "manual", "avatar": f"https://a/{n}.png"}
    if kind == "tokens":
        return {"name": f"reader {n}", "scopes": ["conversations-read", "user-read"]}
    return {"url": f"https://receiver.example/{n}", "events": ["conversation_reply"]}


def without_text(answer: dict[str, Any]) -> dict[str, Any]:
    """What a token's retry repeats: every field but the token's text."""
    return {k: v for k, v in answer.items() if k != "token"}


def retried(kind: str, first: dict[str, Any]) -> dict[str, Any]:
    """What a retry of the creation that answered `first` must answer (never a secret)."""
    if kind == "tokens":
        return {**first, "token": None}
    if kind == "webhooks":
        return {k: v for k, v in first.items() if k not in ("secret", "token")}
    return first


async def listed(api: httpx.AsyncClient, kind: str) -> list[Any]:
    data: list[Any] = ok(await api.get(f"{BASE}/{kind}"))
    return data


async def stored(db: Database, kind: str, app_id: int) -> int:
    """The app's rows of that kind, removed ones included."""
    table = TABLES[kind]
    async with db.read() as conn:
        query = select(func.count()).select_from(table).where(table.c.app_id == app_id)
        return int((await conn.execute(query)).scalar_one())


async def remove(api: httpx.AsyncClient, kind: str, ident: int) -> None:
    if kind == "webhooks":
        ok(await api.request("DELETE", f"{BASE}/webhooks", json={"webhook": ident}))
    else:
        ok(await api.delete(f"{BASE}/{kind}/{ident}"))


async def foreign_token(db: Database, world: World) -> str:
    async with db.write() as conn:
        return await issue_token(
            AppRepository(conn), world.foreign_app_id, "all", list(ALL_SCOPES), utcnow()
        )


@pytest.mark.parametrize("kind", KINDS)
async def test_a_retry_answers_the_first_object_and_creates_nothing(
    api: httpx.AsyncClient, app_db: Database, world: World, kind: str
) -> None:
    url = f"{BASE}/{kind}"
    before = await listed(api, kind)
    first = ok(await api.post(url, json={**params(kind, 1), "random_id": 77}))
    after = await listed(api, kind)
    assert len(after) == len(before) + 1
    count = await stored(app_db, kind, world.app_id)
    # As JSON and as form text (the key as a string): the first.
    again = ok(await api.post(url, json={**params(kind, 1), "random_id": 77}))
    form = {k: ",".join(v) if isinstance(v, list) else v for k, v in params(kind, 1).items()}
    again_form = ok(await api.post(url, data={**form, "random_id": "77"}))
    for answer in (again, again_form):
        assert answer == retried(kind, first), kind
    # Other parameters with the same key: refused, and nothing is created.
    other = await api.post(url, json={**params(kind, 2), "random_id": 77})
    assert "random_id" in error(other, 409, "IdempotencyKeyReused")
    assert await listed(api, kind) == after
    assert await stored(app_db, kind, world.app_id) == count


@pytest.mark.parametrize("kind", KINDS)
async def test_other_keys_and_no_key_create_new_objects(
    api: httpx.AsyncClient, app_db: Database, world: World, kind: str
) -> None:
    url = f"{BASE}/{kind}"
    count = await stored(app_db, kind, world.app_id)
    first = ok(await api.post(url, json={**params(kind, 1), "random_id": 77}))
    second = ok(await api.post(url, json={**params(kind, 2), "random_id": 78}))
    # 0 and empty mean no key: each request creates.
    zero = ok(await api.post(url, json={**params(kind, 3), "random_id": 0}))
    empty = ok(await api.post(url, data={**params(kind, 4), "random_id": ""}))
    plain = ok(await api.post(url, json=params(kind, 5)))
    made = [first, second, zero, empty, plain]
    assert len({a["id"] for a in made}) == len(made)
    assert await stored(app_db, kind, world.app_id) == count + len(made)
    assert {a["id"] for a in made} <= {o["id"] for o in await listed(api, kind)}


async def test_each_kind_of_object_has_its_own_keys(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    counts = {kind: await stored(app_db, kind, world.app_id) for kind in KINDS}
    for kind in KINDS:
        ok(await api.post(f"{BASE}/{kind}", json={**params(kind, 1), "random_id": 5}))
    for kind in KINDS:
        assert await stored(app_db, kind, world.app_id) == counts[kind] + 1, kind


@pytest.mark.parametrize("kind", KINDS)
async def test_the_same_key_in_another_app_creates_there(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World, kind: str
) -> None:
    url = f"{BASE}/{kind}"
    mine = ok(await api.post(url, json={**params(kind, 1), "random_id": 77}))
    ours = await listed(api, kind)
    async with client_for(app, await foreign_token(app_db, world)) as foreign:
        theirs_before = await stored(app_db, kind, world.foreign_app_id)
        theirs = ok(await foreign.post(url, json={**params(kind, 1), "random_id": 77}))
        assert theirs["id"] != mine["id"]
        assert await stored(app_db, kind, world.foreign_app_id) == theirs_before + 1
        again = ok(await foreign.post(url, json={**params(kind, 1), "random_id": 77}))
        assert again == retried(kind, theirs)
        assert theirs["id"] in [o["id"] for o in await listed(foreign, kind)]
    assert ok(await api.post(url, json={**params(kind, 1), "random_id": 77})) == retried(kind, mine)
    assert await listed(api, kind) == ours


@pytest.mark.parametrize("kind", KINDS)
async def test_concurrent_duplicates_create_one(
    api: httpx.AsyncClient, app_db: Database, world: World, kind: str
) -> None:
    url = f"{BASE}/{kind}"
    count = await stored(app_db, kind, world.app_id)
    body = {**params(kind, 1), "random_id": 4242}
    answers = [ok(r) for r in await asyncio.gather(*(api.post(url, json=body) for _ in range(6)))]
    assert await stored(app_db, kind, world.app_id) == count + 1
    assert len({a["id"] for a in answers}) == 1
    if kind == "tokens":
        # One answer (the winner's) shows the text; the others cannot.
        assert sum(a["token"] is not None for a in answers) == 1
        assert len({repr(without_text(a)) for a in answers}) == 1
    elif kind == "webhooks":
        # One answer (the winner's) shows the secret and token; the others do not.
        assert sum("secret" in a for a in answers) == 1
        assert len({repr(retried(kind, a)) for a in answers}) == 1
    else:
        assert all(a == answers[0] for a in answers)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", ["abc", -(2**63) - 1, str(-(2**63) - 1), 2**63, "1.5", 1.5, True])
async def test_a_bad_key_is_refused_and_creates_nothing(
    api: httpx.AsyncClient, app_db: Database, world: World, kind: str, bad: Any
) -> None:
    count = await stored(app_db, kind, world.app_id)
    response = await api.post(f"{BASE}/{kind}", json={**params(kind, 1), "random_id": bad})
    assert "random_id" in error(response, 400, "BadRequest")
    assert await stored(app_db, kind, world.app_id) == count


@pytest.mark.parametrize("kind", KINDS)
async def test_a_key_of_a_removed_object_answers_it_and_never_creates_again(
    api: httpx.AsyncClient, app_db: Database, world: World, kind: str
) -> None:
    url = f"{BASE}/{kind}"
    before = await listed(api, kind)
    first = ok(await api.post(url, json={**params(kind, 1), "random_id": 31}))
    await remove(api, kind, first["id"])
    count = await stored(app_db, kind, world.app_id)
    again = ok(await api.post(url, json={**params(kind, 1), "random_id": 31}))
    assert again == retried(kind, first)
    assert await listed(api, kind) == before
    assert await stored(app_db, kind, world.app_id) == count


async def test_a_token_retry_shows_no_text_and_the_first_token_still_works(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    url = f"{BASE}/tokens"
    first = ok(await api.post(url, json={"name": "reader", "scopes": ["conversations-read"]}))
    assert first["token"].startswith(first["prefix"])
    keyed = ok(
        await api.post(
            url, json={"name": "keyed", "scopes": ["conversations-read"], "random_id": 9}
        )
    )
    assert keyed["token"].startswith(keyed["prefix"])
    again = ok(
        await api.post(
            url, json={"name": "keyed", "scopes": ["conversations-read"], "random_id": 9}
        )
    )
    assert again["token"] is None
    assert without_text(again) == without_text(keyed)
    assert again["scopes"] == ["conversations-read"]
    async with client_for(app, keyed["token"]) as client:
        ok(await client.get("/apps/$self_app/conversations"))
        error(await client.get(url), 403, "PermissionDenied")
    # A request that is wrong in itself is refused, retry or not.
    wrong = {"name": "keyed", "scopes": ["root"], "random_id": 9}
    error(await api.post(url, json=wrong), 400, "BadRequest")


async def test_an_admin_retry_is_not_refused_for_its_own_email(api: httpx.AsyncClient) -> None:
    url = f"{BASE}/admins"
    first = ok(await api.post(url, json={"name": "Cy", "email": "cy@acme.test", "random_id": 3}))
    assert ok(
        await api.post(url, json={"name": "Cy", "email": "cy@acme.test", "random_id": 3})
    ) == (first)
    # Without the key, the email is taken.
    taken = error(
        await api.post(url, json={"name": "Cy", "email": "cy@acme.test"}), 400, "BadRequest"
    )
    assert "email" in taken
    other_key = {"name": "Cy", "email": "cy@acme.test", "random_id": 4}
    assert "email" in error(await api.post(url, json=other_key), 400, "BadRequest")


async def test_a_webhook_retry_answers_the_endpoint_without_its_secrets(
    api: httpx.AsyncClient,
) -> None:
    url = f"{BASE}/webhooks"
    body = {"url": "https://receiver.example/hooks", "random_id": 12}
    first = ok(await api.post(url, json=body))
    assert first["secret"].startswith("whsec_")
    assert first["token"]
    again = ok(await api.post(url, json={**body, "format": "json"}))
    assert again["id"] == first["id"]
    assert again["format"] == "json"
    assert "secret" not in again
    assert "token" not in again
    assert all("secret" not in e and "token" not in e for e in await listed(api, "webhooks"))


async def test_the_creations_document_random_id(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    for kind in KINDS:
        operation = document["paths"][f"/ext/apps/{{app}}/{kind}"]["post"]
        names = [p["name"] for p in operation["parameters"]]
        assert "random_id" in names, kind
    token = document["paths"]["/ext/apps/{app}/tokens"]["post"]
    assert "revoke this token and create another" in token["description"]
