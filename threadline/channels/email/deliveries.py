"""All SQL about e-mail replies in the outbox: queueing, what is due, each attempt's outcome,
bounces.

Every change of a reply's delivery state is written to the event log in its transaction
(`conversation_delivery`, threadline.core.eventlog), after the conversation's lock (which
orders a conversation's log events, see threadline.events.repository); the caller tells the
database's commit listeners (`Database.events_committed`) once it committed.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.conversations.repository import ConversationRepository
from threadline.core import eventlog
from threadline.core.delivery import DeliveryState
from threadline.core.enums import PartType
from threadline.core.model import JSONObject
from threadline.db.schema import email_deliveries as deliveries_t
from threadline.db.schema import email_messages, email_threads
from threadline.events import repository as event_log

QUEUED = DeliveryState.QUEUED.value
SENT = DeliveryState.SENT.value
# The longest relay answer kept.
MAX_ANSWER_CHARS = 500
# What `email_messages.outcome` says of a message Threadline sent.
SENT_REPLY = "reply"


@dataclass(frozen=True, slots=True)
class ToQueue:
    app_id: int
    conversation_id: int
    part_id: int
    event_id: int
    message_id: str


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    app_id: int
    conversation_id: int
    part_id: int
    event_id: int
    message_id: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    relay_code: int | None
    relay_answer: str | None
    created: datetime
    sent_at: datetime | None


def _delivery(row: Any) -> Delivery:
    return Delivery(**row._mapping)


def _insert(conn: AsyncConnection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


async def queue(conn: AsyncConnection, rows: Sequence[ToQueue], now: datetime) -> None:
    """Queue `rows` (in log order) with their Message-IDs, record those Message-IDs as the
    conversations' (an answer to one threads by it), and give each conversation a reply
    address. The caller moved the consumer's cursor in this transaction."""
    if not rows:
        return
    values = [
        {
            "app_id": r.app_id,
            "conversation_id": r.conversation_id,
            "part_id": r.part_id,
            "event_id": r.event_id,
            "message_id": r.message_id,
            "status": QUEUED,
            "attempts": 0,
            "next_attempt_at": now,
            "created": now,
        }
        for r in rows
    ]
    await conn.execute(
        _insert(conn, deliveries_t)
        .values(values)
        .on_conflict_do_nothing(index_elements=["part_id"])
    )
    # Only the Message-IDs of rows this transaction queued (a repeat keeps the first one's).
    queued = select(deliveries_t.c.part_id, deliveries_t.c.message_id).where(
        deliveries_t.c.part_id.in_([r.part_id for r in rows])
    )
    kept = {int(p): str(m) for p, m in await conn.execute(queued)}
    messages = [
        {
            "app_id": r.app_id,
            "message_id": r.message_id,
            "conversation_id": r.conversation_id,
            "part_id": r.part_id,
            "direction": "out",
            "outcome": SENT_REPLY,
            "created": now,
        }
        for r in rows
        if kept.get(r.part_id) == r.message_id
    ]
    if messages:
        await conn.execute(
            _insert(conn, email_messages)
            .values(messages)
            .on_conflict_do_nothing(index_elements=["app_id", "message_id"])
        )
    threads = {r.conversation_id: r.app_id for r in rows}
    await conn.execute(
        _insert(conn, email_threads)
        .values(
            [
                # lower-case hex: mail systems may change the case of a local part
                {"conversation_id": c, "app_id": a, "reply_token": secrets.token_hex(12)}
                for c, a in sorted(threads.items())
            ]
        )
        .on_conflict_do_nothing(index_elements=["conversation_id"])
    )


_older = deliveries_t.alias("older")


async def due(conn: AsyncConnection, now: datetime, limit: int) -> list[Delivery]:
    """Queued replies whose time has come and that are the oldest queued one of their
    conversation: a conversation's replies go out one at a time, in order (each answers
    the one before)."""
    blocked = exists().where(
        and_(
            _older.c.conversation_id == deliveries_t.c.conversation_id,
            _older.c.status == QUEUED,
            _older.c.id < deliveries_t.c.id,
        )
    )
    query = (
        select(deliveries_t)
        .where(deliveries_t.c.status == QUEUED, deliveries_t.c.next_attempt_at <= now, ~blocked)
        .order_by(deliveries_t.c.next_attempt_at, deliveries_t.c.id)
        .limit(limit)
    )
    return [_delivery(r) for r in await conn.execute(query)]


async def next_due(conn: AsyncConnection) -> datetime | None:
    query = select(func.min(deliveries_t.c.next_attempt_at)).where(deliveries_t.c.status == QUEUED)
    value: datetime | None = (await conn.execute(query)).scalar_one_or_none()
    return value


