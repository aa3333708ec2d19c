"""`/ext/apps/{app}/webhooks`: endpoints, deliveries and replays through the API, with the
app's own in-process worker delivering to a local receiver."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import anon, api, app, app_db, client_for, world
from tests.api.helpers import admin, error, ok, started
from tests.conftest import World
from tests.webhooks.test_targets import REFUSED_HOSTS
from tests.webhooks.test_worker import Receiver
from threadline.apps.repository import AppRepository
from threadline.apps.service import issue_token, utcnow
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db.engine import Database
from threadline.webhooks import targets

HOOKS = "/ext/apps/$self_app/webhooks"
__all__ = ["anon", "api", "app", "app_db", "world"]  # the API fixtures, used here


@pytest.fixture
def public_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("THREADLINE_WEBHOOK_ALLOW_PRIVATE", raising=False)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


async def test_add_list_deliver_and_remove(
    api: httpx.AsyncClient, app_db: Database, world: World, receiver: Receiver
) -> None:
    created = ok(
        await api.post(
            HOOKS, json={"url": receiver.url, "events": ["conversation_reply"], "format": "json"}
        )
    )
    assert created["secret"].startswith("whsec_")
    assert created["events"] == ["conversation_reply"]
    listed = ok(await api.get(HOOKS))
    assert [w["id"] for w in listed] == [created["id"]]
    assert "secret" not in listed[0]

    cid = await started(app_db, world, "Hello hooks")
    await service.perform(app_db, world.app_id, cid, ev.Close(admin(world)))
    await receiver.wait_for(1)
    path = f"{HOOKS}/deliveries"
    mine = {"webhook": created["id"]}
    for _ in range(100):
        deliveries = ok(await api.get(path, params=mine))
        if deliveries and deliveries[0]["status"] == "delivered":
            break
    (delivery,) = deliveries
    assert delivery["status"] == "delivered"
    assert delivery["conversation"] == cid
    assert delivery["attempts"] == 1
    assert delivery["last_status"] == 200
    assert receiver.requests[0]["headers"]["webhook-id"] == f"msg_{delivery['id']}"

    (replayed,) = ok(await api.post(f"{HOOKS}/replay", json={"delivery": delivery["id"]}))
    assert replayed["status"] == "pending"
    assert replayed["attempts"] == 0
    assert replayed["sequence"] == delivery["sequence"] == 1
    await receiver.wait_for(2)
    assert receiver.requests[1]["headers"]["webhook-id"] == f"msg_{delivery['id']}"
    assert ok(await api.get(path, params={**mine, "status": "dead"})) == []

    ok(await api.delete(HOOKS, params={"webhook": created["id"]}))
    assert ok(await api.get(HOOKS)) == []
    error(await api.delete(HOOKS, params={"webhook": created["id"]}), 404, "NotFound")
    assert [d["id"] for d in ok(await api.get(path))] == [delivery["id"]]
    error(await api.post(f"{HOOKS}/replay", json={"delivery": delivery["id"]}), 404, "NotFound")


async def test_bad_parameters(api: httpx.AsyncClient) -> None:
    for params, name in (
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "https://example.com", "events": ["nope"]}, "events"),
        ({"url": "https://example.com", "format": "xml"}, "format"),
    ):
        message = error(await api.post(HOOKS, json=params), 400, "BadRequest")
        assert message.startswith(f"{name}:"), message
    error(await api.post(f"{HOOKS}/replay", json={"delivery": "x"}), 400, "BadRequest")
    error(await api.get(f"{HOOKS}/deliveries", params={"status": "lost"}), 400, "BadRequest")
    error(await api.delete(HOOKS), 400, "BadRequest")
    assert ok(await api.post(f"{HOOKS}/replay")) == []  # no dead letters


async def test_admin_scope_and_tenancy(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    created = ok(await api.post(HOOKS, json={"url": "https://example.com/hook"}))
    async with app_db.write() as conn:
        repo = AppRepository(conn)
        reader = await issue_token(repo, world.app_id, "r", ["conversations-read"], utcnow())
        foreign = await issue_token(repo, world.foreign_app_id, "f", ["admin"], utcnow())
    async with client_for(app, reader) as client:
        error(await client.get(HOOKS), 403, "PermissionDenied")
    async with client_for(app, foreign) as client:
        assert ok(await client.get(HOOKS)) == []
        error(await client.get(f"/ext/apps/{world.app_id}/webhooks"), 404, "NotFound")
        error(await client.delete(HOOKS, params={"webhook": created["id"]}), 404, "NotFound")
        assert ok(await client.get(f"{HOOKS}/deliveries", params={"webhook": created["id"]})) == []
        assert ok(await client.post(f"{HOOKS}/replay", json={"webhook": created["id"]})) == []
    assert len(ok(await api.get(HOOKS))) == 1


@pytest.mark.usefixtures("public_only")
async def test_registration_refuses_private_targets(api: httpx.AsyncClient) -> None:
    for host in REFUSED_HOSTS:
        response = await api.post(HOOKS, json={"url": f"http://{host}:8080/hook"})
        message = error(response, 400, "BadRequest")
        assert message.startswith("url:"), (host, message)
    assert ok(await api.get(HOOKS)) == []
    # A name that does not resolve here is accepted: each delivery checks it again.
    ok(await api.post(HOOKS, json={"url": "https://receiver.example/hook"}))


@pytest.mark.usefixtures("public_only")
async def test_registration_refuses_a_name_that_resolves_to_a_private_address(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def loopback(_host: str, _port: int) -> list[targets.Address]:
        return [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(targets, "resolve", loopback)
    response = await api.post(HOOKS, json={"url": "https://sneaky.example/hook"})
    assert "resolves" in error(response, 400, "BadRequest")


async def test_the_setting_allows_private_targets(api: httpx.AsyncClient) -> None:
    created = ok(await api.post(HOOKS, json={"url": "http://127.0.0.1:9/hook"}))
    assert created["url"] == "http://127.0.0.1:9/hook"
