"""Revision 0022 on a database with apps, down and up again: every existing app gets a
random inbound key of its own; an app made later gets one on first use."""

from __future__ import annotations

import asyncio
import re

from sqlalchemy import select

from tests.conftest import build_world
from threadline.apps import service as apps
from threadline.channels.email import inbound
from threadline.db.engine import Database
from threadline.db.migrate import downgrade, upgrade
from threadline.db.schema import email_app_keys

DOMAIN = "threadline.localhost"


def test_existing_apps_get_a_random_key(db_url: str) -> None:
    downgrade(db_url, "0021")

    async def before() -> list[int]:
        db = Database(db_url)
        try:
            world = await build_world(db)
            third = await apps.create_app(db, "Third")
            return [world.app_id, world.foreign_app_id, third.app_id]
        finally:
            await db.dispose()

    app_ids = asyncio.run(before())
    upgrade(db_url)

    async def after() -> None:
        db = Database(db_url)
        try:
            async with db.read() as conn:
                rows = {
                    int(r.app_id): str(r.key)
                    for r in await conn.execute(
                        select(email_app_keys.c.app_id, email_app_keys.c.key)
                    )
                }
            assert set(rows) == set(app_ids)
            assert len(set(rows.values())) == len(app_ids)
            for app_id, key in rows.items():
                assert re.fullmatch(r"[0-9a-f]{20}", key)
                assert await inbound.app_key(db, app_id) == key
                assert await inbound.app_of_recipient(db, f"{key}@{DOMAIN}", DOMAIN) == app_id
                # The guessable address of before is no address any more.
                assert await inbound.app_of_recipient(db, f"{app_id}@{DOMAIN}", DOMAIN) is None
            later = await apps.create_app(db, "Later")
            key = await inbound.app_key(db, later.app_id)
            assert re.fullmatch(r"[0-9a-f]{20}", key)
            assert key not in rows.values()
            assert await inbound.app_key(db, later.app_id) == key  # made once
        finally:
            await db.dispose()

    asyncio.run(after())
