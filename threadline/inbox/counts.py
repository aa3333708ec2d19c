"""Exact counts of every inbox view, without scanning an app's conversations.

Read in one snapshot, from the count cells of `inbox_counts` (see `maintain`):

- not closed / closed per assignee (kind 3) and per channel (kind 4), with importance;
  per tag (kind 1); for a view that combines an assignee with a channel, the full cube
  (kind 0); for a view with a tag, the tag's cube (kind 2);
- the snoozed cells (kinds 5, 6, 7): conversations not closed whose snooze ends after the
  app's watermark, corrected by the snoozes that end between the watermark and "now"
  (an index range of `ix_inbox_snoozed` / `ix_conversation_tags_snoozed`, kept short by
  `maintain.sweep`).

delayed = the corrected snoozed cells; open = not closed minus delayed; closed = closed. A
snooze that ends leaves the delayed count at that very moment, with no write.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.db.schema import IN_INBOX, TAG_IN_INBOX
from threadline.db.schema import conversation_tags as tags_t
from threadline.db.schema import conversations as conv_t
from threadline.db.schema import inbox_counts as counts_t
from threadline.inbox.maintain import (
    KIND_ALL,
    KIND_BY_ASSIGNEE,
    KIND_BY_CHANNEL,
    KIND_SNOOZED,
    KIND_SNOOZED_TAG,
    KIND_SNOOZED_TAG_CUBE,
    KIND_TAG,
    KIND_TAG_CUBE,
    KIND_WATERMARK,
    watermark_time,
)
from threadline.inbox.views import Status, View

# (closed, channel or 0, assignee or 0, important) -> conversations
Cube = Counter[tuple[bool, int, int, bool]]
# (channel or 0, assignee or 0, important) -> conversations snoozed now
Snoozed = Counter[tuple[int, int, bool]]


@dataclass(slots=True)
class Counts:
    """Every count the inbox shows, for one view.

    `statuses`: open / delayed / closed with the view's other filters (assignee, channel,
    tag, important). `view`: the view itself. The rest is for the view's status (every
    status when it has none), each filter alone: `total`, `unassigned`, `important`, per
    assignee, per channel (0: no channel) and per tag.
    """

    view: int = 0
    statuses: dict[Status, int] = field(default_factory=dict)
    total: int = 0
    unassigned: int = 0
    important: int = 0
    assignees: dict[int, int] = field(default_factory=dict)
    channels: dict[int, int] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)
    # Snoozes ended since the watermark, that this read had to correct for.
    behind: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class _Span:
    """The snoozes that end between the watermark and now: `sign` -1 when they ended
    after the watermark (still in the snoozed cells), +1 when the watermark is ahead of
    now (taken out of the cells already, yet snoozed at `now`)."""

    low: datetime | None  # None: no watermark yet, every snooze
    high: datetime
    sign: int


def _span(micros: int | None, now: datetime) -> _Span:
    mark = watermark_time(micros)
    if mark is None or mark <= now:
        return _Span(mark, now, -1)
    return _Span(now, mark, +1)


def _span_conditions(columns: Any, app_id: int, span: _Span) -> list[ColumnElement[bool]]:
    c = columns
    where = [
        c.app_id == app_id,
        c.closed.is_(False),
        c.delayed_until.is_not(None),
        c.delayed_until <= literal(span.high, c.delayed_until.type),
    ]
    if span.low is not None:
        where.append(c.delayed_until > literal(span.low, c.delayed_until.type))
    return where


def _match(column: Any, value: object) -> list[ColumnElement[bool]]:
    return [] if value is None else [column == value]


def _filters(columns: Any, view: View) -> list[ColumnElement[bool]]:
    """The view's assignee, channel and importance, on rows that store "none" as null."""
    c = columns
    where: list[ColumnElement[bool]] = []
    if view.channel is not None:
        where.append(c.channel_id.is_(None) if view.channel == 0 else c.channel_id == view.channel)
    if view.assignee is not None:
        where.append(
            c.assignee_id.is_(None) if view.assignee == 0 else c.assignee_id == view.assignee
        )
    if view.important is not None:
        where.append(c.important.is_(view.important))
    return where


def _scoped(view: View) -> bool:
    """The view's statuses need a cube of their own (see `_Cells`)."""
    return view.tag is not None or (view.channel is not None and view.assignee is not None)


# Offset of the kinds of the view's own cube in the first statement's rows.
_SCOPED = 100
# Sources of the second statement's rows.
_ENDED, _ENDED_TAGS, _ENDED_SCOPED = 1, 2, 3


