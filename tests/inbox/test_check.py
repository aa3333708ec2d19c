"""`check` verifies the inbox's derived tables against the conversations, and `fix` rebuilds.

After a random history the check finds nothing; each table corrupted by hand is reported
as exactly that drift, repaired by `fix`, and the counts then equal the brute-force
answer. Snoozes that ended, sweeps of the snoozed cells and writes made while the check
reads are not drift.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, text, update

from tests.inbox.scene import TAGS, Scene, in_inbox, reference_counts
from tests.test_cli import invoke, with_db
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.model import Author, ConversationState
from threadline.core.recompute import Drift
from threadline.db.engine import Database
from threadline.db.schema import conversation_tags, conversations
from threadline.inbox import maintain
from threadline.inbox.check import COUNTS, WORDS, IndexCheck, IndexDrift
from threadline.inbox.check import TAGS as TAG_TABLE
from threadline.inbox.counts import counts
from threadline.inbox.service import snapshot
from threadline.inbox.views import View

CELL_KEY = "app_id, kind, tag, closed, channel_id, assignee_id, important"
CELL_IS = " AND ".join(f"{name} = :{name}" for name in CELL_KEY.split(", "))


async def busy_scene(db: Database, seed: int = 21) -> Scene:
    scene = Scene(db, random.Random(seed))
    await scene.setup(conversations=15)
    for _ in range(150):
        await scene.step()
    # At least one conversation in the inbox, tagged and snoozed for a while yet.
    target = (await inbox_states(scene))[0]
    events = (ev.Reopen(scene.admin()), ev.AddTag(TAGS[0], scene.admin(), strict=False))
    delay = ev.Delay(scene.now + timedelta(hours=2), scene.admin())
    await service.perform(db, scene.app_id, target.id, *events, delay, now=scene.tick())
    return scene


async def inbox_states(scene: Scene) -> list[ConversationState]:
    return sorted((s for s in await scene.states() if in_inbox(s)), key=lambda s: s.id)


async def assert_counts_exact(scene: Scene) -> None:
    """Every kind of view's counts, now and after the snoozes end, as plain Python has them."""
    states = await scene.states()
    views = (
        View(None),
        View("open"),
        View("delayed", assignee=0),
        View("closed", tag=TAGS[0]),
        View("delayed", tag=TAGS[0]),
        View(None, channel=scene.channels[0], assignee=scene.admins[0]),
    )
    for at in (scene.now, scene.now + timedelta(hours=3)):
        for view in views:
            async with snapshot(scene.db) as conn:
                found = await counts(conn, scene.app_id, view, at)
            assert found == reference_counts(states, view, at), (view, at)


async def execute(db: Database, sql: str, **params: Any) -> list[Any]:
    async with db.write() as conn:
        result = await conn.execute(text(sql), params)
        return list(result) if result.returns_rows else []


async def one_row(db: Database, sql: str, **params: Any) -> Any:
    rows = await execute(db, sql, **params)
    assert rows, sql
    return rows[0]


# Each corruption changes one table by hand and answers the one drift the check must find.
Corruption = Callable[[Scene], Awaitable[IndexDrift]]


async def cell_of_kind(scene: Scene, kind: int) -> IndexDrift:
    """Two more in one shard row of the app's fullest cell of `kind`."""
    row = await one_row(
        scene.db,
        f"SELECT {CELL_KEY}, shard FROM inbox_counts WHERE app_id = :app AND kind = :kind "
        "AND n > 0 ORDER BY n DESC LIMIT 1",
        app=scene.app_id,
        kind=kind,
    )
    key = {name: getattr(row, name) for name in CELL_KEY.split(", ")}
    (total,) = await one_row(scene.db, f"SELECT SUM(n) FROM inbox_counts WHERE {CELL_IS}", **key)
    update_row = f"UPDATE inbox_counts SET n = n + 2 WHERE {CELL_IS} AND shard = :shard"
    await execute(scene.db, update_row, **key, shard=row.shard)
    cell = (kind, row.tag, bool(row.closed), row.channel_id, row.assignee_id, bool(row.important))
    return IndexDrift(COUNTS, (scene.app_id, cell), int(total) + 2, int(total))


async def open_cell(scene: Scene) -> IndexDrift:
    return await cell_of_kind(scene, maintain.KIND_ALL)


async def snoozed_cell(scene: Scene) -> IndexDrift:
    return await cell_of_kind(scene, maintain.KIND_SNOOZED)


