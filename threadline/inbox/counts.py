"""Exact counts of every inbox view, without scanning an app's conversations.

Two sources, read in one snapshot:

- the count cells of `inbox_counts` (see `maintain`): how many inbox conversations are
  closed or not, per (channel, assignee, important), per tag;
- the snoozed range: conversations not closed whose `delayed_until` is still to come, read
  from the partial index `ix_inbox_snoozed` (or `ix_conversation_tags_snoozed` per tag),
  starting at "now". Only conversations snoozed right now are read.

delayed = the snoozed range; open = not closed minus delayed; closed = closed. A snooze
that ends leaves the range at that very moment, so open and delayed are right at every
moment with no write when time passes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.db.schema import IN_INBOX, TAG_IN_INBOX
from threadline.db.schema import conversation_tags as tags_t
from threadline.db.schema import conversations as conv_t
from threadline.db.schema import inbox_counts as counts_t
from threadline.inbox.maintain import KIND_ALL, KIND_TAG, KIND_TAG_CUBE
from threadline.inbox.views import STATUSES, Status, View

# (status, channel or 0, assignee or 0, important) -> conversations
Cube = Counter[tuple[Status, int, int, bool]]


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


def _cell_sums(kind: int, app_id: int, tag: str | None = None) -> Any:
    c = counts_t.c
    where = [c.app_id == app_id, c.kind == kind]
    if tag is not None:
        where.append(c.tag == tag)
    total = func.sum(c.n)
    return (
        select(c.closed, c.channel_id, c.assignee_id, c.important, total.label("n"))
        .where(*where)
        .group_by(c.closed, c.channel_id, c.assignee_id, c.important)
        .having(total != 0)
    )


def _snoozed(columns: Any, app_id: int, now: datetime) -> list[Any]:
    c = columns
    return [
        c.app_id == app_id,
        c.closed.is_(False),
        c.delayed_until.is_not(None),
        c.delayed_until > literal(now, c.delayed_until.type),
    ]


async def _cube(conn: AsyncConnection, app_id: int, now: datetime, tag: str | None) -> Cube:
    """The view cells, with open and delayed apart, of the app or of one tag."""
    cube: Cube = Counter()
    kind = KIND_ALL if tag is None else KIND_TAG_CUBE
    for row in await conn.execute(_cell_sums(kind, app_id, tag)):
        status: Status = "closed" if row.closed else "open"
        cube[(status, int(row.channel_id), int(row.assignee_id), bool(row.important))] += int(row.n)
    if tag is None:
        c = conv_t.c
        where = [IN_INBOX, *_snoozed(c, app_id, now)]
    else:
        c = tags_t.c
        where = [TAG_IN_INBOX, c.tag == tag, *_snoozed(c, app_id, now)]
    snoozed = (
        select(c.channel_id, c.assignee_id, c.important, func.count().label("n"))
        .where(*where)
        .group_by(c.channel_id, c.assignee_id, c.important)
    )
    for row in await conn.execute(snoozed):
        key = (int(row.channel_id or 0), int(row.assignee_id or 0), bool(row.important))
        cube[("open", *key)] -= int(row.n)
        cube[("delayed", *key)] += int(row.n)
    return cube


def _matches(key: tuple[Status, int, int, bool], view: View, status: bool = True) -> bool:
    state, channel, assignee, important = key
    return (
        (not status or view.status is None or state == view.status)
        and (view.assignee is None or assignee == view.assignee)
        and (view.channel is None or channel == view.channel)
        and (view.important is None or important == view.important)
    )


async def _tag_counts(
    conn: AsyncConnection, app_id: int, status: Status | None, now: datetime
) -> dict[str, int]:
    c = counts_t.c
    not_closed: Counter[str] = Counter()
    closed: Counter[str] = Counter()
    rows = await conn.execute(
        select(c.tag, c.closed, func.sum(c.n).label("n"))
        .where(c.app_id == app_id, c.kind == KIND_TAG)
        .group_by(c.tag, c.closed)
    )
    for row in rows:
        (closed if row.closed else not_closed)[row.tag] += int(row.n)
    snoozed: Counter[str] = Counter()
    if status in ("open", "delayed"):
        t = tags_t.c
        query = (
            select(t.tag, func.count().label("n"))
            .where(TAG_IN_INBOX, *_snoozed(t, app_id, now))
            .group_by(t.tag)
        )
        for row in await conn.execute(query):
            snoozed[row.tag] += int(row.n)
    if status is None:
        per_tag = not_closed + closed
    elif status == "closed":
        per_tag = closed
    elif status == "delayed":
        per_tag = snoozed
    else:
        per_tag = not_closed
        per_tag.subtract(snoozed)
    return {tag: n for tag, n in sorted(per_tag.items()) if n}


async def counts(conn: AsyncConnection, app_id: int, view: View, now: datetime) -> Counts:
    """Every count of `view` at `now`. Call inside one snapshot (see `service.snapshot`)."""
    cube = await _cube(conn, app_id, now, None)
    scoped = cube if view.tag is None else await _cube(conn, app_id, now, view.tag)
    result = Counts(statuses=dict.fromkeys(STATUSES, 0))
    for key, n in scoped.items():
        if n and _matches(key, view, status=False):
            result.statuses[key[0]] += n
    result.view = (
        sum(result.statuses.values()) if view.status is None else result.statuses[view.status]
    )
    assignees: Counter[int] = Counter()
    channels: Counter[int] = Counter()
    for (state, channel, assignee, important), n in cube.items():
        if not n or (view.status is not None and state != view.status):
            continue
        result.total += n
        if assignee:
            assignees[assignee] += n
        else:
            result.unassigned += n
        if important:
            result.important += n
        channels[channel] += n
    result.assignees = {k: v for k, v in sorted(assignees.items()) if v}
    result.channels = {k: v for k, v in sorted(channels.items()) if v}
    result.tags = await _tag_counts(conn, app_id, view.status, now)
    return result