@dataclass(slots=True)
class _Cells:
    """The cells one read needs, summed over shards.

    Every view: by assignee (kind 3) and by channel (kind 4), with closed and importance;
    snoozed (kind 5); per tag (kinds 1 and 6); the watermark. A view with a tag, or with
    both a channel and an assignee, also its own cube (kinds 2 and 7, or 0 and 5),
    filtered, by closed.
    """

    by_assignee: Cube = field(default_factory=Counter)
    by_channel: Cube = field(default_factory=Counter)
    snoozed: Snoozed = field(default_factory=Counter)
    tags: Counter[bool] = field(default_factory=Counter)
    tag_closed: Counter[str] = field(default_factory=Counter)
    tag_not_closed: Counter[str] = field(default_factory=Counter)
    tag_snoozed: Counter[str] = field(default_factory=Counter)
    # (snoozed cells?, closed) -> conversations of the view's own cube
    scoped: Counter[tuple[bool, bool]] = field(default_factory=Counter)
    scoped_snoozed: int = 0
    watermark: int | None = None
    behind: int = 0


def _cell_statement(app_id: int, view: View) -> Any:
    c = counts_t.c
    total = func.sum(c.n)
    group = (c.kind, c.tag, c.closed, c.channel_id, c.assignee_id, c.important)
    kinds = (KIND_TAG, KIND_BY_ASSIGNEE, KIND_BY_CHANNEL, KIND_SNOOZED, KIND_SNOOZED_TAG,
             KIND_WATERMARK)  # fmt: skip
    common = (
        select(*group, total.label("n"))
        .where(c.app_id == app_id, c.kind.in_(kinds))
        .group_by(*group)
        .having(total != 0)
    )
    if not _scoped(view):
        return common
    kind, snoozed_kind = (
        (KIND_ALL, KIND_SNOOZED) if view.tag is None else (KIND_TAG_CUBE, KIND_SNOOZED_TAG_CUBE)
    )
    scoped = (
        select(
            (c.kind + _SCOPED).label("kind"),
            literal("").label("tag"),
            c.closed,
            literal(0).label("channel_id"),
            literal(0).label("assignee_id"),
            literal(False).label("important"),
            total.label("n"),
        )
        .where(
            c.app_id == app_id,
            c.kind.in_((kind, snoozed_kind)),
            c.tag == (view.tag or ""),
            *_match(c.channel_id, view.channel),
            *_match(c.assignee_id, view.assignee),
            *_match(c.important, view.important),
        )
        .group_by(c.kind, c.closed)
    )
    return union_all(common, scoped)


def _ended_statement(app_id: int, view: View, span: _Span) -> Any:
    """The snoozes that end in the span: by (channel, assignee, important), by tag, and
    within the view's own filters when it has a cube of its own."""
    v = conv_t.c
    t = tags_t.c
    arms: list[Any] = [
        select(
            literal(_ENDED).label("source"),
            literal("").label("tag"),
            v.channel_id,
            v.assignee_id,
            v.important,
            func.count().label("n"),
        )
        .where(IN_INBOX, *_span_conditions(v, app_id, span))
        .group_by(v.channel_id, v.assignee_id, v.important),
        select(
            literal(_ENDED_TAGS).label("source"),
            t.tag,
            literal(None).label("channel_id"),
            literal(None).label("assignee_id"),
            literal(False).label("important"),
            func.count().label("n"),
        )
        .where(TAG_IN_INBOX, *_span_conditions(t, app_id, span))
        .group_by(t.tag),
    ]
    if _scoped(view):
        r: Any = v if view.tag is None else t
        where = [IN_INBOX] if view.tag is None else [TAG_IN_INBOX, t.tag == view.tag]
        arms.append(
            select(
                literal(_ENDED_SCOPED).label("source"),
                literal("").label("tag"),
                literal(None).label("channel_id"),
                literal(None).label("assignee_id"),
                literal(False).label("important"),
                func.count().label("n"),
            ).where(*where, *_span_conditions(r, app_id, span), *_filters(r, view))
        )
    return union_all(*arms)


