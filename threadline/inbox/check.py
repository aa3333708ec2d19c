"""`threadline check` for the inbox's derived tables: are they what the conversations imply?

Run beside the conversations' own check, batch by batch over the same conversations and in
the same read snapshot (so concurrent writes cannot show up as drift):

- `conversation_tags`: each conversation's rows (`maintain.tag_rows`), compared with the
  stored rows of the batch's id range;
- `inbox_counts`: each conversation's cells (`maintain.cells`), counted against its app's
  watermark as stored in the snapshot, summed per app in memory (cells are few) and
  compared with the stored cells summed over their shards. The snoozed cells hold every
  snooze that ends after the watermark, ended by now or not (readers correct for those
  that ended since, see `counts`): a snooze that has ended is not drift;
- `search_words` (PostgreSQL): the words of every part body against the list, in one scan.

`repair` rebuilds what drifted, beside concurrent writers: a conversation's tag rows under
its lock; a count cell by adding the difference found, which stays right whatever was
written since (every write and sweep changes a cell and what it should hold alike); the
word list under its table lock, each word checked again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.conversations.repository import ConversationRepository
from threadline.core.model import ConversationState
from threadline.db.direct import DriverConnection
from threadline.db.engine import Database
from threadline.db.schema import conversation_tags as tags_t
from threadline.db.schema import inbox_counts as counts_t
from threadline.inbox import words
from threadline.inbox.maintain import (
    CELL_COLUMNS,
    KIND_WATERMARK,
    Cell,
    add_to_counts,
    cells,
    tag_rows,
)

COUNTS = counts_t.name
TAGS = tags_t.name
WORDS = "search_words"
# How the summary names each table's drifted rows, in the order it lists them.
NOUNS = {COUNTS: "count cells", TAGS: "tag rows", WORDS: "listed words"}


@dataclass(frozen=True, slots=True)
class IndexDrift:
    """A row of a derived inbox table that is not what the conversations imply.

    `key`: (app id, cell) in `inbox_counts`; (conversation id, tag) in
    `conversation_tags`; (word,) in `search_words`. `stored` and `computed`: the cell's
    count; the row's columns that differ (None: no such row); whether the word is listed,
    and whether a part body has it.
    """

    table: str
    key: tuple[Any, ...]
    stored: Any
    computed: Any

    def describe(self) -> str:
        if self.table == COUNTS:
            app_id, cell = self.key
            where = " ".join(
                f"{name}={value!r}" for name, value in zip(CELL_COLUMNS, cell, strict=True)
            )
            return f"{COUNTS} app {app_id} {where}: stored={self.stored} computed={self.computed}"
        if self.table == TAGS:
            conversation_id, tag = self.key
            return (
                f"{TAGS} conversation {conversation_id} tag {tag!r}: "
                f"stored={_row(self.stored)} computed={_row(self.computed)}"
            )
        (word,) = self.key
        if self.computed:
            return f"{WORDS} {word!r}: missing (a part body has it)"
        return f"{WORDS} {word!r}: listed, but no part body has it"


# The columns a tag row copies from its conversation (the key columns are compared as keys).
_TAG_VALUES = tuple(c.name for c in tags_t.c if c.name not in ("conversation_id", "tag"))


def _row(values: dict[str, Any] | None) -> str:
    """Tag row columns in table order, times as ISO 8601."""
    if values is None:
        return "no row"
    shown = (f"{name}={_value(values[name])}" for name in _TAG_VALUES if name in values)
    return "{" + ", ".join(shown) + "}"


def _value(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else repr(value)


_tc = tags_t.c
_cc = counts_t.c
_CELL_KEY = (_cc.app_id, *(_cc[name] for name in CELL_COLUMNS))
_STORED_CELLS = (
    select(*_CELL_KEY, func.sum(_cc.n).label("n"))
    .where(_cc.kind != KIND_WATERMARK)
    .group_by(*_CELL_KEY)
)
_WATERMARKS = select(_cc.app_id, _cc.n).where(_cc.kind == KIND_WATERMARK)


class IndexCheck:
    """Compares the derived tables with the conversations, fed one batch at a time (in id
    order) inside one read snapshot: `begin`, `add` each batch, then `end`."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.found: list[IndexDrift] = []
        self._watermarks: dict[int, int] = {}
        self._expected_cells: Counter[tuple[int, Cell]] = Counter()
        self._checked_up_to = 0  # conversation id: tag rows up to it are compared

    async def begin(self) -> None:
        rows = await self.conn.execute(_WATERMARKS)
        self._watermarks = {int(row.app_id): int(row.n) for row in rows}

    async def add(self, states: Sequence[ConversationState]) -> None:
        """One batch of conversations, after those of every earlier batch."""
        if not states:
            return
        expected = self._expected_cells
        for state in states:
            for cell in cells(state, self._watermarks.get(state.app_id)):
                expected[(state.app_id, cell)] += 1
        rows = [row for state in states if state.tags for row in tag_rows(state)]
        await self._compare_tags(rows, up_to=states[-1].id)

    async def end(self) -> list[IndexDrift]:
        """Everything found, once every conversation was added."""
        await self._compare_tags([], up_to=None)
        await self._compare_cells()
        if self.conn.dialect.name == "postgresql":
            listed = await words.drift(self.conn)
            self.found.extend(IndexDrift(WORDS, (w,), False, True) for w in listed.missing)
            self.found.extend(IndexDrift(WORDS, (w,), True, False) for w in listed.extra)
        return self.found

    async def _compare_tags(self, rows: list[dict[str, Any]], up_to: int | None) -> None:
        """The stored tag rows of ids in (last compared, `up_to`] (None: every id after it)
        against `rows`, the rows of the conversations of that range."""
        query = select(tags_t).where(_tc.conversation_id > self._checked_up_to)
        if up_to is not None:
            query = query.where(_tc.conversation_id <= up_to)
        stored: dict[tuple[int, str], dict[str, Any]] = {
            (r.conversation_id, r.tag): dict(r._mapping) for r in await self.conn.execute(query)
        }
        expected = {(r["conversation_id"], r["tag"]): r for r in rows}
        for key in sorted(stored.keys() | expected.keys()):
            have, want = stored.get(key), expected.get(key)
            if have is None or want is None:
                differ = list(_TAG_VALUES)
            else:
                differ = [c for c in _TAG_VALUES if have[c] != want[c]]
            if differ:
                self.found.append(IndexDrift(TAGS, key, _pick(have, differ), _pick(want, differ)))
        if up_to is not None:
            self._checked_up_to = up_to

    async def _compare_cells(self) -> None:
        stored: Counter[tuple[int, Cell]] = Counter()
        for row in await self.conn.execute(_STORED_CELLS):
            cell: Cell = (
                int(row.kind),
                str(row.tag),
                bool(row.closed),
                int(row.channel_id),
                int(row.assignee_id),
                bool(row.important),
            )
            stored[(int(row.app_id), cell)] += int(row.n)
        expected = self._expected_cells
        for key in sorted(stored.keys() | expected.keys()):
            if stored[key] != expected[key]:
                self.found.append(IndexDrift(COUNTS, key, stored[key], expected[key]))


