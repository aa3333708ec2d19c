"""The inbox views and their pages.

A view is a status (open, delayed, closed, or any) combined with any of: an assignee (or
none), a channel (or none), a tag, important only. Every view lists only conversations in
the inbox (replied, not removed), newest `last_update` first, keyset-paginated on
`(last_update, id)`.

The three statuses split the inbox: **closed**; **delayed**, not closed and snoozed until a
time still to come; **open**, every other one. A snooze ends by itself: the same query
finds a conversation delayed before its `delayed_until` and open after it, with no write.

How a page is read. The partial indexes on `conversations` (by status, by assignee, by
channel) and on `conversation_tags` (by tag) are each ordered by `(last_update, id)` after
an equality prefix that ends with `closed`. A view is one or more *branches*, each an
equality on every column of one index's prefix: walked in index order, a branch yields its
rows newest first and stops after a page. When a filter leaves a prefix column open (any
status, or "this admin or nobody" in the vendor's list), each of its values is a branch of
its own, and a page is the merge of the branches' pages. So no page ever sorts a view's
rows: it reads about one page per branch, at any depth and any size.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    exists,
    false,
    literal,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.conversations.queries import (
    ConversationPage,
    InboxFilter,
    Keyset,
    Page,
    PageRequest,
    states_page,
)
from threadline.core.enums import PartType
from threadline.db.schema import IN_INBOX, TAG_IN_INBOX
from threadline.db.schema import conversation_tags as tags_t
from threadline.db.schema import conversations as conv_t
from threadline.db.types import UTCDateTime

Status = Literal["open", "delayed", "closed"]
STATUSES: tuple[Status, ...] = ("open", "delayed", "closed")

# Every branch's rows carry their sort key under these names (see `Branch`).
SORT_UPDATE = "sort_last_update"
SORT_ID = "sort_id"
SORT_COLUMNS: tuple[Any, Any] = (
    literal_column(SORT_UPDATE, UTCDateTime()),
    literal_column(SORT_ID, BigInteger()),
)


@dataclass(frozen=True, slots=True)
class View:
    """Which conversations of the inbox; None means "not filtered"."""

    status: Status | None = "open"
    assignee: int | None = None  # 0: unassigned
    channel: int | None = None  # 0: no channel
    tag: str | None = None
    important: bool | None = None


def status_conditions(
    columns: Any, status: Status | None, now: datetime, dialect: str = "postgresql"
) -> list[Any]:
    """`columns`: those of `conversations` or of `conversation_tags` (same names)."""
    c = columns
    if status is None:
        return []
    if status == "closed":
        return [c.closed.is_(True)]
    at = literal(now, c.delayed_until.type)
    if status == "delayed":
        if dialect == "sqlite":
            # As an expression (the stored text, concatenated; null stays null), and with
            # no "is not null" term, it keeps SQLite off the snoozed index
            # (`ix_inbox_snoozed`), which it would read whole and sort, a cost that grows
            # with the number of snoozed conversations: the view's ordered index reads
            # about one page at any size.
            until: ColumnElement[Any] = literal_column(
                f"({c.delayed_until.table.name}.delayed_until || '')"
            )
            return [c.closed.is_(False), until > at]
        return [c.closed.is_(False), c.delayed_until.is_not(None), c.delayed_until > at]
    return [c.closed.is_(False), or_(c.delayed_until.is_(None), c.delayed_until <= at)]


def _assignee_is(columns: Any, assignee: int) -> ColumnElement[bool]:
    c = columns
    found: ColumnElement[bool] = (
        c.assignee_id.is_(None) if assignee == 0 else c.assignee_id == assignee
    )
    return found


def _channel_is(columns: Any, channel: int) -> ColumnElement[bool]:
    c = columns
    found: ColumnElement[bool] = c.channel_id.is_(None) if channel == 0 else c.channel_id == channel
    return found


def filter_conditions(columns: Any, view: View) -> list[ColumnElement[bool]]:
    """The view's filters other than status and tag."""
    c = columns
    where: list[ColumnElement[bool]] = []
    if view.assignee is not None:
        where.append(_assignee_is(c, view.assignee))
    if view.channel is not None:
        where.append(_channel_is(c, view.channel))
    if view.important is not None:
        where.append(c.important.is_(view.important))
    return where


@dataclass(frozen=True, slots=True)
class Branch:
    """One index walk of a view: the sort key of its rows (`SORT_UPDATE`, `SORT_ID`), taken
    from the table whose index the walk follows. Only the key: the page's rows are read
    by id afterwards, and the walk can stay inside its index."""

    query: Select[Any]


