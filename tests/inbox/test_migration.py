"""Revision 0005 on a database with data: it indexes and counts what exists already."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import func, select

from tests.inbox.scene import Scene
from threadline.conversations.queries import PageRequest
from threadline.db.engine import Database
from threadline.db.migrate import alembic_config, downgrade, upgrade
from threadline.db.schema import conversation_tags, inbox_counts
from threadline.inbox import search
from threadline.inbox.search import parse_query
from threadline.inbox.views import View


async def _indexed(db: Database, app_id: int, now: Any) -> tuple[Any, ...]:
    c = inbox_counts.c
    async with db.read() as conn:
        cells = Counter(
            {
                tuple(r[:-1]): int(r[-1])
                for r in await conn.execute(
                    select(
                        c.kind,
                        c.tag,
                        c.closed,
                        c.channel_id,
                        c.assignee_id,
                        c.important,
                        func.sum(c.n),
                    ).group_by(c.kind, c.tag, c.closed, c.channel_id, c.assignee_id, c.important)
                )
            }
        )
        tags = sorted(tuple(r) for r in await conn.execute(select(conversation_tags)))
        found = []
        for q in ("invoice", "ok", "refund thanks", "voic"):
            page = await search.page(conn, app_id, parse_query(q), View(None), now, PageRequest(50))
            found.append([(h.state.id, h.part_id) for h in page.hits])
    return +cells, tags, found


def test_upgrade_fills_the_new_tables_from_existing_data(db_url: str) -> None:
    async def build() -> tuple[Scene, tuple[Any, ...]]:
        db = Database(db_url)
        try:
            scene = Scene(db, random.Random(2))
            await scene.setup(conversations=20)
            for _ in range(80):
                await scene.step()
            return scene, await _indexed(db, scene.app_id, scene.now)
        finally:
            await db.dispose()

    async def reread(scene: Scene) -> tuple[Any, ...]:
        db = Database(db_url)
        try:
            return await _indexed(db, scene.app_id, scene.now)
        finally:
            await db.dispose()

    scene, kept = asyncio.run(build())
    cells, tags, found = kept
    assert cells
    assert tags
    assert any(found)
    previous = ScriptDirectory.from_config(alembic_config(db_url)).get_revision("0005")
    assert previous is not None
    downgrade(db_url, str(previous.down_revision))
    upgrade(db_url)
    assert asyncio.run(reread(scene)) == kept