def _pick(row: Mapping[str, Any] | None, columns: Sequence[str]) -> dict[str, Any] | None:
    return None if row is None else {c: row[c] for c in columns}


async def repair(db: Database, found: Sequence[IndexDrift]) -> None:
    """Rebuild what `IndexCheck` found drifted: tag rows, then cells, then listed words."""
    for conversation_id in sorted({d.key[0] for d in found if d.table == TAGS}):
        await _rebuild_tags(db, conversation_id)
    changes: dict[int, list[tuple[Cell, int]]] = {}
    for drift in found:
        if drift.table == COUNTS:
            app_id, cell = drift.key
            changes.setdefault(app_id, []).append((cell, drift.computed - drift.stored))
    for app_id, app_changes in sorted(changes.items()):
        async with db.write() as conn:
            # Into shard 0, in the one cell order every writer uses.
            await add_to_counts(DriverConnection(conn), app_id, 0, sorted(app_changes))
    missing = [d.key[0] for d in found if d.table == WORDS and d.computed]
    extra = [d.key[0] for d in found if d.table == WORDS and not d.computed]
    if missing or extra:
        async with db.write() as conn:
            await words.restore(conn, missing)
            await words.forget(conn, extra)


async def _rebuild_tags(db: Database, conversation_id: int) -> None:
    """The conversation's tag rows, as its current state has them (none if it is gone)."""
    async with db.write() as conn:
        repo = ConversationRepository(conn)
        state = await repo.get_any(conversation_id)
        if state is not None:
            state = await repo.lock(state.app_id, conversation_id)
        await conn.execute(delete(tags_t).where(_tc.conversation_id == conversation_id))
        rows = tag_rows(state) if state is not None else []
        if rows:
            await conn.execute(insert(tags_t), rows)