def conversation_branch(*where: Any) -> Branch:
    c = conv_t.c
    return Branch(select(c.last_update.label(SORT_UPDATE), c.id.label(SORT_ID)).where(*where))


def tag_branch(*where: Any, with_conversation: bool = False) -> Branch:
    """`with_conversation`: the conditions need columns of `conversations` too."""
    t = tags_t.c
    query = select(t.last_update.label(SORT_UPDATE), t.conversation_id.label(SORT_ID))
    if with_conversation:
        query = query.select_from(tags_t.join(conv_t, conv_t.c.id == t.conversation_id))
    return Branch(query.where(*where))


def _closed_values(status: Status | None) -> list[bool | None]:
    """Any status is two walks, closed and not: `closed` leads every view index's order."""
    return [None] if status is not None else [False, True]


@dataclass(frozen=True, slots=True)
class Source:
    """The branches whose merge is a view, newest first."""

    branches: Sequence[Branch]


def source(app_id: int, view: View, now: datetime, dialect: str = "postgresql") -> Source:
    """The conversations of `view` (`dialect`: of the connection that reads them)."""
    branches = []
    for closed in _closed_values(view.status):
        if view.tag is None:
            c = conv_t.c
            where = [c.app_id == app_id, IN_INBOX]
            make = conversation_branch
        else:
            c = tags_t.c
            where = [c.app_id == app_id, c.tag == view.tag, TAG_IN_INBOX]
            make = tag_branch
        where += status_conditions(c, view.status, now, dialect) + filter_conditions(c, view)
        if closed is not None:
            where.append(c.closed.is_(closed))
        branches.append(make(*where))
    return Source(branches)


def _untagged() -> ColumnElement[bool]:
    """The conversation has no tag: no row of it in `conversation_tags`, whose primary key
    leads with the conversation, so each candidate costs one probe of that key (never a
    read of the conversation's JSON `tags`)."""
    any_tag = tags_t.alias("any_tag")
    return ~exists().where(any_tag.c.conversation_id == conv_t.c.id)


def vendor_source(app_id: int, f: InboxFilter) -> Source:
    """The vendor's conversation list (`GET /apps/{app}/conversations`) as branches.

    Each value a filter leaves open on an index's equality prefix is a branch: closed and
    not (unless `closed` is given), "this admin" and "nobody" (`assigned` with
    `include_not_assigned`), the first tag's rows and the untagged conversations
    (`include_no_tags` with `tags`). The other filters are tested on each branch's index
    entries. `include_no_tags` alone lists the untagged conversations only ("set true to
    get conversations without tags"): the same walks, each entry tested for a tag row.
    """
    if f.assigned == 0 and not f.include_not_assigned:
        # "Nobody", while the unassigned are left out: nothing (and no walk).
        return Source([conversation_branch(false())])
    at = literal(f.now, conv_t.c.delayed_until.type)
    closed_values: list[bool] = [f.closed] if f.closed is not None else [False, True]
    assignees: list[int | None]  # None: any
    if f.assigned is None:
        assignees = [None]
    elif f.assigned == 0 or not f.include_not_assigned:
        assignees = [f.assigned]
    else:
        assignees = [f.assigned, 0]
    tagged = [True] if f.tags else [False]
    if f.tags and f.include_no_tags:
        tagged.append(False)
    c = conv_t.c
    other_tag = tags_t.alias("other_tag")
    branches = []
    for closed, assignee, by_tag in itertools.product(closed_values, assignees, tagged):
        v: Any = tags_t.c if by_tag else c
        where: list[Any] = [v.app_id == app_id, v.closed.is_(closed)]
        where += [TAG_IN_INBOX, v.tag == f.tags[0]] if by_tag else [IN_INBOX]
        if f.delayed is True:
            where += [v.delayed_until.is_not(None), v.delayed_until > at]
        elif f.delayed is False:
            where.append(or_(v.delayed_until.is_(None), v.delayed_until <= at))
        if assignee is not None:
            where.append(_assignee_is(v, assignee))
        elif not f.include_not_assigned:
            where.append(v.assignee_id.is_not(None))
        if f.channel is not None:
            where.append(_channel_is(v, f.channel))
        if by_tag:
            where += [
                exists().where(other_tag.c.conversation_id == c.id, other_tag.c.tag == tag)
                for tag in f.tags[1:]
            ]
        elif f.tags or f.include_no_tags:
            where.append(_untagged())
        if f.answered is True:
            where.append(c.reply_last_type == PartType.REPLY_ADMIN.value)
        elif f.answered is False:
            where.append(
                or_(c.reply_last_type.is_(None), c.reply_last_type != PartType.REPLY_ADMIN.value)
            )
        if f.assistant_type is not None:
            where.append(c.assistant_type == f.assistant_type)
        branches.append(
            tag_branch(*where, with_conversation=True) if by_tag else conversation_branch(*where)
        )
    return Source(branches)


