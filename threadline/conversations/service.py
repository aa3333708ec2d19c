"""The conversation engine's entry points: each call is one atomic transaction.

Every write locks the conversation, validates references against the app (an admin,
channel or sender of another app is refused as unknown), applies the pure rules and
stores the parts and the derived fields together.

Lock order (PostgreSQL), the same for every writer, so that no two wait on each other:
1. the conversation rows (one write: its conversation; a batch: its conversations by id);
2. the inbox's count cells, in one sorted order (`threadline.inbox.maintain`);
3. the search word list (`search_words`).
A write sends all its parts in the statement that also updates its cells (a part without a
reserved id gets its id ahead, `ConversationRepository.insert_part`): the trigger that adds
their words runs at the statement's end, after the cells. An erasure sends its cells before
it locks the word list to take words out (`ConversationRepository.forget_erased`).
`tests/test_lock_order.py` runs erasures, batched writes and two-part writes together and
counts PostgreSQL's deadlocks: none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.apps.repository import AppRepository
from threadline.apps.service import utcnow
from threadline.conversations.batch import batcher_of
from threadline.conversations.repository import ConversationRepository
from threadline.core import eventlog, rules
from threadline.core import events as ev
from threadline.core.enums import (
    AuthorKind,
    ConversationType,
    MessageStatus,
    RecipientType,
    ReplyType,
    SentVia,
)
from threadline.core.errors import DomainError, InvalidParameter, NotFound
from threadline.core.idempotency import check_retry, check_started_retry
from threadline.core.model import Admin, Author, ConversationState, JSONObject, Part, Sender
from threadline.core.recompute import Drift, drifts, repaired
from threadline.db.direct import NotBatchable, NothingAdded
from threadline.db.engine import Database
from threadline.db.schema import channels, users
from threadline.events import repository as event_log
from threadline.inbox import check as inbox_check
from threadline.inbox import maintain as inbox
from threadline.inbox.check import IndexCheck, IndexDrift
from threadline.inbox.service import snapshot


@dataclass(slots=True)
class Outcome:
    """The conversation after a write and the parts the write created.

    On a retry (`duplicate`), `parts` holds the part the first request created.
    """

    state: ConversationState
    parts: list[Part] = field(default_factory=list)
    duplicate: bool = False
    # The admins and senders the write named, as read in its transaction (so an answer
    # that shows them needs no read of its own).
    people: People | None = None


@dataclass(slots=True)
class People:
    admins: dict[int, Admin] = field(default_factory=dict)
    senders: dict[int, Sender] = field(default_factory=dict)


# The "kind of write" half of the idempotency key, per event class.
_RANDOM_KIND: dict[type[object], str] = {
    ev.UserReply: "reply",
    ev.AdminReply: "reply",
    ev.ContentPart: "reply",
    ev.Assign: "assign",
    ev.Close: "close",
    ev.Reopen: "reopen",
    ev.Delay: "delay",
    ev.AddTag: "tag",
    ev.RemoveTag: "untag",
    ev.ChangeChannel: "channel",
}


def idempotency_key(event: ev.Event) -> tuple[str, int] | None:
    random_id = getattr(event, "random_id", None)
    kind = _RANDOM_KIND.get(type(event))
    if not random_id or kind is None:
        return None
    return kind, int(random_id)


class _AlreadyDone(Exception):
    """Raised inside the transaction to roll it back when a retry is detected."""


def _named_admins(events: Sequence[ev.Event]) -> set[int | None]:
    """The admins the events name: as authors, and as assignees or bot hand-off targets."""
    admin_ids: set[int | None] = set()
    for event in events:
        for attr in ("author", "by", "sender"):
            author: Author | None = getattr(event, attr, None)
            if author is not None and author.kind is AuthorKind.ADMIN:
                admin_ids.add(author.id)
        if isinstance(event, ev.Assign | ev.BotHandOff) and event.admin_id is not None:
            admin_ids.add(event.admin_id)
    return admin_ids


async def _check_references(
    repo: AppRepository,
    app_id: int,
    events: Sequence[ev.Event],
    known_admins: Mapping[int, Admin | None],
) -> People:
    """Every admin, sender and channel an event names must belong to the conversation's app.

    One of another app is answered exactly like one that does not exist. Returns the admins
    and senders named. `known_admins` are those already looked up in this transaction.
    """
    people = People()
    for event in events:
        for attr in ("author", "by", "sender"):
            author: Author | None = getattr(event, attr, None)
            if author is None or author.kind is not AuthorKind.SENDER:
                continue
            if author.id not in people.senders:
                sender = await repo.sender(app_id, author.id) if author.id is not None else None
                if sender is None:
                    raise NotFound("sender", author.id)
                people.senders[sender.id] = sender
        if (
            isinstance(event, ev.ChangeChannel)
            and event.channel_id is not None
            and not await repo.owned(channels, app_id, event.channel_id)
        ):
            raise NotFound("channel", event.channel_id)
    for admin_id in sorted(_named_admins(events), key=lambda i: i or 0):
        if admin_id is None:
            raise NotFound("admin", admin_id)
        admin = (
            known_admins[admin_id]
            if admin_id in known_admins
            else await repo.admin(app_id, admin_id)
        )
        if admin is None:
            raise NotFound("admin", admin_id)
        people.admins[admin.id] = admin
    return people


async def _store(repo: ConversationRepository, change: rules.Change, now: datetime) -> None:
    """Insert the change's parts and apply its side effects; the caller saves the state."""
    # The parts marked read are those the conversation had before this change.
    if change.mark_read is not None:
        await repo.mark_read(change.state.id, change.mark_read)
    ids: list[int] = []
    for part in change.parts:
        ident = await repo.insert_part(part)
        if ident is None:
            raise _AlreadyDone
        ids.append(ident)
    change.with_ids(ids)
    if change.erase:
        await repo.erase(change.state.id, now)


