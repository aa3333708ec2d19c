"""The bulk demo: every state, no drift, counts and tag rows exact, the schema intact."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from tests.inbox.scene import reference_counts
from threadline import demo, demo_bulk
from threadline.apps import service as apps
from threadline.conversations import service
from threadline.conversations.repository import state_from_row
from threadline.core import events as ev
from threadline.core.model import Author
from threadline.db.engine import Database
from threadline.db.schema import conversation_tags, conversations
from threadline.inbox import words
from threadline.inbox.counts import counts
from threadline.inbox.service import snapshot
from threadline.inbox.views import View

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


async def _schema(db: Database) -> set[str]:
    """Every index and constraint definition of the tables a bulk load fills."""
    if db.is_sqlite:
        query = "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
    else:
        query = (
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index UNION ALL "
            "SELECT conrelid::regclass::text || pg_get_constraintdef(oid) FROM pg_constraint"
        )
    async with db.read() as conn:
        return {str(r[0]) for r in await conn.execute(text(query))}


async def _check_word_list(db: Database) -> None:
    """PostgreSQL: the word list holds exactly the words of the bodies, its trigger is on."""
    if db.is_sqlite:
        return
    async with db.read() as conn:
        listed = {r[0] for r in await conn.execute(text("SELECT word FROM search_words"))}
        assert listed == {r[0] for r in await conn.execute(text(words.WORDS_OF_BODIES))}
        assert len(listed) > 1000
        enabled = await conn.execute(
            text("SELECT tgenabled::text FROM pg_trigger WHERE tgname = 'search_words_add'")
        )
        assert enabled.scalar_one() == "O"


async def _check_demo(db: Database, app_id: int, expected: int) -> None:
    assert await service.check(db) == []
    await _check_word_list(db)
    async with db.read() as conn:
        rows = await conn.execute(select(conversations).where(conversations.c.app_id == app_id))
        states = [state_from_row(r) for r in rows]
        tag_rows = Counter(
            (r.conversation_id, r.tag) for r in await conn.execute(select(conversation_tags))
        )
    assert len(states) == expected
    assert tag_rows == Counter((s.id, t) for s in states for t in s.tags)
    assert len({s.channel_id for s in states}) > 5
    assert len({s.assignee_id for s in states}) > 10
    assert len({t for s in states for t in s.tags}) > 10
    assert {s.closed for s in states} == {True, False}
    assert any(s.removed for s in states)
    assert any(s.delayed_until and s.delayed_until > NOW for s in states)
    for view in (View(None), View("open"), View("delayed", assignee=0), View("closed", tag="vip")):
        async with snapshot(db) as conn:
            found = await counts(conn, app_id, view, NOW)
        assert found == reference_counts(states, view, NOW), view


async def test_bulk_demo(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_bulk, "BATCH", 150)
    before = await _schema(db)
    result = await demo.fill(db, conversations=400, seed=5, now=NOW, bulk=True)
    assert result.conversations == 400
    assert set(result.scenarios) == {demo.scenario_name(s) for s, _ in demo.SCENARIOS}
    assert await _schema(db) == before
    await _check_demo(db, result.app_id, 400)
    # The engine goes on from there: new ids do not collide with the loaded ones.
    user = await apps.create_user(db, result.app_id, site_user_id="after-the-demo")
    outcome = await service.start_by_user(db, result.app_id, user, ev.UserReply(body="Hi"))
    tag = ev.AddTag("vip", by=Author.system())
    await service.perform(db, result.app_id, outcome.state.id, tag)


async def test_bulk_demo_in_worker_processes(
    db_url: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite has one writer: no worker processes")
    monkeypatch.setattr(demo_bulk, "BATCH", 120)
    monkeypatch.setattr(demo_bulk, "PARALLEL_FROM", 0)
    result = await demo.fill(db, conversations=300, seed=9, now=NOW, bulk=True)
    assert result.conversations == 300
    await _check_demo(db, result.app_id, 300)