class MergedKeyset(Keyset):
    """Keyset pagination over the merge of a source's branches.

    Positions and conditions are on the sort key's names (`SORT_COLUMNS`); each branch
    applies them to its own index columns (its query is a simple subquery, which the
    database flattens into an ordered index walk), takes at most `limit` keys, and the
    merge keeps the first `limit` of all. Then the rows of those keys are read by id.
    """

    def __init__(self, conn: AsyncConnection, src: Source) -> None:
        super().__init__(conn, src.branches[0].query, SORT_COLUMNS)
        self.branches = list(src.branches)

    def _order(self, descending: bool, columns: Sequence[Any] = SORT_COLUMNS) -> list[Any]:
        return [c.desc() if descending else c.asc() for c in columns]

    def merged(
        self,
        where: ColumnElement[bool] | None,
        descending: bool,
        limit: int | None,
        *extra: ColumnElement[bool],
    ) -> Select[Any]:
        """The sort keys of every branch after `where` (and `extra`, on the sort key's
        names), in order, at most `limit`."""
        conditions = [*([] if where is None else [where]), *extra]
        walks = []
        for branch in self.branches:
            walk = branch.query.subquery()
            query = (
                select(walk)
                .where(*conditions)
                .order_by(*self._order(descending, (walk.c[SORT_UPDATE], walk.c[SORT_ID])))
            )
            walks.append(query if limit is None else query.limit(limit))
        if len(walks) == 1:
            return walks[0]
        merge = union_all(*(select(w.subquery()) for w in walks)).subquery()
        query = select(merge).order_by(
            *self._order(descending, (merge.c[SORT_UPDATE], merge.c[SORT_ID]))
        )
        return query if limit is None else query.limit(limit)

    async def rows(self, keys: Select[Any], descending: bool) -> list[Any]:
        """The conversations of `keys` (every column, and the sort key), in key order."""
        page = keys.subquery("page")
        query = (
            select(conv_t, page.c[SORT_UPDATE], page.c[SORT_ID])
            .select_from(page.join(conv_t, conv_t.c.id == page.c[SORT_ID]))
            .order_by(*self._order(descending, (page.c[SORT_UPDATE], page.c[SORT_ID])))
        )
        return list(await self.conn.execute(query))

    async def _fetch(
        self, where: ColumnElement[bool] | None, descending: bool, limit: int | None
    ) -> list[Any]:
        return await self.rows(self.merged(where, descending, limit), descending)

    async def _exists(self, where: ColumnElement[bool]) -> bool:
        return (await self.conn.execute(self.merged(where, True, 1))).first() is not None

    async def page(self, request: PageRequest) -> Page:
        if request.direction == "before" and request.position is None:
            # The newest rows: nothing is newer than the first of them at this moment, so
            # there is no "after" to look for.
            fetched = await self._fetch(None, True, request.count + 1)
            found = Page(fetched[: request.count])
            if len(fetched) > request.count:
                found.next_before = self._key(found.rows[-1])
            return found
        return await super().page(request)


async def source_page(
    conn: AsyncConnection,
    src: Source,
    request: PageRequest | None = None,
    v1: tuple[datetime | None, int] | None = None,
) -> ConversationPage:
    """One page of `src`: v2 keyset (`request`) or the old `after` cursor (`v1`)."""
    return await states_page(MergedKeyset(conn, src), request, v1)


async def page(
    conn: AsyncConnection,
    app_id: int,
    view: View,
    now: datetime,
    request: PageRequest | None = None,
    v1: tuple[datetime | None, int] | None = None,
) -> ConversationPage:
    """One page of the view: v2 keyset (`request`) or the old `after` cursor (`v1`)."""
    return await source_page(conn, source(app_id, view, now, conn.dialect.name), request, v1)


async def vendor_page(
    conn: AsyncConnection,
    app_id: int,
    f: InboxFilter,
    request: PageRequest | None = None,
    v1: tuple[datetime | None, int] | None = None,
) -> ConversationPage:
    """One page of the vendor's conversation list, filtered by `f` (see `vendor_source`)."""
    return await source_page(conn, vendor_source(app_id, f), request, v1)