# Writes sent to a batch (see batch.py): the frequent ones, which seldom need a statement of
# their own. The rarer kinds (assignments, closes, snoozes, tags, channels) go alone.
_BATCHED = (ev.UserReply, ev.AdminReply, ev.ContentPart, ev.ReadByAdmin, ev.ReadByUser)


async def perform(
    db: Database,
    app_id: int,
    conversation_id: int,
    *events: ev.Event,
    now: datetime | None = None,
    user_id: int | None = None,
) -> Outcome:
    """Apply `events` to one conversation, in order, in one transaction.

    A retried write (same non-zero random_id and kind) creates nothing and answers the part
    the first request created. The unique index on parts is what guarantees it. With
    `user_id`, the conversation must be that user's (a write in the user's name).
    On PostgreSQL, writes to other conversations that arrive at the same time may share the
    transaction (threadline.conversations.batch); each is still all or nothing.
    """
    keys = [k for k in map(idempotency_key, events) if k is not None]
    key = keys[-1] if keys else None
    # The one admin a write usually names is read with the lock (one round trip).
    admin_ids = _named_admins(events)
    only_admin = next(iter(admin_ids)) if len(admin_ids) == 1 else None

    async def locked(
        repo: ConversationRepository, conn: AsyncConnection, state: ConversationState | None
    ) -> tuple[Outcome, bool]:
        return await _write_locked(repo, conn, conversation_id, state, events, now, user_id, key)

    def committed(written: tuple[Outcome, bool]) -> None:
        if written[1]:
            db.events_committed(app_id)

    batcher = batcher_of(db) if all(isinstance(e, _BATCHED) for e in events) else None
    try:
        if batcher is not None:
            with contextlib.suppress(NotBatchable):
                written = await batcher.run(
                    app_id, conversation_id, only_admin, key, locked, committed
                )
                return written[0]
        async with db.write() as conn:
            repo = ConversationRepository(conn)
            state = await repo.lock(app_id, conversation_id, admin_id=only_admin)
            written = await locked(repo, conn, state)
    except (_AlreadyDone, NothingAdded):
        keyed = next((e for e in reversed(events) if idempotency_key(e) == key), None)
        return await _first_result(db, app_id, conversation_id, key, keyed)
    committed(written)
    return written[0]


