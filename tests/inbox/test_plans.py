"""PostgreSQL query plans of the inbox: no table scan of conversations, parts or tags.

Every statement that views, counts and search run is captured and EXPLAINed with table
scans made costly (`enable_seqscan = off`): the planner then shows whether an index path
exists for it. With one, it never scans a whole table; without one, it still has to, and
the test names the statement. Pages (views and the vendor's list) are also EXPLAINed with
sorts made costly: each must walk its indexes in order under a Limit, never sort a view.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from sqlalchemy import event, text

from tests.inbox.scene import TAGS, Scene
from threadline.conversations.queries import InboxFilter, PageRequest
from threadline.db.engine import Database
from threadline.inbox import search, views
from threadline.inbox.counts import counts
from threadline.inbox.search import parse_query
from threadline.inbox.service import snapshot
from threadline.inbox.views import View

WATCHED = {"conversations", "conversation_parts", "conversation_tags", "inbox_counts"}


_SCANS = {"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan"}


def _unlimited_scans(plan: dict[str, Any]) -> list[str]:
    """Scans of a watched table in this subtree that no Limit above them stops."""
    if plan.get("Node Type") == "Limit":
        return []
    found = []
    if plan.get("Node Type") in _SCANS and plan.get("Relation Name") in WATCHED:
        found.append(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found.extend(_unlimited_scans(child))
    return found


def _sorted_views(plan: dict[str, Any]) -> list[str]:
    """Sorts of a whole view: a Sort fed by a scan of a watched table with no Limit
    between them. A page must walk an index in order and stop after the page."""
    found = []
    if plan.get("Node Type") in ("Sort", "Incremental Sort"):
        found.extend(_unlimited_scans(plan))
    for child in plan.get("Plans", []):
        found.extend(_sorted_views(child))
    return found


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
    captured: list[tuple[str, Any, bool]] = []
    # Whether the statements run now read pages (which must never sort a whole view).
    paging = [False]

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH", "(")):
            captured.append((statement, parameters, paging[0]))

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
                paging[0] = True
                page = await views.page(conn, scene.app_id, view, now, PageRequest(5))
                if page.next_before:
                    await views.page(
                        conn, scene.app_id, view, now, PageRequest(5, "around", page.next_before)
                    )
                await views.page(conn, scene.app_id, view, now, v1=(None, 5))
                paging[0] = False
                await counts(conn, scene.app_id, view, now)
        vendor = [
            InboxFilter(now), InboxFilter(now, closed=False, delayed=False),
            InboxFilter(now, assigned=a, include_not_assigned=True),
            InboxFilter(now, assigned=0, include_not_assigned=True, channel=ch),
            InboxFilter(now, tags=(TAGS[0], TAGS[1]), include_no_tags=True, answered=True),
            InboxFilter(now, include_no_tags=True, include_not_assigned=True),
            InboxFilter(now, include_no_tags=True, closed=False, channel=ch),
            InboxFilter(now, delayed=True, assistant_type="lead_bot", include_not_assigned=True),
        ]  # fmt: skip
        paging[0] = True
        for f in vendor:
            async with snapshot(db) as conn:
                page = await views.vendor_page(conn, scene.app_id, f, PageRequest(5))
                if page.next_before:
                    await views.vendor_page(
                        conn, scene.app_id, f, PageRequest(5, "after", page.next_before)
                    )
                await views.vendor_page(conn, scene.app_id, f, v1=(None, 5))
        paging[0] = False
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
        pages = 0
        for statement, parameters, is_page in captured:
            # For a page, sorting is made costly too: on these few rows a sort would be
            # cheaper, and the question is whether an ordered index walk exists at all.
            await conn.execute(text(f"SET LOCAL enable_sort = {'off' if is_page else 'on'}"))
            result = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
            plan = result.scalar_one()
            plan = json.loads(plan) if isinstance(plan, str) else plan
            assert _scans(plan[0]["Plan"]) == [], statement
            if is_page:
                pages += 1
                assert _sorted_views(plan[0]["Plan"]) == [], statement
        assert pages > 40
