"""Keeping the tag index table and the count cells in step with every conversation write.

`maintain(conn, before, after)` runs inside the write transaction, after the conversation
row is saved, with the conversation's row lock held. It compares the two states and writes
only what changed: nothing for most writes (a reply to an untagged conversation that does
not change its status, assignee, channel or importance).

Counts are kept per *cell*: kind 0 counts every inbox conversation once by (closed,
channel, assignee, important); kind 1 counts it once per tag by closed; kind 2 once per tag
by (closed, channel, assignee, important). Snoozing is not a cell dimension: it ends with
time, not with a write, so readers count the snoozed by an index range at read time.

On PostgreSQL a cell is spread over `PG_SHARDS` rows (the conversation's id modulo the
number of shards), so that the writes of one busy app do not all queue on the row lock of
its "open, unassigned" cell. Every transaction updates its cells in one sorted order, so
two writers never wait on each other's cells crosswise (no deadlock).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import cache
from typing import Any

from sqlalchemy import bindparam, delete, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.core.model import ConversationState
from threadline.db.direct import DirectStatement, DriverConnection
from threadline.db.schema import conversation_tags as tags_t
from threadline.db.schema import inbox_counts as counts_t

# Enough to spread one app's hottest cell over several row locks, few enough that a
# reader sums a handful of rows per cell.
PG_SHARDS = 4

KIND_ALL = 0
KIND_TAG = 1
KIND_TAG_CUBE = 2

# (kind, tag, closed, channel_id, assignee_id, important)
Cell = tuple[int, str, bool, int, int, bool]
CELL_COLUMNS = ("kind", "tag", "closed", "channel_id", "assignee_id", "important")
_KEY_COLUMNS = ("app_id", *CELL_COLUMNS, "shard")
# The conversation columns a tag row copies.
VIEW_COLUMNS = (
    "closed",
    "delayed_until",
    "channel_id",
    "assignee_id",
    "important",
    "last_update",
)


def in_inbox(state: ConversationState) -> bool:
    return state.replied and state.removed is None


def cells(state: ConversationState | None) -> list[Cell]:
    """The count cells a conversation in this state adds one to."""
    if state is None or not in_inbox(state):
        return []
    channel, assignee = state.channel_id or 0, state.assignee_id or 0
    found: list[Cell] = [(KIND_ALL, "", state.closed, channel, assignee, state.important)]
    for tag in state.tags:
        found.append((KIND_TAG, tag, state.closed, 0, 0, False))
        found.append((KIND_TAG_CUBE, tag, state.closed, channel, assignee, state.important))
    return found


def shard_of(conversation_id: int, dialect: str) -> int:
    return conversation_id % PG_SHARDS if dialect == "postgresql" else 0


def deltas(before: ConversationState | None, after: ConversationState | None) -> list[Any]:
    """The (cell, change) pairs a write makes, in the one order every writer uses."""
    change: Counter[Cell] = Counter()
    for cell in cells(before):
        change[cell] -= 1
    for cell in cells(after):
        change[cell] += 1
    return sorted((cell, n) for cell, n in change.items() if n)


@cache
def _upsert(dialect: str, rows: int) -> DirectStatement:
    """Add `n` to `rows` cells at once (creating missing ones), in the order given."""
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values: list[dict[str, Any]] = [
        {c: bindparam(f"{c}_{i}") for c in (*_KEY_COLUMNS, "n")} for i in range(rows)
    ]
    statement = make(counts_t).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=list(_KEY_COLUMNS), set_={"n": counts_t.c.n + statement.excluded.n}
    )
    return DirectStatement(statement)


# More cells than this in one write (a conversation with many tags) go in several statements.
_MAX_ROWS_PER_STATEMENT = 16

_INSERT_TAG = DirectStatement(insert(tags_t))
_DELETE_TAG = DirectStatement(
    delete(tags_t).where(
        tags_t.c.conversation_id == bindparam("b_conversation_id"),
        tags_t.c.tag == bindparam("b_tag"),
    )
)
_UPDATE_TAGS = DirectStatement(
    update(tags_t).where(tags_t.c.conversation_id == bindparam("b_conversation_id"))
)


def tag_row_values(state: ConversationState) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(state, name) for name in VIEW_COLUMNS}
    values["inbox"] = in_inbox(state)
    return values


async def _sync_tags(
    driver: DriverConnection, before: ConversationState | None, after: ConversationState
) -> None:
    old = before.tags if before is not None else ()
    if not old and not after.tags:
        return
    for tag in old:
        if tag not in after.tags:
            await driver.fetch(_DELETE_TAG, {"b_conversation_id": after.id, "b_tag": tag})
    values = tag_row_values(after)
    kept = [t for t in old if t in after.tags]
    if kept and before is not None and tag_row_values(before) != values:
        await driver.fetch(_UPDATE_TAGS, {**values, "b_conversation_id": after.id})
    for tag in after.tags:
        if tag not in old:
            row = {**values, "conversation_id": after.id, "tag": tag, "app_id": after.app_id}
            await driver.fetch(_INSERT_TAG, row)


async def add_to_counts(
    driver: DriverConnection, app_id: int, shard: int, changes: Iterable[Any]
) -> None:
    """Add each (cell, n) of `changes` to the app's count rows of `shard`."""
    pending = list(changes)
    dialect = driver.dialect.name
    for start in range(0, len(pending), _MAX_ROWS_PER_STATEMENT):
        chunk = pending[start : start + _MAX_ROWS_PER_STATEMENT]
        params: dict[str, Any] = {}
        for i, (cell, n) in enumerate(chunk):
            params[f"app_id_{i}"] = app_id
            for name, value in zip(CELL_COLUMNS, cell, strict=True):
                params[f"{name}_{i}"] = value
            params[f"shard_{i}"] = shard
            params[f"n_{i}"] = n
        await driver.fetch(_upsert(dialect, len(chunk)), params)


async def maintain(
    conn: AsyncConnection, before: ConversationState | None, after: ConversationState
) -> None:
    """Bring the tag rows and count cells from `before` to `after` (None: a new conversation).

    Precondition: inside the write transaction that saved `after`, holding its row lock.
    """
    untouched = before is not None and not (before.tags or after.tags)
    if untouched and before is not None and not (in_inbox(before) or in_inbox(after)):
        return  # neither counted nor tagged, before or after
    driver = DriverConnection(conn)
    await _sync_tags(driver, before, after)
    changes = deltas(before, after)
    if changes:
        shard = shard_of(after.id, driver.dialect.name)
        await add_to_counts(driver, after.app_id, shard, changes)