async def _write_locked(
    repo: ConversationRepository,
    conn: AsyncConnection,
    conversation_id: int,
    state: ConversationState | None,
    events: Sequence[ev.Event],
    now: datetime | None,
    user_id: int | None,
    key: tuple[str, int] | None,
) -> tuple[Outcome, bool]:
    """`perform` under the conversation's lock: the outcome, and whether events were logged."""
    if state is None:
        raise NotFound("conversation", conversation_id)
    if user_id is not None and state.user_id != user_id:
        raise InvalidParameter("from_user", "is not the user of this conversation")
    # Read the clock under the lock: a write that waited for another one is dated after it,
    # so a conversation's parts are in time order and last_update only grows.
    now = now or utcnow()
    people = await _check_references(
        AppRepository(conn, repo.driver), state.app_id, events, repo.locked_admins
    )
    before = state
    created: list[Part] = []
    logged: list[eventlog.LogEvent] = []
    for event in events:
        try:
            change = rules.apply(state, event, now)
        except DomainError:
            if key and await repo.find_part(state.id, *key):
                raise _AlreadyDone from None
            raise
        if not change.changed:
            continue
        await _store(repo, change, now)
        logged.extend(eventlog.derive(state, change))
        state = change.state
        created.extend(change.parts)
    if state is not before:
        await repo.save(state, before)
        await inbox.maintain(conn, before, state)
        await event_log.append(repo.driver, state.app_id, now, logged)
        await repo.forget_erased()  # the word list last: see ConversationRepository
    elif key and await repo.find_part(state.id, *key):
        raise _AlreadyDone
    return Outcome(state, created, people=people), bool(logged)


async def _first_result(
    db: Database,
    app_id: int,
    conversation_id: int,
    key: tuple[str, int] | None,
    retried: ev.Event | None,
) -> Outcome:
    """The first write's part for a retry (`retried`, the event that carries the key);
    `IdempotencyKeyReused` when the retry asks for something else than the first write."""
    async with db.read() as conn:
        repo = ConversationRepository(conn)
        state = await repo.get(app_id, conversation_id)
        part = await repo.find_part(conversation_id, *key) if key else None
    if state is None:
        raise NotFound("conversation", conversation_id)
    if part is None:
        raise InvalidParameter("random_id", "already used for another write to this conversation")
    check_retry(part, retried)
    return Outcome(state, [part], duplicate=True)


async def _new_state(
    conn_repo: AppRepository, app_id: int, user_id: int, channel_id: int | None, now: datetime
) -> ConversationState:
    if not await conn_repo.owned(users, app_id, user_id):
        raise NotFound("user", user_id)
    if channel_id is None:
        app = await conn_repo.app(app_id)
        channel_id = app["default_channel_id"] if app else None
    elif not await conn_repo.owned(channels, app_id, channel_id):
        raise NotFound("channel", channel_id)
    return rules.new_conversation(
        conversation_id=0, app_id=app_id, user_id=user_id, now=now, channel_id=channel_id
    )


