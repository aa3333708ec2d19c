"""Waiting for an observable condition instead of sleeping for a guessed time.

A sleep followed by an assertion passes on a slow machine without testing anything (the
thing waited for had not happened yet) and fails on a loaded one. These helpers poll what
the test can observe (a predicate, PostgreSQL's pg_stat_activity), with a generous limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sqlalchemy import text

from threadline.db.engine import Database

LIMIT_S = 30.0


async def until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, limit_s: float = LIMIT_S
) -> None:
    """Return once `condition()` holds; fail after `limit_s` seconds, naming `what`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"waited {limit_s} s for: {what}")
        await asyncio.sleep(0.01)


async def backends_waiting_on_locks(pg: Database) -> int:
    """How many sessions on this PostgreSQL database are waiting for a lock now."""
    async with pg.read() as conn:
        count = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        return int(count.scalar_one())


async def until_waiting_on_locks(pg: Database, count: int) -> None:
    """Until `count` sessions of this database wait for a lock (a blocked statement)."""

    async def enough() -> bool:
        return await backends_waiting_on_locks(pg) >= count

    await until(enough, f"{count} sessions waiting for a lock")


async def until_running(pg: Database, query_start: str) -> None:
    """Until a statement starting with `query_start` runs on this database."""

    async def running() -> bool:
        async with pg.read() as conn:
            found = await conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND state = 'active' AND query LIKE :q"
                ),
                {"q": query_start + "%"},
            )
            return bool(found.scalar_one())

    await until(running, f"a running statement {query_start!r}")
