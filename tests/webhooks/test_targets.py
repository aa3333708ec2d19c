"""Webhooks reach public addresses only: refused at registration and at every delivery,
after resolution, connecting to the checked address; no redirect is followed; a failed
delivery stores no more than "could not connect" or the HTTP status."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import pytest

from tests.conftest import World
from tests.webhooks.test_worker import (
    FAST,
    Receiver,
    endpoint,
    free_port,
    running,
    settled,
)
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db.engine import Database
from threadline.webhooks import repository as repo
from threadline.webhooks import targets
from threadline.webhooks.worker import COULD_NOT_CONNECT

HOOKS = "/ext/apps/$self_app/webhooks"
PUBLIC_ONLY = FAST.model_copy(update={"webhook_allow_private": False})

REFUSED_HOSTS = [
    "169.254.169.254",
    "10.1.2.3",
    "192.168.0.10",
    "172.16.5.4",
    "127.0.0.1",
    "127.1",
    "[::1]",
    "0.0.0.0",  # noqa: S104  (a target to refuse, not an address to bind)
    "2130706433",
    "0x7f000001",
    "localhost",
    "LOCALHOST.",
    "api.localhost",
    "[::ffff:127.0.0.1]",
    "[fe80::1]",
    "[fd00::1]",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "100.64.0.1",
    "[::]",
]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_private_and_special_hosts_are_refused(host: str) -> None:
    with pytest.raises(targets.TargetRefused):
        targets.check_host(host)


def test_public_addresses_are_allowed() -> None:
    assert targets.check_host("93.184.216.34") == ipaddress.ip_address("93.184.216.34")
    assert targets.check_host("[2606:4700::1111]") is not None
    assert targets.check_host("hooks.example.com") is None  # a name: checked once resolved


async def test_a_delivery_to_a_private_address_is_refused_and_says_only_could_not_connect(
    db: Database, world: World, receiver: Receiver
) -> None:
    """The endpoint was stored earlier (or with the setting on): the delivery checks again."""
    ep = await endpoint(db, world, receiver.url, ["conversation_reply"])
    async with running(db, PUBLIC_ONLY):
        await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="hi"))
        dead = await settled(db, world, ep, 1, repo.DEAD)
    assert receiver.requests == []
    assert dead[0].last_error == COULD_NOT_CONNECT
    assert dead[0].last_status is None


async def test_delivery_connects_to_the_address_it_checked(
    db: Database, world: World, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rebinding: the name is resolved once per connection, by the check, and the connection
    goes to that address; a second, private answer is never used. Here the checked answer
    is loopback, declared public for the test; the name itself resolves nowhere."""
    calls: list[str] = []

    async def resolve(host: str, _port: int) -> list[targets.Address]:
        calls.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(targets, "resolve", resolve)
    monkeypatch.setattr(targets, "address_allowed", lambda a: str(a) == "127.0.0.1")
    url = f"http://hooks.invalid:{receiver.port}/hook"
    ep = await endpoint(db, world, url, ["conversation_reply"])
    async with running(db, PUBLIC_ONLY):
        await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="hi"))
        await settled(db, world, ep, 1, repo.DELIVERED)
    assert calls == ["hooks.invalid"]
    assert receiver.requests[0]["headers"]["host"] == f"hooks.invalid:{receiver.port}"


async def test_a_name_that_rebinds_to_a_private_address_gets_nothing(
    db: Database, world: World, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def resolve(_host: str, _port: int) -> list[targets.Address]:
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(targets, "resolve", resolve)
    ep = await endpoint(
        db, world, f"http://hooks.invalid:{receiver.port}/hook", ["conversation_reply"]
    )
    async with running(db, PUBLIC_ONLY):
        await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="hi"))
        dead = await settled(db, world, ep, 1, repo.DEAD)
    assert receiver.requests == []
    assert dead[0].last_error == COULD_NOT_CONNECT


async def test_redirects_are_not_followed(db: Database, world: World, receiver: Receiver) -> None:
    receiver.mode = "redirect"
    ep = await endpoint(db, world, receiver.url, ["conversation_reply"])
    async with running(db, FAST):
        await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="hi"))
        dead = await settled(db, world, ep, 1, repo.DEAD)
    assert {r["path"] for r in receiver.requests} == {"/hook"}
    assert dead[0].last_status == 307
    assert dead[0].last_error == "HTTP 307"


async def test_a_closed_port_and_a_timeout_store_the_same_error(
    db: Database, world: World, receiver: Receiver
) -> None:
    receiver.mode = "slow"
    closed = await endpoint(
        db, world, f"http://127.0.0.1:{free_port()}/hook", ["conversation_reply"]
    )
    slow = await endpoint(db, world, receiver.url, ["conversation_reply"])
    async with running(db, FAST):
        await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="hi"))
        (to_closed,) = await settled(db, world, closed, 1, repo.DEAD)
        (to_slow,) = await settled(db, world, slow, 1, repo.DEAD)
    assert to_closed.last_error == to_slow.last_error == COULD_NOT_CONNECT
