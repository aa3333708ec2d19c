"""PostgreSQL query plans of the inbox: no table scan of conversations, parts or tags.

Every statement that views, counts and search run is captured and EXPLAINed with table
scans made costly (`enable_seqscan = off`): the planner then shows whether an index path
exists for it. With one, it never scans a whole table; without one, it still has to, and
the test names the statement.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from sqlalchemy import event, text

from tests.inbox.scene import TAGS, Scene
from threadline.conversations.queries import PageRequest
from threadline.db.engine import Database
from threadline.inbox import search, views
from threadline.inbox.counts import counts
from threadline.inbox.search import parse_query
from threadline.inbox.service import snapshot
from threadline.inbox.views import View

WATCHED = {"conversations", "conversation_parts", "conversation_tags", "inbox_counts"}


def _scans(plan: dict[str, Any]) -> list[str]:
    found = []
    if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") in WATCHED:
        found.append(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found.extend(_scans(child))
    return found


async def test_no_table_scan_in_views_counts_and_search(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL plans")
    scene = Scene(db, random.Random(4))
    await scene.setup(conversations=30)
    for _ in range(100):
        await scene.step()
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") or statement.startswith("WITH"):
            captured.append((statement, parameters))

    event.listen(db.read_engine.sync_engine, "before_cursor_execute", capture)
    a, ch, now = scene.admins[0], scene.channels[1], scene.now
    all_views = [
        View("open"), View("delayed"), View("closed"), View(None), View("open", assignee=a),
        View("open", assignee=0), View("open", channel=ch), View("open", channel=0),
        View("open", tag=TAGS[0]), View("closed", tag=TAGS[1], assignee=0),
        View("open", important=True), View("delayed", channel=ch, assignee=a, important=True),
    ]  # fmt: skip
    try:
        for view in all_views:
            async with snapshot(db) as conn:
                page = await views.page(conn, scene.app_id, view, now, PageRequest(5))
                if page.next_before:
                    await views.page(
                        conn, scene.app_id, view, now, PageRequest(5, "around", page.next_before)
                    )
                await views.page(conn, scene.app_id, view, now, v1=(None, 5))
                await counts(conn, scene.app_id, view, now)
        for walks in ((400, 4000), (1, 2)):  # the walk, then the text index
            monkeypatch.setattr(search, "WALKS", walks)
            for q, view in (("invoice", View(None)), ("ok refund", View("open", tag=TAGS[0]))):
                async with db.read() as conn:
                    await search.page(conn, scene.app_id, parse_query(q), view, now, PageRequest(3))
    finally:
        event.remove(db.read_engine.sync_engine, "before_cursor_execute", capture)
    assert len(captured) > 60
    async with db.read() as conn:
        await conn.execute(text("ANALYZE"))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        for statement, parameters in captured:
            result = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
            plan = result.scalar_one()
            plan = json.loads(plan) if isinstance(plan, str) else plan
            assert _scans(plan[0]["Plan"]) == [], statement