async def tag_cube_cell(scene: Scene) -> IndexDrift:
    return await cell_of_kind(scene, maintain.KIND_TAG_CUBE)


async def tagged(scene: Scene) -> ConversationState:
    """The snoozed, tagged conversation of `busy_scene`."""
    return next(s for s in await inbox_states(scene) if TAGS[0] in s.tags and s.delayed_until)


async def deleted_tag_row(scene: Scene) -> IndexDrift:
    state = await tagged(scene)
    await execute(
        scene.db,
        "DELETE FROM conversation_tags WHERE conversation_id = :id AND tag = :tag",
        id=state.id,
        tag=TAGS[0],
    )
    row = next(r for r in maintain.tag_rows(state) if r["tag"] == TAGS[0])
    values = {k: v for k, v in row.items() if k not in ("conversation_id", "tag")}
    return IndexDrift(TAG_TABLE, (state.id, TAGS[0]), None, values)


async def bogus_tag_row(scene: Scene) -> IndexDrift:
    """A row for a tag the snoozed conversation does not have."""
    state = await tagged(scene)
    tag = next(t for t in TAGS if t not in state.tags)
    values = {**maintain.tag_row_values(state), "app_id": state.app_id}
    async with scene.db.write() as conn:
        await conn.execute(
            insert(conversation_tags), [{**values, "conversation_id": state.id, "tag": tag}]
        )
    return IndexDrift(TAG_TABLE, (state.id, tag), values, None)


async def changed_tag_row(scene: Scene) -> IndexDrift:
    state = await tagged(scene)
    await execute(
        scene.db,
        "UPDATE conversation_tags SET closed = NOT closed WHERE conversation_id = :id "
        "AND tag = :tag",
        id=state.id,
        tag=TAGS[0],
    )
    return IndexDrift(
        TAG_TABLE, (state.id, TAGS[0]), {"closed": not state.closed}, {"closed": state.closed}
    )


async def deleted_word(scene: Scene) -> IndexDrift:
    (word,) = await one_row(scene.db, "SELECT word FROM search_words WHERE word = 'invoice'")
    await execute(scene.db, "DELETE FROM search_words WHERE word = :word", word=word)
    return IndexDrift(WORDS, (word,), False, True)


async def extra_word(scene: Scene) -> IndexDrift:
    await execute(scene.db, "INSERT INTO search_words (word) VALUES ('quuxwobble')")
    return IndexDrift(WORDS, ("quuxwobble",), True, False)


CORRUPTIONS: dict[str, Corruption] = {
    "open cell": open_cell,
    "snoozed cell": snoozed_cell,
    "tag cube cell": tag_cube_cell,
    "deleted tag row": deleted_tag_row,
    "bogus tag row": bogus_tag_row,
    "changed tag row": changed_tag_row,
    "deleted word": deleted_word,
    "extra word": extra_word,
}


def index_drifts(found: Sequence[Drift | IndexDrift]) -> list[IndexDrift]:
    assert all(isinstance(d, IndexDrift) for d in found), found
    return [d for d in found if isinstance(d, IndexDrift)]


async def test_a_random_history_has_no_drift(db: Database) -> None:
    scene = await busy_scene(db)
    assert await service.check(db) == []
    await assert_counts_exact(scene)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
async def test_each_corruption_is_found_and_fixed(db: Database, corruption: str) -> None:
    if db.is_sqlite and "word" in corruption:
        pytest.skip("the word list is PostgreSQL's")
    scene = await busy_scene(db)
    expected = await CORRUPTIONS[corruption](scene)

    assert index_drifts(await service.check(db)) == [expected]
    assert index_drifts(await service.check(db, fix=True)) == [expected]
    assert await service.check(db) == []
    await assert_counts_exact(scene)
    # The engine goes on from the rebuilt rows.
    for _ in range(30):
        await scene.step()
    assert await service.check(db) == []
    await assert_counts_exact(scene)


async def test_a_conversation_and_its_tag_rows_both_drifted_are_fixed(db: Database) -> None:
    """The conversation's tags are repaired from its parts after its rows were rebuilt."""
    scene = await busy_scene(db)
    state = await tagged(scene)
    await execute(db, "DELETE FROM conversation_tags WHERE conversation_id = :id", id=state.id)
    async with db.write() as conn:
        tags = ["not-in-the-parts"]
        await conn.execute(
            update(conversations).where(conversations.c.id == state.id).values(tags=tags)
        )
    found = await service.check(db, fix=True)
    assert {d.field for d in found if isinstance(d, Drift)} == {"tags"}
    assert {d.table for d in found if isinstance(d, IndexDrift)} == {COUNTS, TAG_TABLE}
    assert await service.check(db) == []
    await assert_counts_exact(scene)


