"""Sign-in attempt counts (table `sign_in_attempts`), shared by every process."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.core.throttle import Count
from threadline.db.schema import sign_in_attempts as attempts_t


async def locked_counts(conn: AsyncConnection, keys: Sequence[str]) -> dict[str, Count]:
    """The counts of `keys`, locked until the transaction ends (PostgreSQL: row locks, taken
    in key order so that two sign-ins never wait on each other crosswise; SQLite: the write
    transaction is the database's only one). Keys without a row get one, so the lock holds
    for a first attempt too."""
    ordered = sorted(set(keys))
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(attempts_t)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for key in ordered:
        await conn.execute(
            insert.values(
                key=key, attempts=0, next_allowed=epoch, updated=epoch
            ).on_conflict_do_nothing(index_elements=["key"])
        )
    query = select(attempts_t).where(attempts_t.c.key.in_(ordered)).order_by(attempts_t.c.key)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    rows = (await conn.execute(query)).all()
    return {r.key: Count(r.attempts, r.next_allowed, r.updated) for r in rows}


async def store_counts(conn: AsyncConnection, counts: dict[str, Count]) -> None:
    for key, count in counts.items():
        await conn.execute(
            attempts_t.update()
            .where(attempts_t.c.key == key)
            .values(attempts=count.attempts, next_allowed=count.next_allowed, updated=count.updated)
        )


async def clear(conn: AsyncConnection, key: str) -> None:
    await conn.execute(delete(attempts_t).where(attempts_t.c.key == key))


async def forget_older_than(conn: AsyncConnection, before: datetime) -> None:
    """Drop the counts untouched since `before` (they would start afresh anyway)."""
    await conn.execute(delete(attempts_t).where(attempts_t.c.updated < before))