async def _read_cells(conn: AsyncConnection, app_id: int, view: View, now: datetime) -> _Cells:
    """Two statements: the cells (and the watermark), then the snoozes ended since it."""
    found = _Cells()
    for row in await conn.execute(_cell_statement(app_id, view)):
        kind, n = int(row.kind), int(row.n)
        key = (int(row.channel_id), int(row.assignee_id), bool(row.important))
        if kind == KIND_WATERMARK:
            found.watermark = n
        elif kind == KIND_BY_ASSIGNEE:
            found.by_assignee[(bool(row.closed), *key)] += n
        elif kind == KIND_BY_CHANNEL:
            found.by_channel[(bool(row.closed), *key)] += n
        elif kind == KIND_SNOOZED:
            found.snoozed[key] += n
        elif kind == KIND_TAG:
            (found.tag_closed if row.closed else found.tag_not_closed)[row.tag] += n
        elif kind == KIND_SNOOZED_TAG:
            found.tag_snoozed[row.tag] += n
        else:
            snoozed = kind - _SCOPED in (KIND_SNOOZED, KIND_SNOOZED_TAG_CUBE)
            found.scoped[(snoozed, bool(row.closed))] += n
    span = _span(found.watermark, now)
    for row in await conn.execute(_ended_statement(app_id, view, span)):
        n = span.sign * int(row.n)
        if row.source == _ENDED:
            key = (int(row.channel_id or 0), int(row.assignee_id or 0), bool(row.important))
            found.snoozed[key] += n
            found.behind += int(row.n)
        elif row.source == _ENDED_TAGS:
            found.tag_snoozed[row.tag] += n
        else:
            found.scoped_snoozed += n
    found.scoped_snoozed += found.scoped[(True, False)]
    return found


def _by_status(cube: Cube, snoozed: Snoozed, key: Any, status: Status | None) -> Counter[Any]:
    """`cube` and `snoozed` summed by `key(channel, assignee, important)`, for `status`."""
    found: Counter[Any] = Counter()
    if status != "delayed":
        for (closed, channel, assignee, important), n in cube.items():
            if status is None or (status == "closed") == closed:
                found[key(channel, assignee, important)] += n
    if status in ("open", "delayed"):
        sign = -1 if status == "open" else 1
        for (channel, assignee, important), n in snoozed.items():
            found[key(channel, assignee, important)] += sign * n
    return found


def _statuses(cells: _Cells, view: View) -> dict[Status, int]:
    """open / delayed / closed of the view."""
    if _scoped(view):
        delayed = cells.scoped_snoozed
        return {
            "open": cells.scoped[(False, False)] - delayed,
            "delayed": delayed,
            "closed": cells.scoped[(False, True)],
        }

    def keep(channel: int, assignee: int, important: bool) -> bool:
        return (
            (view.channel is None or channel == view.channel)
            and (view.assignee is None or assignee == view.assignee)
            and (view.important is None or important == view.important)
        )

    # At most one of channel and assignee: one marginal cube has them all.
    cube = cells.by_channel if view.channel is not None else cells.by_assignee
    closed = sum(n for (c, ch, a, i), n in cube.items() if c and keep(ch, a, i))
    not_closed = sum(n for (c, ch, a, i), n in cube.items() if not c and keep(ch, a, i))
    delayed = sum(n for (ch, a, i), n in cells.snoozed.items() if keep(ch, a, i))
    return {"open": not_closed - delayed, "delayed": delayed, "closed": closed}


def _nonzero(counter: Iterable[tuple[Any, int]]) -> dict[Any, int]:
    return {k: v for k, v in sorted(counter) if v}


def _tag_counts(cells: _Cells, status: Status | None) -> dict[str, int]:
    if status is None:
        per_tag = cells.tag_not_closed + cells.tag_closed
    elif status == "closed":
        per_tag = cells.tag_closed
    elif status == "delayed":
        per_tag = cells.tag_snoozed
    else:
        per_tag = Counter(cells.tag_not_closed)
        per_tag.subtract(cells.tag_snoozed)
    return _nonzero(per_tag.items())


async def counts(conn: AsyncConnection, app_id: int, view: View, now: datetime) -> Counts:
    """Every count of `view` at `now`. Call inside one snapshot (see `service.snapshot`)."""
    cells = await _read_cells(conn, app_id, view, now)
    result = Counts(statuses=_statuses(cells, view), behind=cells.behind)
    result.view = (
        sum(result.statuses.values()) if view.status is None else result.statuses[view.status]
    )
    status = view.status
    per_assignee = _by_status(cells.by_assignee, cells.snoozed, lambda c, a, i: a, status)
    per_channel = _by_status(cells.by_channel, cells.snoozed, lambda c, a, i: c, status)
    per_importance = _by_status(cells.by_assignee, cells.snoozed, lambda c, a, i: i, status)
    result.total = sum(per_assignee.values())
    result.unassigned = per_assignee.get(0, 0)
    result.important = per_importance.get(True, 0)
    result.assignees = _nonzero((k, v) for k, v in per_assignee.items() if k)
    result.channels = _nonzero(per_channel.items())
    result.tags = _tag_counts(cells, status)
    return result
