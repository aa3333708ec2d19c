"""Keeping the tag index table and the count cells in step with every conversation write.

`maintain(conn, before, after)` runs inside the write transaction, after the conversation
row is saved, with the conversation's row lock held. It compares the two states and writes
only what changed: nothing for most writes (a reply to an untagged conversation that does
not change its status, assignee, channel or importance).

Counts are kept per *cell*. Every inbox conversation adds one to: kind 0 by (closed,
channel, assignee, important); kind 3 by (closed, assignee, important); kind 4 by (closed,
channel, important); and per tag, kind 1 by closed, kind 2 by (closed, channel, assignee,
important). Kinds 3 and 4 are there for readers: every per-assignee and per-channel count
reads a few hundred cells, whatever the number of conversations.

Snoozes end with time, not with a write, so the snoozed are counted against a *watermark*
`S` per app (the kind 9 row; its `n` is a time in microseconds): a conversation not closed
whose `delayed_until` is after `S` also adds one to kind 5 by (channel, assignee,
important), and per tag to kind 6 and kind 7 by (channel, assignee, important). Readers
correct these cells by the conversations whose snooze ends between `S` and "now" (an index
range, see `counts`); `sweep` moves `S` up to a time and takes the snoozes that ended by
then out of the cells, which keeps that range short. A writer that changes snoozed cells
holds the watermark row shared (PostgreSQL), so a sweep never crosses it.

On PostgreSQL a cell is spread over `PG_SHARDS` rows (the conversation's id modulo the
number of shards), so that the writes of one busy app do not all queue on the row lock of
its "open, unassigned" cell. Every transaction updates its cells in one sorted order, so
two writers never wait on each other's cells crosswise (no deadlock).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.core.model import ConversationState
from threadline.db.direct import DirectSelect, DirectStatement, DriverConnection
from threadline.db.engine import Database
from threadline.db.schema import IN_INBOX, TAG_IN_INBOX
from threadline.db.schema import conversation_tags as tags_t
from threadline.db.schema import conversations as conv_t
from threadline.db.schema import inbox_counts as counts_t

# Enough to spread one app's hottest cell over several row locks, few enough that a
# reader sums a handful of rows per cell.
PG_SHARDS = 4

KIND_ALL = 0
KIND_TAG = 1
KIND_TAG_CUBE = 2
KIND_BY_ASSIGNEE = 3
KIND_BY_CHANNEL = 4
KIND_SNOOZED = 5
KIND_SNOOZED_TAG = 6
KIND_SNOOZED_TAG_CUBE = 7
KIND_WATERMARK = 9
# No watermark yet: every snooze, ended or not, is in the snoozed cells.
NO_WATERMARK: int | None = None

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


def to_micros(moment: datetime) -> int:
    """A time as the watermark stores it: microseconds since the Unix epoch."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def watermark_time(micros: int | None) -> datetime | None:
    """The watermark as a time; None when there is none yet."""
    return None if micros is None or micros <= _BEFORE_ALL else from_micros(micros)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The watermark of an app that has none yet: before every time (see `cells`).
_BEFORE_ALL = -(2**62)


def snoozable(state: ConversationState | None) -> bool:
    """Counted in the snoozed cells when its snooze ends after the watermark."""
    return (
        state is not None
        and in_inbox(state)
        and not state.closed
        and state.delayed_until is not None
    )


def snoozed_past(state: ConversationState, watermark: int | None) -> bool:
    assert state.delayed_until is not None
    return watermark is None or to_micros(state.delayed_until) > watermark


def cells(state: ConversationState | None, watermark: int | None = NO_WATERMARK) -> list[Cell]:
    """The count cells a conversation in this state adds one to, given the app's
    watermark (microseconds; None: none yet)."""
    if state is None or not in_inbox(state):
        return []
    channel, assignee = state.channel_id or 0, state.assignee_id or 0
    closed, important = state.closed, state.important
    found: list[Cell] = [
        (KIND_ALL, "", closed, channel, assignee, important),
        (KIND_BY_ASSIGNEE, "", closed, 0, assignee, important),
        (KIND_BY_CHANNEL, "", closed, channel, 0, important),
    ]
    snoozed = snoozable(state) and snoozed_past(state, watermark)
    if snoozed:
        found.append((KIND_SNOOZED, "", False, channel, assignee, important))
    for tag in state.tags:
        found.append((KIND_TAG, tag, closed, 0, 0, False))
        found.append((KIND_TAG_CUBE, tag, closed, channel, assignee, important))
        if snoozed:
            found.append((KIND_SNOOZED_TAG, tag, False, 0, 0, False))
            found.append((KIND_SNOOZED_TAG_CUBE, tag, False, channel, assignee, important))
    return found


