"""All SQL about the event log: appending in the write transaction, reading after a cursor.

Ordering (why a reader never skips an event that commits later)
---------------------------------------------------------------

A cursor is an event id: a reader asks for the events with `id > cursor`, in id order, and
moves its cursor to the last id it got. That is only correct if no event can become visible
later with an id at or below a cursor a reader already holds.

SQLite runs one write transaction at a time (BEGIN IMMEDIATE), so an event's id (an
AUTOINCREMENT rowid, taken inside that transaction) is larger than every id committed
before, and every id a reader saw is committed: nothing can appear behind a cursor.

PostgreSQL runs writes concurrently, and ids taken from a sequence would commit out of
order: a reader could see id 7 while id 6 is still in flight, move past 6 and miss it.
So an event's id is `(its transaction id << 16) + its index in the transaction`
(`pg_current_xact_id()`, 64 bits, never wraps), and readers serve only the ids below the
*horizon*: the oldest transaction id of this database still running (from the snapshot's
in-progress list, matched to this database's backends in `pg_stat_activity`), or, with
none running, the snapshot's next transaction id; shifted left by 16. Every transaction of
this database with a smaller id has ended, so every event below the horizon is either
visible (committed) or will never be (rolled back); transaction ids assigned later are
larger, so no event can ever appear below a horizon once it was computed. The horizon is
read in a statement *before* the one reading the events, so the events statement's
snapshot sees everything the horizon promises. (The cluster-wide
`pg_snapshot_xmin(pg_current_snapshot())` would be simpler, but a long write in any other
database of the server would then hold this database's events back.)

Order within one conversation: every transaction that appends events about a conversation
takes the conversation's row lock (`SELECT ... FOR UPDATE`) as its first statement that
needs a transaction id (or creates the conversation), and PostgreSQL assigns the id only
once that lock is granted (a waiting transaction has none; see tests/test_event_log.py).
So a later writer of the conversation always has a larger transaction id: per conversation,
id order is commit order.

The cost: an event becomes servable once every transaction that started writing before
its own has ended, which is milliseconds unless some unrelated write transaction on the
server stays open. No counter row is shared by the writers of an app, so writes to
different conversations never wait for each other.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orjson import dumps
from sqlalchemy import BigInteger, Text, bindparam, cast, func, insert, literal_column, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.core.eventlog import LogEvent
from threadline.db.direct import DirectSelect, DirectStatement, DriverConnection
from threadline.db.schema import deployment as deployment_t
from threadline.db.schema import events as events_t

# Low bits of a PostgreSQL event id: the event's index within its transaction.
INDEX_BITS = 16
MAX_EVENTS_PER_TRANSACTION = 1 << INDEX_BITS
# Rows per INSERT statement; a change yields one to three events, a batch rarely more.
_ROWS_PER_STATEMENT = 8
# No horizon on SQLite: every committed event is final.
NO_HORIZON = 2**63 - 1

_COLUMNS = ("app_id", "conversation_id", "user_id", "type", "created", "data")
# Bound parameter names per row of a multi-row INSERT: `app_id_0`, `conversation_id_0`, ...
_NAMES = [tuple(f"{c}_{i}" for c in _COLUMNS) for i in range(_ROWS_PER_STATEMENT)]
_INDEX_NAMES = [f"index_{i}" for i in range(_ROWS_PER_STATEMENT)]


@functools.cache
def _append_statement(dialect: str, rows: int) -> DirectStatement:
    """INSERT of `rows` events (on PostgreSQL with their in-transaction indexes bound as
    `index_0`, `index_1`, ...)."""
    values: list[dict[str, Any]] = []
    for i in range(rows):
        row: dict[str, Any] = {
            c: bindparam(name, type_=events_t.c[c].type)
            for c, name in zip(_COLUMNS, _NAMES[i], strict=True)
        }
        # The payload arrives as JSON text (orjson is several times faster than the JSON
        # type's own encoder); the database parses it into the JSON/JSONB column.
        data = bindparam(_NAMES[i][-1], type_=Text())
        row["data"] = cast(data, JSONB) if dialect == "postgresql" else data
        if dialect == "postgresql":
            row["id"] = literal_column(
                f"(pg_current_xact_id()::text::bigint << {INDEX_BITS})", BigInteger
            ) + bindparam(_INDEX_NAMES[i], type_=BigInteger)
        else:
            row["id"] = literal_column("NULL")  # the next AUTOINCREMENT rowid
        values.append(row)
    return DirectStatement(insert(events_t).values(values))


async def append(
    driver: DriverConnection, app_id: int, now: datetime, records: Sequence[LogEvent]
) -> None:
    """Append `records` in the caller's write transaction."""
    dialect = driver.dialect.name
    first = driver.next_event_index(len(records)) if dialect == "postgresql" else 0
    if first + len(records) > MAX_EVENTS_PER_TRANSACTION:
        raise ValueError(f"{first + len(records)} events in one transaction")
    for start in range(0, len(records), _ROWS_PER_STATEMENT):
        chunk = records[start : start + _ROWS_PER_STATEMENT]
        params: dict[str, Any] = {}
        for i, (names, r) in enumerate(zip(_NAMES, chunk, strict=False)):
            values = (app_id, r.conversation_id, r.user_id, r.type, now, dumps(r.data).decode())
            params.update(zip(names, values, strict=True))
            if dialect == "postgresql":
                params[_INDEX_NAMES[i]] = first + start + i
        await driver.defer(_append_statement(dialect, len(chunk)), params)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    app_id: int
    conversation_id: int
    user_id: int
    type: str
    created: datetime
    data: dict[str, Any]


