"""All SQL about webhook endpoints, deliveries and the worker's cursor in the event log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.db.schema import webhook_deliveries as deliveries_t
from threadline.db.schema import webhook_endpoints as endpoints_t
from threadline.events.repository import StoredEvent
from threadline.outbox import cursor as outbox_cursor

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
STATUSES = (PENDING, DELIVERED, DEAD)
# The webhooks' cursor among the outbox consumers' (threadline.outbox.cursor).
CURSOR_KEY = "deliveries"


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: int
    app_id: int
    url: str
    events: list[str]
    format: str
    secret: str
    token: str
    start_after: int
    created: datetime

    def wants(self, event: StoredEvent) -> bool:
        if event.app_id != self.app_id or event.id <= self.start_after:
            return False
        if self.format == "vendor" and ("part" not in event.data or "delivery" in event.data):
            return False  # the vendor's chat webhook is about a new part
        return not self.events or event.type in self.events


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    app_id: int
    endpoint_id: int
    event_id: int
    conversation_id: int
    sequence: int
    status: str
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    latency_ms: int | None
    created: datetime
    delivered_at: datetime | None


def _endpoint(row: Any) -> Endpoint:
    m = row._mapping
    return Endpoint(
        m["id"],
        m["app_id"],
        m["url"],
        list(m["events"]),
        m["format"],
        m["secret"],
        m["token"],
        m["start_after"],
        m["created"],
    )


def _delivery(row: Any) -> Delivery:
    return Delivery(**row._mapping)


_LIVE = endpoints_t.c.removed.is_(None)


async def add_endpoint(
    conn: AsyncConnection,
    *,
    app_id: int,
    url: str,
    events: list[str],
    format_: str,
    secret: str,
    token: str,
    start_after: int,
    now: datetime,
) -> Endpoint:
    """A new endpoint."""
    values = {
        "app_id": app_id,
        "url": url,
        "events": events,
        "format": format_,
        "secret": secret,
        "token": token,
        "start_after": start_after,
        "created": now,
    }
    ident = (
        await conn.execute(insert(endpoints_t).values(values).returning(endpoints_t.c.id))
    ).scalar_one()
    return Endpoint(int(ident), app_id, url, events, format_, secret, token, start_after, now)


async def endpoints(conn: AsyncConnection, app_id: int | None = None) -> list[Endpoint]:
    query = select(endpoints_t).where(_LIVE).order_by(endpoints_t.c.id)
    if app_id is not None:
        query = query.where(endpoints_t.c.app_id == app_id)
    return [_endpoint(r) for r in await conn.execute(query)]


async def endpoint(conn: AsyncConnection, app_id: int, endpoint_id: int) -> Endpoint | None:
    query = select(endpoints_t).where(
        _LIVE, endpoints_t.c.app_id == app_id, endpoints_t.c.id == endpoint_id
    )
    row = (await conn.execute(query)).first()
    return _endpoint(row) if row else None


async def endpoints_by_id(conn: AsyncConnection, ids: Sequence[int]) -> dict[int, Endpoint]:
    if not ids:
        return {}
    query = select(endpoints_t).where(endpoints_t.c.id.in_(sorted(set(ids))))
    return {e.id: e for e in map(_endpoint, await conn.execute(query))}


async def remove_endpoint(
    conn: AsyncConnection, app_id: int, endpoint_id: int, now: datetime
) -> bool:
    """The endpoint receives nothing more; its pending deliveries end dead."""
    result = await conn.execute(
        update(endpoints_t)
        .where(_LIVE, endpoints_t.c.app_id == app_id, endpoints_t.c.id == endpoint_id)
        .values(removed=now)
    )
    if not result.rowcount:
        return False
    await conn.execute(
        update(deliveries_t)
        .where(deliveries_t.c.endpoint_id == endpoint_id, deliveries_t.c.status == PENDING)
        .values(status=DEAD, last_error="endpoint removed")
    )
    return True


# -- the cursor and the outbox -----------------------------------------------------------


def _insert(conn: AsyncConnection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


async def cursor(conn: AsyncConnection) -> int | None:
    return await outbox_cursor.position(conn, CURSOR_KEY)


async def move_cursor(conn: AsyncConnection, old: int | None, new: int) -> bool:
    """Move the cursor from `old` to `new`; False when another worker moved it meanwhile."""
    return await outbox_cursor.move(conn, CURSOR_KEY, old, new)


async def _last_sequences(
    conn: AsyncConnection, endpoint_ids: set[int], conversation_ids: set[int]
) -> dict[tuple[int, int], int]:
    """The highest sequence number given so far per (endpoint, conversation)."""
    query = (
        select(
            deliveries_t.c.endpoint_id,
            deliveries_t.c.conversation_id,
            func.max(deliveries_t.c.sequence),
        )
        .where(
            deliveries_t.c.endpoint_id.in_(sorted(endpoint_ids)),
            deliveries_t.c.conversation_id.in_(sorted(conversation_ids)),
        )
        .group_by(deliveries_t.c.endpoint_id, deliveries_t.c.conversation_id)
    )
    return {(int(e), int(c)): int(n) for e, c, n in await conn.execute(query)}


async def add_deliveries(
    conn: AsyncConnection, rows: Sequence[tuple[Endpoint, StoredEvent]], now: datetime
) -> None:
    """Queue `rows` (in log order), numbering each (endpoint, conversation)'s on from its last
    number. The caller has moved the worker's cursor in this transaction: no other
    transaction queues deliveries meanwhile (it would fail to move the cursor)."""
    if not rows:
        return
    last = await _last_sequences(
        conn, {endpoint.id for endpoint, _ in rows}, {e.conversation_id for _, e in rows}
    )
    values = []
    for endpoint, e in rows:
        key = (endpoint.id, e.conversation_id)
        last[key] = last.get(key, 0) + 1
        values.append(
            {
                "app_id": e.app_id,
                "endpoint_id": endpoint.id,
                "event_id": e.id,
                "conversation_id": e.conversation_id,
                "sequence": last[key],
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created": now,
            }
        )
    stmt = _insert(conn, deliveries_t).values(values)
    await conn.execute(stmt.on_conflict_do_nothing(index_elements=["endpoint_id", "event_id"]))


# -- sending ----------------------------------------------------------------------------

_older = deliveries_t.alias("older")


async def due(conn: AsyncConnection, now: datetime, limit: int) -> list[Delivery]:
    """Pending deliveries whose time has come and that are the oldest pending one of their
    (endpoint, conversation): a conversation's deliveries go out one at a time, in order."""
    blocked = exists().where(
        and_(
            _older.c.endpoint_id == deliveries_t.c.endpoint_id,
            _older.c.conversation_id == deliveries_t.c.conversation_id,
            _older.c.status == PENDING,
            _older.c.id < deliveries_t.c.id,
        )
    )
    query = (
        select(deliveries_t)
        .where(
            deliveries_t.c.status == PENDING,
            deliveries_t.c.next_attempt_at <= now,
            ~blocked,
        )
        .order_by(deliveries_t.c.next_attempt_at, deliveries_t.c.id)
        .limit(limit)
    )
    return [_delivery(r) for r in await conn.execute(query)]


