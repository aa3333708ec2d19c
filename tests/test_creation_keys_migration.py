"""Revision 0009 (creation keys) down and up again on a database with data: every row stays,
only the keys go, and a key forgotten by the downgrade no longer finds its object."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, inspect, select

from tests.conftest import World, build_world
from threadline.apps import manage
from threadline.db.engine import Database
from threadline.db.migrate import downgrade, upgrade
from threadline.db.schema import admins, api_tokens, channels, webhook_endpoints
from threadline.webhooks import service as webhook_service

TABLES = (admins, channels, api_tokens, webhook_endpoints)


async def _create(db: Database, world: World, random_id: int) -> dict[str, int]:
    """One object of each kind, created with `random_id`; their ids by table."""
    admin = await manage.add_admin(
        db, world.app_id, name="Cy", email=None, avatar=None, password=None, random_id=random_id
    )
    channel = await manage.add_channel(
        db, world.app_id, name="Support", type_="default", avatar=None, random_id=random_id
    )
    token, _ = await manage.add_token(
        db, world.app_id, name="reader", scopes=["user-read"], random_id=random_id
    )
    endpoint, _ = await webhook_service.add_endpoint(
        db,
        world.app_id,
        url="https://receiver.example/x",
        events=[],
        format_="json",
        random_id=random_id,
    )
    return {
        "admins": admin.id,
        "channels": channel.id,
        "api_tokens": token.id,
        "webhook_endpoints": endpoint.id,
    }


async def _counts(db: Database) -> dict[str, int]:
    async with db.read() as conn:
        return {
            t.name: int((await conn.execute(select(func.count()).select_from(t))).scalar_one())
            for t in TABLES
        }


def _columns(url: str) -> set[str]:
    async def main() -> set[str]:
        db = Database(url)
        try:
            async with db.read() as conn:
                return await conn.run_sync(
                    lambda sync: {
                        f"{t.name}.{c['name']}"
                        for t in TABLES
                        for c in inspect(sync).get_columns(t.name)
                    }
                )
        finally:
            await db.dispose()

    return asyncio.run(main())


def test_downgrade_keeps_every_row_and_upgrade_brings_the_keys_back_empty(db_url: str) -> None:
    async def before() -> tuple[World, dict[str, int], dict[str, int]]:
        db = Database(db_url)
        try:
            world = await build_world(db)
            made = await _create(db, world, 7)
            assert await _create(db, world, 7) == made
            return world, made, await _counts(db)
        finally:
            await db.dispose()

    async def after(world: World, made: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
        db = Database(db_url)
        try:
            counts = await _counts(db)
            # The keys are gone: the same one creates new objects.
            again = await _create(db, world, 7)
            assert all(again[name] != made[name] for name in made)
            return counts, await _counts(db)
        finally:
            await db.dispose()

    world, made, counts = asyncio.run(before())
    try:
        downgrade(db_url, "0008")
        assert not {c for c in _columns(db_url) if c.endswith(".random_id")}
    finally:
        upgrade(db_url)
    assert {f"{t.name}.random_id" for t in TABLES} <= _columns(db_url)
    kept, grown = asyncio.run(after(world, made))
    assert kept == counts
    assert grown == {name: n + 1 for name, n in counts.items()}