async def record_attempt(
    conn: AsyncConnection,
    delivery: Delivery,
    *,
    status: DeliveryState,
    now: datetime,
    next_attempt_at: datetime,
    relay_code: int | None,
    relay_answer: str | None,
) -> bool:
    """Store an attempt's outcome, if the delivery is still as the attempt found it (another
    worker that took the lead meanwhile may have attempted it too); whether it was stored.
    A change of state is logged."""
    repo = ConversationRepository(conn)
    locked = await repo.lock(delivery.app_id, delivery.conversation_id)
    answer = relay_answer[:MAX_ANSWER_CHARS] if relay_answer else None
    sent_at = now if status is DeliveryState.SENT else None
    result = await conn.execute(
        update(deliveries_t)
        .where(
            deliveries_t.c.id == delivery.id,
            deliveries_t.c.status == delivery.status,
            deliveries_t.c.attempts == delivery.attempts,
        )
        .values(
            status=status.value,
            attempts=delivery.attempts + 1,
            last_attempt_at=now,
            next_attempt_at=next_attempt_at,
            relay_code=relay_code,
            relay_answer=answer,
            sent_at=sent_at,
        )
    )
    stored = bool(result.rowcount)
    if stored and status.value != delivery.status and locked is not None:
        after = replace(
            delivery,
            status=status.value,
            attempts=delivery.attempts + 1,
            last_attempt_at=now,
            relay_code=relay_code,
            relay_answer=answer,
            sent_at=sent_at,
        )
        event = eventlog.delivery_event(
            delivery.conversation_id,
            locked.user_id,
            delivery.part_id,
            PartType.REPLY_ADMIN,
            delivery_data(after),
        )
        await event_log.append(repo.driver, delivery.app_id, now, [event])
    return stored


def delivery_data(d: Delivery, bounce: JSONObject | None = None) -> JSONObject:
    """A delivery's state as its log event carries it."""
    data: JSONObject = {
        "channel": "email",
        "status": d.status,
        "message_id": d.message_id,
        "attempts": d.attempts,
        "relay_code": d.relay_code,
        "relay_answer": d.relay_answer,
    }
    if bounce is not None:
        data["bounce"] = bounce
    return data


async def sent_with(
    conn: AsyncConnection, app_id: int, message_ids: Sequence[str]
) -> Delivery | None:
    """The app's reply sent under one of `message_ids` (the first that names one)."""
    if not message_ids:
        return None
    query = select(deliveries_t).where(
        deliveries_t.c.app_id == app_id, deliveries_t.c.message_id.in_(list(message_ids))
    )
    found = {str(r.message_id): _delivery(r) for r in await conn.execute(query)}
    return next((found[i] for i in message_ids if i in found), None)


async def record_bounce(
    conn: AsyncConnection,
    delivery: Delivery,
    *,
    now: datetime,
    code: int | None,
    answer: str,
    bounce: JSONObject,
) -> bool:
    """A sent reply reported undeliverable: `bounced`, with the report's SMTP code and
    status/diagnostic in place of the relay's answer, and logged. False (nothing changed)
    when it is not `sent` (any more)."""
    repo = ConversationRepository(conn)
    locked = await repo.lock(delivery.app_id, delivery.conversation_id)
    answer = answer[:MAX_ANSWER_CHARS]
    bounced = DeliveryState.BOUNCED.value
    result = await conn.execute(
        update(deliveries_t)
        .where(deliveries_t.c.id == delivery.id, deliveries_t.c.status == SENT)
        .values(status=bounced, relay_code=code, relay_answer=answer)
    )
    if not result.rowcount:
        return False
    if locked is not None:
        after = replace(delivery, status=bounced, relay_code=code, relay_answer=answer)
        event = eventlog.delivery_event(
            delivery.conversation_id,
            locked.user_id,
            delivery.part_id,
            PartType.REPLY_ADMIN,
            delivery_data(after, bounce),
        )
        await event_log.append(repo.driver, delivery.app_id, now, [event])
    return True


async def thread_of(conn: AsyncConnection, app_id: int, message_id: str) -> list[str]:
    """The Message-IDs of the conversation recorded before `message_id`, oldest first: what
    a reply with that Message-ID answers and references."""
    own = (
        select(email_messages.c.id, email_messages.c.conversation_id)
        .where(email_messages.c.app_id == app_id, email_messages.c.message_id == message_id)
        .subquery()
    )
    query = (
        select(email_messages.c.message_id)
        .join(own, own.c.conversation_id == email_messages.c.conversation_id)
        .where(email_messages.c.id < own.c.id, email_messages.c.outcome != "ignored")
        .order_by(email_messages.c.id)
    )
    return [str(m) for m in (await conn.execute(query)).scalars()]


async def of_conversation(conn: AsyncConnection, conversation_id: int) -> list[Delivery]:
    query = (
        select(deliveries_t)
        .where(deliveries_t.c.conversation_id == conversation_id)
        .order_by(deliveries_t.c.id)
    )
    return [_delivery(r) for r in await conn.execute(query)]