async def start_by_user(
    db: Database,
    app_id: int,
    user_id: int,
    reply: ev.UserReply,
    *,
    channel_id: int | None = None,
    external_service: str | None = None,
    external_id: str | None = None,
    type_: ConversationType | None = None,
    reply_type: ReplyType | None = None,
    now: datetime | None = None,
) -> Outcome:
    """The user writes first: a new conversation whose first part is their reply.

    `reply.random_id` makes the call safe to retry: per user, one key starts one conversation.
    `type_` and `reply_type` name the channel the user wrote through (an e-mail:
    `incoming_email` and `email`); a chat leaves them unset.
    """
    now = now or utcnow()
    try:
        async with db.write() as conn:
            state = await _new_state(AppRepository(conn), app_id, user_id, channel_id, now)
            state.external_service = external_service
            state.external_id = external_id
            state.type = type_
            state.reply_type = reply_type
            state.start_random_id = reply.random_id or None
            repo = ConversationRepository(conn)
            if state.start_random_id is None:
                state.id = await repo.insert(state)
            else:
                ident = await repo.insert_started(state)
                if ident is None:
                    raise _AlreadyDone
                state.id = ident
            change = rules.apply(state, reply, now)
            await _store(repo, change, now)
            await repo.save(change.state)
            await inbox.maintain(conn, None, change.state)
            await event_log.append(repo.driver, app_id, now, eventlog.derive(None, change))
    except _AlreadyDone:
        assert reply.random_id
        state, first = await _first_start(db, app_id, user_id, reply.random_id, reply)
        return Outcome(state, [first], duplicate=True)
    db.events_committed(app_id)
    return Outcome(change.state, change.parts)


async def _first_start(
    db: Database,
    app_id: int,
    user_id: int,
    random_id: int,
    retried: ev.UserReply | ev.StartByMessage,
) -> tuple[ConversationState, Part]:
    """The conversation the user's key started and its first part, for a retry of that
    start; `IdempotencyKeyReused` when the retry asks for another start."""
    async with db.read() as conn:
        repo = ConversationRepository(conn)
        ident = await repo.find_started(user_id, random_id)
        state = await repo.get(app_id, ident) if ident is not None else None
        parts = await repo.parts(state.id) if state is not None else []
    if state is None:
        raise NotFound("conversation", ident)
    first = min(parts, key=lambda part: part.id) if parts else None
    check_started_retry(state, first, retried)
    assert first is not None
    return state, first


@dataclass(frozen=True, slots=True)
class StartedByMessage:
    outcome: Outcome
    message_id: int


async def start_by_message(
    db: Database,
    app_id: int,
    user_id: int,
    *,
    body: str,
    sender: Author,
    type_: ConversationType = ConversationType.POPUP_CHAT,
    reply_type: ReplyType = ReplyType.TEXT,
    recipient_type: RecipientType = RecipientType.ALL,
    status: MessageStatus = MessageStatus.CREATED,
    sended_time: datetime | None = None,
    body_json: JSONObject | None = None,
    channel_id: int | None = None,
    sent_via: SentVia = SentVia.MESSAGE_MANUAL,
    random_id: int | None = None,
    now: datetime | None = None,
) -> StartedByMessage:
    """An outbound message opens a conversation; it enters the inbox once the user answers.

    `random_id` makes the call safe to retry: per user, one key sends one message (the key
    space is the one of conversations the user starts).
    """
    now = now or utcnow()
    try:
        async with db.write() as conn:
            app_repo = AppRepository(conn)
            await _check_references(app_repo, app_id, [ev.AdminReply(author=sender)], {})
            state = await _new_state(app_repo, app_id, user_id, channel_id, now)
            state.start_random_id = random_id or None
            message_id = await app_repo.create_message(
                app_id,
                type_=type_.value,
                reply_type=reply_type.value,
                recipient_type=recipient_type.value,
                sender_id=sender.id if sender.kind is AuthorKind.SENDER else None,
                admin_id=sender.id if sender.kind is AuthorKind.ADMIN else None,
                body=body,
                now=now,
            )
            event = ev.StartByMessage(
                message_id=message_id,
                type=type_,
                reply_type=reply_type,
                sender=sender,
                body=body,
                body_json=body_json,
                recipient_type=recipient_type,
                status=status,
                sended_time=sended_time,
                sent_via=sent_via,
            )
            change = rules.apply(state, event, now)  # validates before anything is inserted
            repo = ConversationRepository(conn)
            if state.start_random_id is None:
                change.state.id = await repo.insert(state)
            else:
                ident = await repo.insert_started(state)
                if ident is None:
                    raise _AlreadyDone
                change.state.id = ident
            for part in change.parts:
                part.conversation_id = change.state.id
            await _store(repo, change, now)
            await repo.save(change.state)
            await inbox.maintain(conn, None, change.state)
            await event_log.append(repo.driver, app_id, now, eventlog.derive(None, change))
    except _AlreadyDone:
        assert random_id
        retried = ev.StartByMessage(
            message_id=0,
            type=type_,
            reply_type=reply_type,
            sender=sender,
            body=body,
            body_json=body_json,
            recipient_type=recipient_type,
        )
        sent, first = await _first_start(db, app_id, user_id, random_id, retried)
        assert sent.message_id is not None
        return StartedByMessage(Outcome(sent, [first], duplicate=True), sent.message_id)

    db.events_committed(app_id)
    return StartedByMessage(Outcome(change.state, change.parts), message_id)


