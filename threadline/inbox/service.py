"""The inbox's entry points: a page of a view with every count, search; each in one snapshot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.apps.service import utcnow
from threadline.conversations.queries import ConversationPage, PageRequest
from threadline.db.engine import Database
from threadline.inbox import maintain, views
from threadline.inbox.counts import Counts, counts
from threadline.inbox.search import SearchPage, parse_query
from threadline.inbox.search import page as search_page
from threadline.inbox.views import View


@asynccontextmanager
async def snapshot(db: Database) -> AsyncIterator[AsyncConnection]:
    """A read transaction whose statements all see the same committed data.

    PostgreSQL gives each statement of a READ COMMITTED transaction its own snapshot; the
    page and the counts must agree, so the inbox reads at REPEATABLE READ. A SQLite read
    transaction is one snapshot already.
    """
    if db.is_sqlite:
        async with db.read() as conn:
            yield conn
        return
    async with db.read_engine.connect() as conn:
        repeatable = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with repeatable.begin():
            yield repeatable


# A read that had to correct for this many ended snoozes moves the watermark up (see
# `maintain.sweep`), so that the next reads have fewer to correct for.
SWEEP_AFTER = 64


async def catch_up(db: Database, app_id: int, answer: InboxAnswer) -> None:
    """After a read: sweep the ended snoozes out of the count cells when they are many."""
    if answer.counts is not None and answer.counts.behind >= SWEEP_AFTER:
        await maintain.sweep(db, app_id, answer.now)


@dataclass(slots=True)
class InboxAnswer:
    page: ConversationPage
    counts: Counts | None
    now: datetime


async def read_inbox(
    conn: AsyncConnection,
    app_id: int,
    view: View,
    request: PageRequest | None = None,
    v1: tuple[datetime | None, int] | None = None,
    *,
    now: datetime | None = None,
    with_counts: bool = True,
) -> InboxAnswer:
    """One page of `view` and (unless not `with_counts`) the exact count of every view,
    as of one moment.

    `conn` is a `snapshot`: the page and the counts see the same data.
    """
    now = now or utcnow()
    page = await views.page(conn, app_id, view, now, request, v1)
    found = await counts(conn, app_id, view, now) if with_counts else None
    return InboxAnswer(page, found, now)


async def inbox(
    db: Database,
    app_id: int,
    view: View,
    request: PageRequest | None = None,
    v1: tuple[datetime | None, int] | None = None,
    *,
    now: datetime | None = None,
) -> InboxAnswer:
    async with snapshot(db) as conn:
        answer = await read_inbox(conn, app_id, view, request, v1, now=now)
    await catch_up(db, app_id, answer)
    return answer


async def search(
    db: Database,
    app_id: int,
    q: str,
    view: View,
    request: PageRequest | None = None,
    v1: tuple[datetime | None, int] | None = None,
    *,
    now: datetime | None = None,
) -> SearchPage:
    """One page of the view's conversations whose parts match `q` (see `search`)."""
    query = parse_query(q)
    async with db.read() as conn:
        return await search_page(conn, app_id, query, view, now or utcnow(), request, v1)
