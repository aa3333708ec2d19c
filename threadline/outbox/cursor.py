"""Each outbox consumer's cursor in the event log: one row per consumer (`webhook_state`,
whose `key` names the consumer). A consumer turns the events after its cursor into its own
deliveries and moves the cursor in the same transaction, so every committed event is
queued once, and only once it is final (see threadline/events/repository.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.db.schema import webhook_state as state_t
from threadline.events import repository as log_store


def _insert(conn: AsyncConnection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(state_t)


async def position(conn: AsyncConnection, key: str) -> int | None:
    query = select(state_t.c.position).where(state_t.c.key == key)
    value = (await conn.execute(query)).scalar_one_or_none()
    return None if value is None else int(value)


async def move(conn: AsyncConnection, key: str, old: int | None, new: int) -> bool:
    """Move the cursor from `old` to `new`; False when another worker moved it meanwhile."""
    if old is None:
        stmt = _insert(conn).values(key=key, position=new)
        result = await conn.execute(stmt.on_conflict_do_nothing(index_elements=["key"]))
    else:
        result = await conn.execute(
            update(state_t)
            .where(state_t.c.key == key, state_t.c.position == old)
            .values(position=new)
        )
    return bool(result.rowcount)


class CursorMoved(RuntimeError):
    """Another worker moved this consumer's cursor: this round's batch is not queued."""

    def __init__(self, key: str) -> None:
        super().__init__(f"another worker moved the {key} cursor")


async def read(
    conn: AsyncConnection, key: str, floor: int, limit: int
) -> tuple[int | None, log_store.Batch]:
    """The cursor, and the final events after it (nothing at or below `floor`)."""
    old = await position(conn, key)
    start = max(old or 0, floor)
    return old, await log_store.read_after(conn, start, limit)


async def advance(conn: AsyncConnection, key: str, old: int | None, new: int) -> None:
    """Move the cursor in the caller's transaction, which queues what the events owed."""
    if not await move(conn, key, old, new):
        raise CursorMoved(key)
