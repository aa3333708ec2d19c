"""Read-side queries: the inbox list, a user's conversations, parts pages, channel counts.

Lists are keyset-paginated with row-value comparisons on the sort key
(`(last_update, id)` for conversations, `id` for parts): a page costs the same at any
depth and rows added meanwhile never shift the pages still to come.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    and_,
    any_,
    bindparam,
    case,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.conversations.repository import part_from_mapping, part_from_row, state_from_row
from threadline.core.enums import PartType
from threadline.core.model import ConversationState, Part
from threadline.db.direct import DirectSelect, DriverConnection
from threadline.db.schema import channels
from threadline.db.schema import conversation_parts as parts_t
from threadline.db.schema import conversations as conv_t

Direction = Literal["before", "after", "around"]
Key = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class PageRequest:
    """A keyset page: rows `before` (older, smaller keys) or `after` a position, or around it.

    Without a position, `before` starts at the newest row and `after` at the oldest.
    """

    count: int
    direction: Direction = "before"
    position: Key | None = None
    including: bool = False


@dataclass(slots=True)
class Page:
    """Rows newest first, and the positions to continue from (None: nothing left that way)."""

    rows: list[Any] = field(default_factory=list)
    next_before: Key | None = None
    next_after: Key | None = None


class Keyset:
    """Pagination over `base` ordered by `columns` (the last one unique), newest first."""

    def __init__(self, conn: AsyncConnection, base: Select[Any], columns: Sequence[Any]) -> None:
        self.conn = conn
        self.base = base
        self.columns = list(columns)

    def _key(self, row: Any) -> Key:
        return tuple(row._mapping[c.name] for c in self.columns)

    def _compare(self, op: str, position: Key) -> ColumnElement[bool]:
        values = [literal(v, c.type) for c, v in zip(self.columns, position, strict=True)]
        left: Any = self.columns[0] if len(self.columns) == 1 else tuple_(*self.columns)
        right: Any = values[0] if len(values) == 1 else tuple_(*values)
        comparisons: dict[str, ColumnElement[bool]] = {
            "<": left < right,
            "<=": left <= right,
            ">": left > right,
            ">=": left >= right,
        }
        return comparisons[op]

    async def _fetch(
        self, where: ColumnElement[bool] | None, descending: bool, limit: int | None
    ) -> list[Any]:
        query = self.base if where is None else self.base.where(where)
        order = [c.desc() if descending else c.asc() for c in self.columns]
        query = query.order_by(*order)
        if limit is not None:
            query = query.limit(limit)
        return list(await self.conn.execute(query))

    async def _exists(self, where: ColumnElement[bool]) -> bool:
        query = self.base.where(where).limit(1)
        return (await self.conn.execute(query)).first() is not None

    async def page(self, request: PageRequest) -> Page:
        n, pos = request.count, request.position
        if request.direction == "around":
            assert pos is not None, "around needs a position"
            after_n = n // 2
            before_n = n - after_n
            older = await self._fetch(
                self._compare("<=" if request.including else "<", pos), True, before_n + 1
            )
            newer = await self._fetch(self._compare(">", pos), False, after_n + 1)
            more_before, more_after = len(older) > before_n, len(newer) > after_n
            rows = list(reversed(newer[:after_n])) + older[:before_n]
        elif request.direction == "after":
            where = None if pos is None else self._compare(">=" if request.including else ">", pos)
            fetched = await self._fetch(where, False, n + 1)
            more_after = len(fetched) > n
            rows = list(reversed(fetched[:n]))
            boundary = self._key(rows[-1]) if rows else pos
            more_before = boundary is not None and await self._exists(self._compare("<", boundary))
        else:
            where = None if pos is None else self._compare("<=" if request.including else "<", pos)
            fetched = await self._fetch(where, True, n + 1)
            more_before = len(fetched) > n
            rows = fetched[:n]
            boundary = self._key(rows[0]) if rows else pos
            more_after = boundary is not None and await self._exists(self._compare(">", boundary))
        page = Page(rows)
        if more_before:
            page.next_before = self._key(rows[-1]) if rows else pos
        if more_after:
            page.next_after = self._key(rows[0]) if rows else pos
        return page

    async def page_v1(self, after: Any | None, count: int) -> tuple[list[Any], Any | None]:
        """The old pagination: rows whose first sort column is below `after`, newest first.

        The cursor is the first column alone, so rows sharing the boundary value are kept
        on one page (which may then hold more than `count` rows): none is skipped.
        """
        first = self.columns[0]
        where = None if after is None else first < literal(after, first.type)
        fetched = await self._fetch(where, True, count + 1)
        if len(fetched) <= count:
            return fetched, None
        rows = fetched[:count]
        boundary = rows[-1]._mapping[first.name]
        if len(self.columns) > 1 and fetched[count]._mapping[first.name] == boundary:
            tied = and_(
                first == literal(boundary, first.type),
                self._compare("<", self._key(rows[-1])),
            )
            rows.extend(await self._fetch(tied, True, None))
        more = await self._exists(first < literal(boundary, first.type))
        return rows, boundary if more else None


# ---------------------------------------------------------------------------
# Conversations


@dataclass(frozen=True, slots=True)
class InboxFilter:
    """The vendor's conversation list filters; None means "not filtered"."""

    now: datetime
    closed: bool | None = None
    answered: bool | None = None
    delayed: bool | None = None
    assigned: int | None = None  # 0: no assignee
    include_not_assigned: bool = False
    tags: tuple[str, ...] = ()
    # Alone: only untagged conversations; with `tags`: those too.
    include_no_tags: bool = False
    channel: int | None = None  # 0: no channel
    assistant_type: str | None = None


