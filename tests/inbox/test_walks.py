"""Keyset walks through a view while conversations change under them.

A writer keeps changing conversations (replies move them to the top, closing and
assigning move them between views) while a reader walks a view page by page. No
conversation may come twice, positions only go down, and every conversation that sat in
the view, unchanged, for the whole walk must be returned exactly once.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime
from typing import Any

from tests.inbox.scene import TAGS, Scene, in_view
from threadline.conversations.queries import PageRequest
from threadline.inbox import views
from threadline.inbox.service import snapshot
from threadline.inbox.views import View


async def _write(scene: Scene, done: asyncio.Event) -> int:
    writes = 0
    while not done.is_set():
        await scene.step()
        writes += 1
        await asyncio.sleep(0.003)
    return writes


async def _walk(scene: Scene, view: View, at: datetime, done: asyncio.Event) -> list[Any]:
    keys: list[tuple[datetime, int]] = []
    position = None
    try:
        while True:
            async with snapshot(scene.db) as conn:
                page = await views.page(
                    conn, scene.app_id, view, at, PageRequest(3, "before", position)
                )
            keys.extend((s.last_update, s.id) for s in page.states)
            if page.next_before is None:
                return keys
            position = page.next_before
            await asyncio.sleep(0.001)
    finally:
        done.set()


async def test_walks_under_concurrent_writes(db: Any) -> None:
    scene = Scene(db, random.Random(9))
    await scene.setup(conversations=40)
    steady_total = 0
    for view in (View(None), View("open"), View(None, assignee=0), View(None, tag=TAGS[0])):
        at = scene.now
        before = {s.id: s for s in await scene.states()}
        done = asyncio.Event()
        keys, writes = await asyncio.gather(_walk(scene, view, at, done), _write(scene, done))
        after = {s.id: s for s in await scene.states()}
        ids = [i for _, i in keys]
        assert writes > 0
        assert len(ids) == len(set(ids)), view
        assert keys == sorted(keys, reverse=True), view
        steady = {i for i, s in before.items() if in_view(s, view, at) and after.get(i) == s}
        assert steady <= set(ids), (view, steady - set(ids))
        steady_total += len(steady)
    assert steady_total > 20  # the property is not vacuous