async def next_due(conn: AsyncConnection) -> datetime | None:
    query = select(func.min(deliveries_t.c.next_attempt_at)).where(deliveries_t.c.status == PENDING)
    value: datetime | None = (await conn.execute(query)).scalar_one_or_none()
    return value


async def record_attempt(
    conn: AsyncConnection,
    delivery: Delivery,
    *,
    status: str,
    now: datetime,
    next_attempt_at: datetime,
    http_status: int | None,
    error: str | None,
    latency_ms: int | None,
) -> None:
    # Only if the delivery is still as the attempt found it: a replay of an earlier delivery
    # of its conversation meanwhile queued it again (a new `next_attempt_at`), and then this
    # attempt's outcome is dropped, so it goes again after the replayed one.
    await conn.execute(
        update(deliveries_t)
        .where(
            deliveries_t.c.id == delivery.id,
            deliveries_t.c.status == PENDING,
            deliveries_t.c.next_attempt_at == delivery.next_attempt_at,
        )
        .values(
            status=status,
            attempts=delivery.attempts + 1,
            last_attempt_at=now,
            next_attempt_at=next_attempt_at,
            last_status=http_status,
            last_error=error[:500] if error else None,
            latency_ms=latency_ms,
            delivered_at=now if status == DELIVERED else None,
        )
    )


async def drop_pending_of_removed(conn: AsyncConnection, delivery: Delivery) -> None:
    """A delivery of a removed endpoint is never sent: it ends dead."""
    await conn.execute(
        update(deliveries_t)
        .where(deliveries_t.c.id == delivery.id, deliveries_t.c.status == PENDING)
        .values(status=DEAD, last_error="endpoint removed")
    )


# -- the API's view --------------------------------------------------------------------


async def list_deliveries(
    conn: AsyncConnection,
    app_id: int,
    endpoint_id: int | None,
    *,
    status: str | None,
    before: int | None,
    limit: int,
) -> list[Delivery]:
    """Newest first: the app's, or one endpoint's."""
    query = (
        select(deliveries_t)
        .where(deliveries_t.c.app_id == app_id)
        .order_by(deliveries_t.c.id.desc())
        .limit(limit)
    )
    if endpoint_id is not None:
        query = query.where(deliveries_t.c.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(deliveries_t.c.status == status)
    if before is not None:
        query = query.where(deliveries_t.c.id < before)
    return [_delivery(r) for r in await conn.execute(query)]


async def replay(conn: AsyncConnection, app_id: int, delivery_id: int, now: datetime) -> list[int]:
    """Send a delivery again (the same delivery id), from its first attempt, and after it
    every later delivery of its endpoint and conversation (each under its own id, from a
    first attempt too; one being attempted right now has that attempt's outcome dropped,
    see `record_attempt`): the conversation's deliveries go again in order from there, so
    the last one the receiver gets is the latest. The ids queued again, in order; none when
    the delivery is pending already, not the app's, or of a removed endpoint."""
    live = select(endpoints_t.c.id).where(_LIVE)
    found = (
        await conn.execute(
            select(
                deliveries_t.c.endpoint_id, deliveries_t.c.conversation_id, deliveries_t.c.sequence
            ).where(
                deliveries_t.c.app_id == app_id,
                deliveries_t.c.id == delivery_id,
                deliveries_t.c.status != PENDING,
                deliveries_t.c.endpoint_id.in_(live),
            )
        )
    ).first()
    if found is None:
        return []
    endpoint_id, conversation_id, sequence = found
    result = await conn.execute(
        update(deliveries_t)
        .where(
            deliveries_t.c.endpoint_id == endpoint_id,
            deliveries_t.c.conversation_id == conversation_id,
            deliveries_t.c.sequence >= sequence,
        )
        .values(status=PENDING, attempts=0, next_attempt_at=now, delivered_at=None)
        .returning(deliveries_t.c.id)
    )
    return sorted(int(i) for i in result.scalars())


async def delivery(conn: AsyncConnection, app_id: int, delivery_id: int) -> Delivery | None:
    query = select(deliveries_t).where(
        deliveries_t.c.app_id == app_id, deliveries_t.c.id == delivery_id
    )
    row = (await conn.execute(query)).first()
    return _delivery(row) if row else None
