"""Deployments that share a Redis never see each other's bus messages: each one's channel
is named after its database's random id (migration 0015), unless set explicitly. Redis
pub/sub ignores the database number, so `/0` and `/1` would not keep them apart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.events.test_fanout import redis_url
from tests.waiting import until
from threadline.db.engine import Database
from threadline.db.migrate import upgrade
from threadline.events.bus import RedisBus
from threadline.events.config import RealtimeSettings
from threadline.events.realtime import BASE_CHANNEL, deployment_channel, make_bus

WAIT_S = 5.0


async def channel_of(url: str, settings: RealtimeSettings | None = None) -> str:
    db = Database(url)
    try:
        return await deployment_channel(db, settings or RealtimeSettings())
    finally:
        await db.dispose()


async def test_each_database_names_its_own_channel(tmp_path: Path, db_url: str) -> None:
    other = tmp_path / "other.db"
    await asyncio.to_thread(upgrade, f"sqlite:///{other}")
    mine = await channel_of(db_url)
    assert mine.startswith(f"{BASE_CHANNEL}_")
    assert len(mine) > len(BASE_CHANNEL) + 8
    assert mine == await channel_of(db_url)  # every process of a deployment agrees
    assert mine != await channel_of(f"sqlite:///{other}")


async def test_an_explicit_channel_wins(db_url: str) -> None:
    settings = RealtimeSettings(bus_channel="shop_events")
    assert await channel_of(db_url, settings) == "shop_events"


async def test_two_deployments_on_one_redis_hear_only_themselves(tmp_path: Path) -> None:
    base = redis_url()
    if not base:
        pytest.skip("THREADLINE_TEST_REDIS_URL is not set")
    urls = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.db"
        await asyncio.to_thread(upgrade, f"sqlite:///{path}")
        urls.append(f"sqlite:///{path}")
    settings = RealtimeSettings(bus="redis")
    redis_a = make_url(base).set(database="0").render_as_string(hide_password=False)
    redis_b = make_url(base).set(database="1").render_as_string(hide_password=False)
    got: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    buses = [
        make_bus(settings, urls[0], redis_a, await channel_of(urls[0])),
        make_bus(settings, urls[1], redis_b, await channel_of(urls[1])),
    ]
    try:
        for bus, name in zip(buses, ("a", "b"), strict=True):
            assert isinstance(bus, RedisBus)
            await bus.start(
                lambda m, n=name: got[n].append(m) if m.get("kind") == "typing" else None
            )
        for bus in buses:
            assert isinstance(bus, RedisBus)
            async with asyncio.timeout(WAIT_S):
                await bus.connected.wait()
        buses[0].publish({"kind": "typing", "draft": "secret draft of a"})
        await until(lambda: bool(got["a"]), "a's own message back on its channel", WAIT_S)
        # Redis ran a's PUBLISH before b's (a has its message): on a wrongly shared channel,
        # b's subscription would get a's message before its own. Once b has its own, a's
        # can no longer be on its way.
        buses[1].publish({"kind": "typing", "draft": "draft of b"})
        await until(lambda: bool(got["b"]), "b's own message back on its channel", WAIT_S)
        assert got["b"] == [{"kind": "typing", "draft": "draft of b"}]
        assert got["a"] == [{"kind": "typing", "draft": "secret draft of a"}]
    finally:
        for bus in buses:
            await bus.close()
