"""The inbox views and their pages.

A view is a status (open, delayed, closed, or any) combined with any of: an assignee (or
none), a channel (or none), a tag, important only. Every view lists only conversations in
the inbox (replied, not removed), newest `last_update` first, keyset-paginated on
`(last_update, id)`.

The three statuses split the inbox: **closed**; **delayed**, not closed and snoozed until a
time still to come; **open**, every other one. A snooze ends by itself: the same query
finds a conversation delayed before its `delayed_until` and open after it, with no write.

A view without a tag walks one of the partial indexes on `conversations` (by status, by
assignee or by channel, each ordered by `(last_update, id)` within a status). A view with a
tag walks `conversation_tags`, which carries the same columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.conversations.queries import ConversationPage, Keyset, PageRequest
from threadline.conversations.repository import state_from_row
from threadline.db.schema import IN_INBOX, TAG_IN_INBOX
from threadline.db.schema import conversation_tags as tags_t
from threadline.db.schema import conversations as conv_t

Status = Literal["open", "delayed", "closed"]
STATUSES: tuple[Status, ...] = ("open", "delayed", "closed")


@dataclass(frozen=True, slots=True)
class View:
    """Which conversations of the inbox; None means "not filtered"."""

    status: Status | None = "open"
    assignee: int | None = None  # 0: unassigned
    channel: int | None = None  # 0: no channel
    tag: str | None = None
    important: bool | None = None


def status_conditions(columns: Any, status: Status | None, now: datetime) -> list[Any]:
    """`columns`: those of `conversations` or of `conversation_tags` (same names)."""
    c = columns
    if status is None:
        return []
    if status == "closed":
        return [c.closed.is_(True)]
    at = literal(now, c.delayed_until.type)
    if status == "delayed":
        return [c.closed.is_(False), c.delayed_until.is_not(None), c.delayed_until > at]
    return [c.closed.is_(False), or_(c.delayed_until.is_(None), c.delayed_until <= at)]


def filter_conditions(columns: Any, view: View) -> list[ColumnElement[bool]]:
    """The view's filters other than status and tag."""
    c = columns
    where: list[ColumnElement[bool]] = []
    if view.assignee is not None:
        where.append(
            c.assignee_id.is_(None) if view.assignee == 0 else c.assignee_id == view.assignee
        )
    if view.channel is not None:
        where.append(c.channel_id.is_(None) if view.channel == 0 else c.channel_id == view.channel)
    if view.important is not None:
        where.append(c.important.is_(view.important))
    return where


@dataclass(frozen=True, slots=True)
class Source:
    """Where a view's rows come from, and the sort columns of its keyset."""

    base: Select[Any]
    sort: Sequence[Any]


def source(app_id: int, view: View, now: datetime, columns: Sequence[Any] = ()) -> Source:
    """The conversations of `view` (every column of `conversations`, plus `columns`)."""
    if view.tag is None:
        c = conv_t.c
        base = select(conv_t, *columns).where(
            c.app_id == app_id,
            IN_INBOX,
            *status_conditions(c, view.status, now),
            *filter_conditions(c, view),
        )
        return Source(base, (c.last_update, c.id))
    t = tags_t.c
    base = (
        select(conv_t, t.conversation_id, *columns)
        .select_from(tags_t.join(conv_t, conv_t.c.id == t.conversation_id))
        .where(
            t.app_id == app_id,
            t.tag == view.tag,
            TAG_IN_INBOX,
            *status_conditions(t, view.status, now),
            *filter_conditions(t, view),
        )
    )
    return Source(base, (t.last_update, t.conversation_id))


async def page(
    conn: AsyncConnection,
    app_id: int,
    view: View,
    now: datetime,
    request: PageRequest | None = None,
    v1: tuple[datetime | None, int] | None = None,
) -> ConversationPage:
    """One page of the view: v2 keyset (`request`) or the old `after` cursor (`v1`)."""
    src = source(app_id, view, now)
    keyset = Keyset(conn, src.base, src.sort)
    if v1 is not None:
        rows, next_after = await keyset.page_v1(*v1)
        return ConversationPage([state_from_row(r) for r in rows], next_after_v1=next_after)
    assert request is not None
    found = await keyset.page(request)
    return ConversationPage(
        [state_from_row(r) for r in found.rows], found.next_before, found.next_after
    )