def shard_of(conversation_id: int, dialect: str) -> int:
    return conversation_id % PG_SHARDS if dialect == "postgresql" else 0


def deltas(
    before: ConversationState | None,
    after: ConversationState | None,
    watermark: int | None = NO_WATERMARK,
) -> list[Any]:
    """The (cell, change) pairs a write makes, in the one order every writer uses."""
    change: Counter[Cell] = Counter()
    for cell in cells(before, watermark):
        change[cell] -= 1
    for cell in cells(after, watermark):
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
    ),
    one_conversation=True,
)
_UPDATE_TAGS = DirectStatement(
    update(tags_t).where(tags_t.c.conversation_id == bindparam("b_conversation_id")),
    one_conversation=True,
)


_c = counts_t.c
_READ_WATERMARK = DirectStatement(
    select(_c.n)
    .where(_c.app_id == bindparam("b_app_id"), _c.kind == KIND_WATERMARK)
    .with_for_update(read=True)
)


async def read_watermark(driver: DriverConnection, app_id: int) -> int | None:
    """The app's watermark, held shared until the transaction ends (PostgreSQL)."""
    rows = await driver.fetch(_READ_WATERMARK, {"b_app_id": app_id})
    return int(rows[0][0]) if rows else None


def tag_row_values(state: ConversationState) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(state, name) for name in VIEW_COLUMNS}
    values["inbox"] = in_inbox(state)
    return values


def tag_rows(state: ConversationState) -> list[dict[str, Any]]:
    """The `conversation_tags` rows of a conversation in this state: one per tag, in or
    out of the inbox (the `inbox` column says which)."""
    values = tag_row_values(state)
    return [
        {**values, "conversation_id": state.id, "tag": tag, "app_id": state.app_id}
        for tag in state.tags
    ]


async def _sync_tags(
    driver: DriverConnection, before: ConversationState | None, after: ConversationState
) -> None:
    old = before.tags if before is not None else ()
    if not old and not after.tags:
        return
    for tag in old:
        if tag not in after.tags:
            await driver.defer(_DELETE_TAG, {"b_conversation_id": after.id, "b_tag": tag})
    values = tag_row_values(after)
    kept = [t for t in old if t in after.tags]
    if kept and before is not None and tag_row_values(before) != values:
        await driver.defer(_UPDATE_TAGS, {**values, "b_conversation_id": after.id})
    for row in tag_rows(after):
        if row["tag"] not in old:
            await driver.defer(_INSERT_TAG, row)


async def add_to_counts(
    driver: DriverConnection, app_id: int, shard: int, changes: Iterable[Any]
) -> None:
    """Add each (cell, n) of `changes` to the app's count rows of `shard`."""
    summed = driver.batch_sums()
    if summed is not None:  # a write of a batch: the batch adds its writes' changes at once
        for cell, n in changes:
            summed[(app_id, *cell, shard)] += n
        return
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
        await driver.defer(_upsert(dialect, len(chunk)), params)


def _upsert_summed() -> DirectStatement:
    """PostgreSQL: add `a_n[i]` to the cell of key `a_<column>[i]` for every i, one row after
    the other in the order of the arrays (one statement of one shape for any number)."""
    columns = (*_KEY_COLUMNS, "n")
    given = (
        func.unnest(
            *(bindparam(f"a_{c}", type_=postgresql.ARRAY(counts_t.c[c].type)) for c in columns)
        )
        .table_valued(*columns, with_ordinality="position")
        .render_derived(name="given")
    )
    rows = select(*(given.c[c] for c in columns)).order_by(given.c.position)
    statement = postgresql.insert(counts_t).from_select(list(columns), rows)
    statement = statement.on_conflict_do_update(
        index_elements=list(_KEY_COLUMNS), set_={"n": counts_t.c.n + statement.excluded.n}
    )
    return DirectStatement(statement)


_UPSERT_SUMMED = _upsert_summed()