@dataclass(slots=True)
class Batch:
    """Events after a cursor that are final, and where to continue from.

    `position` is the cursor after this batch: the last event's id, or further (up to just
    below the horizon) when every final event after the cursor was returned. `pending` says
    committed events exist beyond the horizon (a reader should look again soon).
    """

    events: list[StoredEvent]
    position: int
    complete: bool
    pending: bool


# The oldest transaction of *this* database still running, else the next transaction id to
# be assigned. The snapshot is the statement's (both calls return the same one); the
# backends are matched on the low 32 bits of their transaction id (two running
# transactions cannot share them). Transactions of other databases on the same server are
# left out, so a long write elsewhere (a migration, an index build) never holds events back.
_HORIZON_SQL = text(
    """
    SELECT COALESCE(
        (SELECT min(x::text::bigint)
         FROM pg_snapshot_xip(pg_current_snapshot()) AS x
         WHERE (x::text::bigint & 4294967295) IN (
             SELECT a.backend_xid::text::bigint
             FROM pg_stat_activity AS a
             WHERE a.datname = current_database() AND a.backend_xid IS NOT NULL)),
        pg_snapshot_xmax(pg_current_snapshot())::text::bigint
    ) << 16
    """  # 16: INDEX_BITS
)


_HORIZON = DirectStatement(_HORIZON_SQL)
_AFTER_QUERY = (
    select(events_t)
    .where(events_t.c.id > bindparam("after"))
    .order_by(events_t.c.id)
    .limit(bindparam("limit"))
)
_AFTER_OF_APP_QUERY = _AFTER_QUERY.where(events_t.c.app_id == bindparam("app_id"))
_AFTER = DirectSelect(_AFTER_QUERY)
_AFTER_OF_APP = DirectSelect(_AFTER_OF_APP_QUERY)


async def horizon(conn: AsyncConnection) -> int:
    """Ids below this are final (committed or never to be).

    Preconditions: a read transaction (no transaction id of its own) in which this is the
    first look at `pg_stat_activity` (PostgreSQL keeps what it read there until the
    transaction ends); the writers' sessions are visible to this role in
    `pg_stat_activity` (the same role, or one with pg_read_all_stats); no prepared
    (two-phase) transactions write events.
    """
    if conn.dialect.name != "postgresql":
        return NO_HORIZON
    return int((await DriverConnection(conn).fetch(_HORIZON, {}))[0][0])


async def read_after(
    conn: AsyncConnection, after: int, limit: int, app_id: int | None = None
) -> Batch:
    """Up to `limit` final events with id > `after` (of one app, or of all), in id order."""
    bound = await horizon(conn)  # before the events statement: see the module docstring
    params: dict[str, Any] = {"after": after, "limit": limit}
    if app_id is not None:
        params["app_id"] = app_id
    if conn.dialect.name == "postgresql":
        # Precompiled: every realtime hub runs this after every burst of commits.
        statement = _AFTER if app_id is None else _AFTER_OF_APP
        rows = await DriverConnection(conn).select(statement, params)
    else:
        query = _AFTER_QUERY if app_id is None else _AFTER_OF_APP_QUERY
        rows = [dict(row._mapping) for row in await conn.execute(query, params)]
    served = [StoredEvent(**row) for row in rows if row["id"] < bound]
    pending = len(served) < len(rows)
    complete = pending or len(rows) < limit
    position = served[-1].id if served else after
    if complete and bound != NO_HORIZON:
        position = max(position, bound - 1)
    return Batch(served, max(position, after), complete, pending)


async def read_ids(conn: AsyncConnection, ids: Sequence[int]) -> list[StoredEvent]:
    """Events by id, in id order."""
    if not ids:
        return []
    query = select(events_t).where(events_t.c.id.in_(sorted(set(ids)))).order_by(events_t.c.id)
    return [StoredEvent(**row._mapping) for row in await conn.execute(query)]


async def head(conn: AsyncConnection) -> int:
    """A cursor at "now": every final event has an id at or below it."""
    bound = await horizon(conn)
    if bound != NO_HORIZON:
        return bound - 1
    last = (await conn.execute(select(func.max(events_t.c.id)))).scalar_one_or_none()
    return int(last or 0)


async def deployment_id(conn: AsyncConnection) -> str | None:
    """The database's random id (migration 0015), which names its deployment's bus channel."""
    query = select(deployment_t.c.value).where(deployment_t.c.key == "id")
    value = (await conn.execute(query)).scalar_one_or_none()
    return None if value is None else str(value)