@dataclass(slots=True)
class ConversationPage:
    states: list[ConversationState]
    next_before: Key | None = None
    next_after: Key | None = None
    next_after_v1: datetime | None = None


_SORT = (conv_t.c.last_update, conv_t.c.id)


async def _conversation_page(
    conn: AsyncConnection,
    base: Select[Any],
    request: PageRequest | None,
    v1: tuple[datetime | None, int] | None,
) -> ConversationPage:
    return await states_page(Keyset(conn, base, _SORT), request, v1)


async def states_page(
    keyset: Keyset, request: PageRequest | None, v1: tuple[datetime | None, int] | None
) -> ConversationPage:
    """One page of conversations: v2 keyset (`request`) or the old `after` cursor (`v1`)."""
    if v1 is not None:
        rows, next_after = await keyset.page_v1(*v1)
        return ConversationPage([state_from_row(r) for r in rows], next_after_v1=next_after)
    assert request is not None
    page = await keyset.page(request)
    return ConversationPage(
        [state_from_row(r) for r in page.rows], page.next_before, page.next_after
    )


async def user_page(
    conn: AsyncConnection,
    app_id: int,
    user_id: int,
    *,
    with_user_replies_only: bool = False,
    recipient_type: str | None = None,
    request: PageRequest | None = None,
    v1: tuple[datetime | None, int] | None = None,
) -> ConversationPage:
    """Every conversation of one user (replied or not), except removed ones."""
    c = conv_t.c
    where = [c.app_id == app_id, c.user_id == user_id, c.removed.is_(None)]
    if with_user_replies_only:
        where.append(c.last_user_reply_time.is_not(None))
    if recipient_type is not None and recipient_type != "all":
        # A message for `all` recipients reaches the web and the SDK alike.
        where.append(c.recipient_type.in_((recipient_type, "all")))
    return await _conversation_page(conn, select(conv_t).where(*where), request, v1)


async def conversation(
    conn: AsyncConnection, app_id: int, conversation_id: int
) -> ConversationState | None:
    query = select(conv_t).where(conv_t.c.id == conversation_id, conv_t.c.app_id == app_id)
    row = (await conn.execute(query)).first()
    return state_from_row(row) if row else None


async def live_conversation_ids(conn: AsyncConnection, app_id: int, user_id: int) -> list[int]:
    """Ids of the user's conversations that are not removed yet."""
    query = (
        select(conv_t.c.id)
        .where(conv_t.c.app_id == app_id, conv_t.c.user_id == user_id, conv_t.c.removed.is_(None))
        .order_by(conv_t.c.id)
    )
    return [int(i) for i in (await conn.execute(query)).scalars()]


# ---------------------------------------------------------------------------
# Parts


@dataclass(slots=True)
class PartPage:
    parts: list[Part]
    next_before: Key | None = None
    next_after: Key | None = None
    next_after_v1: int | None = None