async def test_an_ended_snooze_is_not_drift(db: Database) -> None:
    scene = Scene(db, random.Random(4))
    await scene.setup(conversations=5)
    target = (await inbox_states(scene))[0]
    until = scene.now + timedelta(minutes=10)
    tag = ev.AddTag(TAGS[1], scene.admin(), strict=False)
    delay = ev.Delay(until, scene.admin())
    events = (ev.Reopen(scene.admin()), tag, delay)
    await service.perform(db, scene.app_id, target.id, *events, now=scene.tick())
    scene.now = until + timedelta(hours=1)
    # Still in the snoozed cells (the watermark is before its end): readers correct for it.
    assert await service.check(db) == []
    await assert_counts_exact(scene)
    # The watermark behind its end, past it, and ahead of "now".
    for mark in (until - timedelta(minutes=1), until, scene.now + timedelta(days=1)):
        await maintain.sweep(db, scene.app_id, mark)
        assert await service.check(db) == []
        await assert_counts_exact(scene)


async def test_writes_while_the_check_reads_are_not_drift(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that commits after the check read a conversation, before it read the tag
    rows and the cells, must not be seen by those reads either (one snapshot)."""
    scene = await busy_scene(db)
    add = IndexCheck.add
    written: list[int] = []

    async def add_after_a_write(self: IndexCheck, states: Sequence[ConversationState]) -> None:
        if not written:
            target = next(
                s
                for s in states
                if s.app_id == scene.app_id
                and in_inbox(s)
                and not s.closed
                and TAGS[2] not in s.tags
            )
            change = (ev.AddTag(TAGS[2], Author.system(), strict=False), ev.Close(scene.admin()))
            await service.perform(db, target.app_id, target.id, *change, now=scene.tick())
            written.append(target.id)
        await add(self, states)

    monkeypatch.setattr(IndexCheck, "add", add_after_a_write)
    assert await service.check(db) == []
    assert written
    monkeypatch.undo()
    assert await service.check(db) == []


def test_the_command_reports_and_fixes_index_drift(db_url: str) -> None:
    async def corrupt(db: Database) -> list[IndexDrift]:
        scene = await busy_scene(db, seed=5)
        return [await open_cell(scene), await deleted_tag_row(scene)]

    cell, row = with_db(db_url, corrupt)
    result = invoke("check", "--database-url", db_url)
    assert result.exit_code == 1
    assert cell.describe() in result.stdout
    assert row.describe() in result.stdout
    assert "check: 1 drifted count cells, 1 drifted tag rows; run" in result.stderr
    assert "Traceback" not in result.output

    result = invoke("check", "--fix", "--database-url", db_url)
    assert result.exit_code == 0, result.output
    assert "1 drifted count cells, 1 drifted tag rows, all repaired" in result.stdout

    result = invoke("check", "--database-url", db_url)
    assert result.exit_code == 0, result.output
    assert "no drift" in result.stdout


def test_drift_lines_say_what_is_wrong() -> None:
    at = datetime.fromisoformat("2026-03-02T09:00:00+00:00")
    lines = [
        IndexDrift(COUNTS, (3, (5, "", False, 2, 0, True)), 4, 3).describe(),
        IndexDrift(TAG_TABLE, (7, "vip"), None, {"closed": False, "last_update": at}).describe(),
        IndexDrift(TAG_TABLE, (7, "bug"), {"closed": True}, {"closed": False}).describe(),
        IndexDrift(WORDS, ("invoice",), False, True).describe(),
        IndexDrift(WORDS, ("quux",), True, False).describe(),
    ]
    assert lines == [
        "inbox_counts app 3 kind=5 tag='' closed=False channel_id=2 assignee_id=0 important=True:"
        " stored=4 computed=3",
        "conversation_tags conversation 7 tag 'vip': stored=no row "
        "computed={closed=False, last_update=2026-03-02T09:00:00+00:00}",
        "conversation_tags conversation 7 tag 'bug': stored={closed=True} computed={closed=False}",
        "search_words 'invoice': missing (a part body has it)",
        "search_words 'quux': listed, but no part body has it",
    ]