async def add_summed_counts(driver: DriverConnection, summed: Counter[tuple[Any, ...]]) -> None:
    """PostgreSQL: the count changes of a batch's writes, summed per (app, cell, shard), in
    one statement that takes the rows in the one order every writer uses (by app, then cell,
    as `deltas` orders one write's, then shard)."""
    rows = sorted((key, n) for key, n in summed.items() if n)
    if not rows:
        return
    params: dict[str, Any] = {
        f"a_{c}": [key[i] for key, _ in rows] for i, c in enumerate(_KEY_COLUMNS)
    }
    params["a_n"] = [n for _, n in rows]
    await driver.defer(_UPSERT_SUMMED, params)


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
    watermark = NO_WATERMARK
    if snoozable(before) or snoozable(after):
        watermark = await read_watermark(driver, after.app_id)
    changes = deltas(before, after, watermark)
    if changes:
        shard = shard_of(after.id, driver.dialect.name)
        await add_to_counts(driver, after.app_id, shard, changes)


_WATERMARK_KEY = {
    "kind": KIND_WATERMARK, "tag": "", "closed": False, "channel_id": 0, "assignee_id": 0,
    "important": False, "shard": 0,
}  # fmt: skip


@cache
def _create_watermark(dialect: str) -> DirectStatement:
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = make(counts_t).values(app_id=bindparam("b_app_id"), n=_BEFORE_ALL, **_WATERMARK_KEY)
    return DirectStatement(statement.on_conflict_do_nothing())


_LOCK_WATERMARK = DirectStatement(
    select(_c.n)
    .where(_c.app_id == bindparam("b_app_id"), _c.kind == KIND_WATERMARK)
    .with_for_update()
)
_SET_WATERMARK = DirectStatement(
    update(counts_t)
    .where(_c.app_id == bindparam("b_app_id"), _c.kind == KIND_WATERMARK)
    .values(n=bindparam("b_n"))
)


def _ended(columns: Any, where: Any, group: Sequence[Any]) -> DirectSelect:
    """Snoozes of one app that end in (`b_after`, `b_until`], counted by `group`."""
    c = columns
    query = (
        select(*group, func.count().label("n"))
        .where(
            where,
            c.app_id == bindparam("b_app_id"),
            c.closed.is_(False),
            c.delayed_until.is_not(None),
            c.delayed_until > bindparam("b_after", type_=c.delayed_until.type),
            c.delayed_until <= bindparam("b_until", type_=c.delayed_until.type),
        )
        .group_by(*group)
    )
    return DirectSelect(query)


_t = tags_t.c
_cv = conv_t.c
_ENDED = _ended(_cv, IN_INBOX, (_cv.channel_id, _cv.assignee_id, _cv.important))
_ENDED_TAGS = _ended(_t, TAG_IN_INBOX, (_t.tag, _t.channel_id, _t.assignee_id, _t.important))


async def sweep(db: Database, app_id: int, until: datetime) -> int:
    """Move the app's watermark up to `until`: the snoozes that end by then leave the
    snoozed cells. Returns how many conversations left them (0 if the watermark was at or
    past `until` already). Counts read the same before and after."""
    async with db.write() as conn:
        driver = DriverConnection(conn)
        params = {"b_app_id": app_id}
        await driver.fetch(_create_watermark(driver.dialect.name), params)
        old = int((await driver.fetch(_LOCK_WATERMARK, params))[0][0])
        new = to_micros(until)
        if new <= old:
            return 0
        # Before any time the database stores: every snooze up to `until`.
        after = from_micros(max(old, to_micros(datetime(1, 1, 2, tzinfo=UTC))))
        span = {**params, "b_after": after, "b_until": until}
        change: Counter[Cell] = Counter()
        moved = 0
        for row in await driver.select(_ENDED, span):
            key = (
                int(row["channel_id"] or 0),
                int(row["assignee_id"] or 0),
                bool(row["important"]),
            )
            change[(KIND_SNOOZED, "", False, *key)] -= int(row["n"])
            moved += int(row["n"])
        for row in await driver.select(_ENDED_TAGS, span):
            key = (
                int(row["channel_id"] or 0),
                int(row["assignee_id"] or 0),
                bool(row["important"]),
            )
            change[(KIND_SNOOZED_TAG, str(row["tag"]), False, 0, 0, False)] -= int(row["n"])
            change[(KIND_SNOOZED_TAG_CUBE, str(row["tag"]), False, *key)] -= int(row["n"])
        await add_to_counts(driver, app_id, 0, sorted((c, n) for c, n in change.items() if n))
        await driver.fetch(_SET_WATERMARK, {**params, "b_n": new})
    return moved