async def parts_page(
    conn: AsyncConnection,
    conversation_id: int,
    request: PageRequest | None = None,
    v1: tuple[int | None, int] | None = None,
) -> PartPage:
    """A conversation's parts, newest first, paginated by part id."""
    base = select(parts_t).where(parts_t.c.conversation_id == conversation_id)
    keyset = Keyset(conn, base, [parts_t.c.id])
    if v1 is not None:
        rows, next_after = await keyset.page_v1(*v1)
        return PartPage([part_from_row(r) for r in rows], next_after_v1=next_after)
    assert request is not None
    page = await keyset.page(request)
    return PartPage([part_from_row(r) for r in page.rows], page.next_before, page.next_after)


_PARTS_BY_ID = DirectSelect(
    select(parts_t).where(
        parts_t.c.id == any_(bindparam("ids", type_=postgresql.ARRAY(BigInteger))),
        parts_t.c.conversation_id
        == any_(bindparam("conversation_ids", type_=postgresql.ARRAY(BigInteger))),
    )
)


async def parts_by_id(
    conn: AsyncConnection, conversation_ids: Sequence[int], part_ids: Sequence[int | None]
) -> dict[int, Part]:
    """Parts by id, restricted to the given conversations."""
    wanted = sorted({i for i in part_ids if i is not None})
    if not wanted or not conversation_ids:
        return {}
    if conn.dialect.name == "postgresql":
        # Precompiled, one statement for any number of ids: it runs for every event streamed.
        params = {"ids": wanted, "conversation_ids": list(conversation_ids)}
        rows = await DriverConnection(conn).select(_PARTS_BY_ID, params)
        return {p.id: p for p in map(part_from_mapping, rows)}
    query = select(parts_t).where(
        parts_t.c.id.in_(wanted), parts_t.c.conversation_id.in_(list(conversation_ids))
    )
    return {p.id: p for p in map(part_from_row, await conn.execute(query))}


async def first_part_ids(conn: AsyncConnection, conversation_ids: Iterable[int]) -> dict[int, int]:
    """Each conversation's first part (the lowest id: ids grow with time), by conversation
    id; a conversation without parts is left out. One index probe per conversation."""
    wanted = sorted(set(conversation_ids))
    if not wanted:
        return {}
    first = (
        select(func.min(parts_t.c.id))
        .where(parts_t.c.conversation_id == conv_t.c.id)
        .scalar_subquery()
        .label("first")
    )
    query = select(conv_t.c.id, first).where(conv_t.c.id.in_(wanted))
    return {int(r.id): int(r.first) for r in await conn.execute(query) if r.first is not None}


# ---------------------------------------------------------------------------
# Channels


@dataclass(frozen=True, slots=True)
class ChannelCounts:
    not_assigned: int
    not_read: int


async def channel_counts(conn: AsyncConnection, app_id: int) -> dict[int, ChannelCounts]:
    """Per channel, over its open inbox conversations (replied, not closed, not removed):
    how many have no assignee, and how many are unanswered: their last reply is the user's
    (the vendor's Channel page: `not_read_count`, "number of unanswered conversations (last
    reply in conversation is user reply)", whether an operator has read it or not).
    Snoozed conversations count too: they are still the channel's work."""
    c = conv_t.c
    unanswered = c.reply_last_type == PartType.REPLY_USER.value
    query = (
        select(
            c.channel_id,
            func.sum(case((c.assignee_id.is_(None), 1), else_=0)).label("not_assigned"),
            func.sum(case((unanswered, 1), else_=0)).label("not_read"),
        )
        .where(
            c.app_id == app_id,
            c.replied.is_(True),
            c.closed.is_(False),
            c.removed.is_(None),
            c.channel_id.is_not(None),
        )
        .group_by(c.channel_id)
    )
    return {
        int(r.channel_id): ChannelCounts(int(r.not_assigned or 0), int(r.not_read or 0))
        for r in await conn.execute(query)
    }


async def channel_exists(conn: AsyncConnection, app_id: int, channel_id: int) -> bool:
    query = select(channels.c.id).where(
        channels.c.app_id == app_id, channels.c.id == channel_id, channels.c.removed.is_(None)
    )
    return (await conn.execute(query)).first() is not None