async def get_conversation(db: Database, app_id: int, conversation_id: int) -> ConversationState:
    async with db.read() as conn:
        state = await ConversationRepository(conn).get(app_id, conversation_id)
    if state is None:
        raise NotFound("conversation", conversation_id)
    return state


async def get_parts(db: Database, app_id: int, conversation_id: int) -> list[Part]:
    async with db.read() as conn:
        repo = ConversationRepository(conn)
        if await repo.get(app_id, conversation_id) is None:
            raise NotFound("conversation", conversation_id)
        return await repo.parts(conversation_id)


class CheckProgress(Protocol):
    """What a long check reports as it goes (the command line shows it as a bar)."""

    def start(self, conversations: int) -> None: ...
    def advance(self, conversations: int) -> None: ...
    def step(self, description: str) -> None: ...


async def check(
    db: Database, *, fix: bool = False, progress: CheckProgress | None = None
) -> list[Drift | IndexDrift]:
    """Recompute every conversation's derived fields from its parts, and the inbox's tag
    rows, count cells and word list from the conversations; with `fix`, repair drift.

    One snapshot for the whole check: what concurrent writes change is not seen half done.
    """
    found: list[Drift | IndexDrift] = []
    async with snapshot(db) as conn:
        repo = ConversationRepository(conn)
        if progress is not None:
            progress.start(await repo.count_all())
        index = IndexCheck(conn)
        await index.begin()
        async for batch in repo.iter_states():
            parts = await repo.parts_of_many([s.id for s in batch])
            for state in batch:
                found.extend(drifts(state, parts[state.id]))
            await index.add(batch)
            if progress is not None:
                progress.advance(len(batch))
        if progress is not None:
            progress.step("Count cells and word list")
        found.extend(await index.end())
    if fix:
        # Tag rows first: repairing a conversation's tags moves its rows from the stored tags.
        await inbox_check.repair(db, [d for d in found if isinstance(d, IndexDrift)])
        for conversation_id in sorted({d.conversation_id for d in found if isinstance(d, Drift)}):
            await _repair(db, conversation_id)
    return found


async def _repair(db: Database, conversation_id: int) -> None:
    async with db.write() as conn:
        repo = ConversationRepository(conn)
        state = await repo.get_any(conversation_id)
        if state is None:
            return
        locked = await repo.lock(state.app_id, conversation_id)
        assert locked is not None
        fixed = repaired(locked, await repo.parts(conversation_id))
        await repo.save(fixed)
        await inbox.maintain(conn, locked, fixed)
        logged = eventlog.derive(locked, rules.Change(state=fixed))
        await event_log.append(repo.driver, state.app_id, utcnow(), logged)
    if logged:
        db.events_committed(state.app_id)
