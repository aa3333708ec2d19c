"""All SQL about conversations and their parts. Rows in, core dataclasses out."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Row,
    Select,
    and_,
    bindparam,
    column,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.apps.repository import of_app, person_columns
from threadline.core.enums import (
    HIDDEN_FROM_USER,
    AssistantType,
    AuthorKind,
    ConversationType,
    MessageStatus,
    PartType,
    RecipientType,
    ReplyType,
    SentVia,
)
from threadline.core.model import Admin, Attachment, Author, ConversationState, Part
from threadline.core.rules import MarkRead
from threadline.db.direct import DirectSelect, DirectStatement, DriverConnection
from threadline.db.schema import admins as admins_t
from threadline.db.schema import conversation_parts as parts_t
from threadline.db.schema import conversations as conv_t
from threadline.inbox import words as search_words

_STATE_COLUMNS = [c for c in conv_t.c if c.name != "tags"]
# Columns the engine rewrites on every change (identity and creation data never change).
_MUTABLE = (
    "last_update",
    "sended_time",
    "type",
    "reply_type",
    "recipient_type",
    "message_id",
    "status",
    "channel_id",
    "assignee_id",
    "assistant_type",
    "removed",
    "replied",
    "closed",
    "delayed_until",
    "tags",
    "part_group",
    "parts_count",
    "replies_count",
    "admin_unread_count",
    "user_unread_count",
    "not_answered_admin_replies",
    "reply_last_id",
    "reply_last_type",
    "part_last_id",
    "important_part_last_id",
    "last_user_reply_time",
    "last_admin_id",
    "important",
    "read",
)


def _opt(enum: Any, value: str | None) -> Any:
    return enum(value) if value is not None else None


def state_from_row(row: Row[Any] | Any) -> ConversationState:
    return state_from_mapping(cast(Mapping[str, Any], row._mapping))


def state_from_mapping(m: Mapping[str, Any]) -> ConversationState:
    return ConversationState(
        id=m["id"],
        app_id=m["app_id"],
        user_id=m["user_id"],
        created=m["created"],
        sended_time=m["sended_time"],
        last_update=m["last_update"],
        type=_opt(ConversationType, m["type"]),
        reply_type=_opt(ReplyType, m["reply_type"]),
        recipient_type=RecipientType(m["recipient_type"]),
        message_id=m["message_id"],
        status=_opt(MessageStatus, m["status"]),
        external_service=m["external_service"],
        external_id=m["external_id"],
        channel_id=m["channel_id"],
        assignee_id=m["assignee_id"],
        assistant_type=_opt(AssistantType, m["assistant_type"]),
        removed=m["removed"],
        replied=m["replied"],
        closed=m["closed"],
        delayed_until=m["delayed_until"],
        tags=tuple(m["tags"]),
        part_group=m["part_group"],
        parts_count=m["parts_count"],
        replies_count=m["replies_count"],
        admin_unread_count=m["admin_unread_count"],
        user_unread_count=m["user_unread_count"],
        not_answered_admin_replies=m["not_answered_admin_replies"],
        reply_last_id=m["reply_last_id"],
        reply_last_type=_opt(PartType, m["reply_last_type"]),
        part_last_id=m["part_last_id"],
        important_part_last_id=m["important_part_last_id"],
        last_user_reply_time=m["last_user_reply_time"],
        last_admin_id=m["last_admin_id"],
        important=m["important"],
        read=m["read"],
        clicked=m["clicked"],
        unsubscribed=m["unsubscribed"],
        start_random_id=m["start_random_id"],
    )


def _state_values(state: ConversationState, names: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in names:
        value = getattr(state, name)
        values[name] = list(value) if name == "tags" else value
    return values


def part_from_row(row: Row[Any] | Any) -> Part:
    return part_from_mapping(row._mapping)


def part_from_mapping(m: Mapping[Any, Any]) -> Part:
    attachments = tuple(_attachment(a) for a in (m["attachments"] or ()))
    return Part(
        id=m["id"],
        conversation_id=m["conversation_id"],
        created=m["created"],
        type=PartType(m["type"]),
        part_group=m["part_group"] if m["part_group"] is not None else m["id"],
        author=Author(AuthorKind(m["author_kind"]), m["author_id"], m["bot_name"]),
        sent_via=SentVia(m["sent_via"]),
        body=m["body"],
        body_json=m["body_json"],
        read=m["read"],
        attachments=attachments,
        random_id=m["random_id"],
        random_kind=m["random_kind"],
        external_id=m["external_id"],
        referrer=m["referrer"],
        actions=m["actions"],
        tag=m["tag"],
        assignee_id=m["assignee_id"],
        edited=m["edited"],
        removed=m["removed"],
    )


def _attachment(stored: Mapping[str, Any]) -> Attachment:
    created = stored.get("created")
    return Attachment(
        id=stored["id"],
        size=stored["size"],
        filename=stored["filename"],
        mime_type=stored["mime_type"],
        created=datetime.fromisoformat(created) if isinstance(created, str) else None,
    )


def _attachment_values(a: Attachment) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": a.id,
        "size": a.size,
        "filename": a.filename,
        "mime_type": a.mime_type,
    }
    if a.created is not None:
        values["created"] = a.created.astimezone(UTC).isoformat()
    return values


def _part_values(part: Part) -> dict[str, Any]:
    return {
        "conversation_id": part.conversation_id,
        "created": part.created,
        # A part that opens its group stores NULL: its group id is its own (not yet known) id.
        "part_group": None if part.part_group == part.id else part.part_group,
        "type": part.type.value,
        "author_kind": part.author.kind.value,
        "author_id": part.author.id,
        "bot_name": part.author.name,
        "sent_via": part.sent_via.value,
        "body": part.body,
        "body_json": part.body_json,
        "read": part.read,
        "attachments": [_attachment_values(a) for a in part.attachments] or None,
        "random_id": part.random_id,
        "random_kind": part.random_kind,
        "external_id": part.external_id,
        "referrer": part.referrer,
        "actions": part.actions,
        "tag": part.tag,
        "assignee_id": part.assignee_id,
    }


def _insert_parts_idempotent(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING on the (conversation, kind, random_id) unique index."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(parts_t)
        .on_conflict_do_nothing(index_elements=["conversation_id", "random_kind", "random_id"])
        .returning(parts_t.c.id)
    )


# Statements are built once: SQLAlchemy then reuses their cache keys and compiled forms.
_SELECT_STATE = select(*_STATE_COLUMNS, conv_t.c.tags)
_BY_ID = conv_t.c.id == bindparam("conversation_id")
_GET = _SELECT_STATE.where(_BY_ID, conv_t.c.app_id == bindparam("app_id"))
# The admin a write names, read with the lock: its columns, labelled apart from the state's.
_ADMIN_PREFIX = "_admin_"
_ADMIN_COLUMNS = [c.label(f"{_ADMIN_PREFIX}{c.key}") for c in person_columns(admins_t)]
# PostgreSQL: the id of the first part the write adds, taken with the lock (see insert_part).
_NEXT_PART_ID = "SELECT nextval('conversation_parts_id_seq')"
_RESERVE_PART_ID: Any = literal_column("nextval('conversation_parts_id_seq')").label(
    "_next_part_id"
)


@functools.cache
def _lock_statement(dialect: str, with_admin: bool) -> DirectSelect:
    """The conversation's state, locked; with `with_admin`, also the admin `admin_id` if of
    the conversation's app and not removed (else NULLs).

    The advisory lock on the conversation id comes first (the row lock is taken above the
    scan that computes it): waiting for it never gives the transaction an id, whereas waiting
    for a row lock may (PostgreSQL follows the row's update chain and takes one). So every
    writer of a conversation gets its transaction id only after the previous writer has
    committed, which is what orders the event log per conversation (see
    threadline/events/repository.py). The key space of one-bigint advisory locks belongs to
    conversation ids; other advisory locks use the two-integer form. On PostgreSQL it also
    reserves the id of the first part the write adds, so that the part's INSERT can travel
    with the write's other statements (see insert_part). SQLite needs no row lock: its write
    transactions are already exclusive.
    """
    columns: list[Any] = [*_STATE_COLUMNS, conv_t.c.tags]
    source: Any = conv_t
    if dialect == "postgresql":
        lock = func.pg_advisory_xact_lock(bindparam("conversation_id")).label("_locked")
        columns = [lock, *columns, _RESERVE_PART_ID]
    if with_admin:
        columns += _ADMIN_COLUMNS
        admin = of_app(admins_t, bindparam("admin_id"), conv_t.c.app_id)
        source = conv_t.outerjoin(admins_t, and_(*admin))
    statement = (
        select(*columns).select_from(source).where(_BY_ID, conv_t.c.app_id == bindparam("app_id"))
    )
    if dialect == "postgresql":
        statement = statement.with_for_update(of=conv_t)
    return DirectSelect(statement)


def _lock_many_statement() -> DirectSelect:
    """PostgreSQL: the states of several conversations of a batch, locked, each with the
    admin its write names (NULLs if none or not of the app) and a reserved part id.

    The advisory locks of all of them are taken first, in the order given (ascending ids, so
    that two batches never wait for each other in a circle), before any row lock gives the
    transaction its id: see `_lock_statement`. A conversation not of the app it is asked
    for answers no row.
    """
    wanted = (
        func.unnest(
            bindparam("conversation_ids", type_=postgresql.ARRAY(BigInteger)),
            bindparam("app_ids", type_=postgresql.ARRAY(BigInteger)),
            bindparam("admin_ids", type_=postgresql.ARRAY(BigInteger)),
            bindparam("random_kinds", type_=postgresql.ARRAY(parts_t.c.random_kind.type)),
            bindparam("random_ids", type_=postgresql.ARRAY(BigInteger)),
        )
        .table_valued(
            column("conversation_id", BigInteger),
            column("app_id", BigInteger),
            column("admin_id", BigInteger),
            column("random_kind", parts_t.c.random_kind.type),
            column("random_id", BigInteger),
        )
        .render_derived(name="wanted")
    )
    ids = (
        func.unnest(bindparam("conversation_ids", type_=postgresql.ARRAY(BigInteger)))
        .table_valued(column("id", BigInteger))
        .render_derived(name="lock_ids")
    )
    # An uncorrelated subquery: evaluated once, before the first row is locked.
    advisory = (
        select(func.count(func.pg_advisory_xact_lock(ids.c.id))).select_from(ids).scalar_subquery()
    )
    # The write's idempotency key was used already (read under the lock): a retry.
    done = (
        select(parts_t.c.id)
        .where(
            parts_t.c.conversation_id == conv_t.c.id,
            parts_t.c.random_kind == wanted.c.random_kind,
            parts_t.c.random_id == wanted.c.random_id,
        )
        .exists()
        .label("_done")
    )
    source = wanted.join(
        conv_t, and_(conv_t.c.id == wanted.c.conversation_id, conv_t.c.app_id == wanted.c.app_id)
    ).outerjoin(admins_t, and_(*of_app(admins_t, wanted.c.admin_id, conv_t.c.app_id)))
    statement = (
        select(*_STATE_COLUMNS, conv_t.c.tags, _RESERVE_PART_ID, done, *_ADMIN_COLUMNS)
        .select_from(source)
        .where(advisory >= literal_column("0"))
        .with_for_update(of=conv_t)
    )
    return DirectSelect(statement)


_LOCK_MANY = _lock_many_statement()
_GET_ANY = _SELECT_STATE.where(_BY_ID)
_UPDATE = DirectStatement(
    update(conv_t).where(conv_t.c.id == bindparam("b_conversation_id")), one_conversation=True
)
_INSERT_PART = DirectStatement(insert(parts_t).returning(parts_t.c.id))
_UNREAD_OF_CONVERSATION = (
    parts_t.c.conversation_id == bindparam("b_conversation_id"),
    parts_t.c.read.is_(False),
)
# Rendered as SQL literals (our own enum values): an expanding IN list cannot be precompiled.
_TYPES_THE_USER_READS: list[ColumnElement[str]] = [
    literal_column(f"'{t.value}'")
    for t in PartType
    if t not in HIDDEN_FROM_USER and t is not PartType.REPLY_USER
]
_MARK_READ = {
    MarkRead.USER_PARTS_BY_ADMIN: DirectStatement(
        update(parts_t)
        .where(*_UNREAD_OF_CONVERSATION, parts_t.c.type == PartType.REPLY_USER.value)
        .values(read=True),
        one_conversation=True,
    ),
    # Every part the user can see that the user did not write.
    MarkRead.ADMIN_PARTS_BY_USER: DirectStatement(
        update(parts_t)
        .where(*_UNREAD_OF_CONVERSATION, parts_t.c.type.in_(_TYPES_THE_USER_READS))
        .values(read=True),
        one_conversation=True,
    ),
}
_INSERT_PART_IDEMPOTENT = {
    d: DirectStatement(_insert_parts_idempotent(d)) for d in ("postgresql", "sqlite")
}


class ConversationRepository:
    """Conversation rows and part rows, scoped to the connection's transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.is_postgres = conn.dialect.name == "postgresql"
        self.driver = DriverConnection(conn)
        self._reserved_part_id: int | None = None
        self.locked_admins: dict[int, Admin | None] = {}
        # PostgreSQL: the words of the bodies this transaction erased, to take out of the
        # word list once its count cells are written (`forget_erased`).
        self._erased_words: list[str] = []

    async def _execute(self, statement: Any, params: dict[str, Any] | None = None) -> Any:
        """Through SQLAlchemy, after the transaction's deferred statements (so it sees them)."""
        await self.driver.flush()
        return await self.conn.execute(statement, params)

    def _select_state(self) -> Select[Any]:
        return _SELECT_STATE

    async def get(self, app_id: int, conversation_id: int) -> ConversationState | None:
        params = {"conversation_id": conversation_id, "app_id": app_id}
        row = (await self._execute(_GET, params)).first()
        return state_from_row(row) if row else None

    async def get_any(self, conversation_id: int) -> ConversationState | None:
        """By id alone, whatever the app: for maintenance commands, never for requests."""
        row = (await self._execute(_GET_ANY, {"conversation_id": conversation_id})).first()
        return state_from_row(row) if row else None

    async def lock(
        self, app_id: int, conversation_id: int, admin_id: int | None = None
    ) -> ConversationState | None:
        """The state, with the row locked until the transaction ends.

        With `admin_id`, `locked_admins` then tells that admin (None: not of this app).
        """
        params = {"conversation_id": conversation_id, "app_id": app_id}
        if admin_id is not None:
            params["admin_id"] = admin_id
        statement = _lock_statement(self.conn.dialect.name, admin_id is not None)
        rows = await self.driver.select(statement, params)
        return self.adopt(rows[0], admin_id) if rows else None

    async def lock_many(
        self, wanted: Sequence[tuple[int, int, int | None, tuple[str, int] | None]]
    ) -> dict[int, dict[str, Any]]:
        """PostgreSQL: lock several conversations, each (conversation id, app id, admin id or
        None, idempotency key or None), in one statement; their rows by conversation id, for
        `adopt` (a conversation not of its app is left out), `_done` telling whether a part
        carries the key already."""
        wanted = sorted(wanted, key=lambda w: w[0])
        params = {
            "conversation_ids": [w[0] for w in wanted],
            "app_ids": [w[1] for w in wanted],
            "admin_ids": [w[2] for w in wanted],
            "random_kinds": [w[3][0] if w[3] else None for w in wanted],
            "random_ids": [w[3][1] if w[3] else None for w in wanted],
        }
        return {row["id"]: row for row in await self.driver.select(_LOCK_MANY, params)}

    def adopt(self, row: Mapping[str, Any], admin_id: int | None) -> ConversationState:
        """The state in a row of `lock` or `lock_many`; notes the reserved part id and the
        admin `admin_id` (None: not of this app) read with it."""
        self._reserved_part_id = row.get("_next_part_id")
        if admin_id is not None:
            admin = {c.key.removeprefix(_ADMIN_PREFIX): row[c.key] for c in _ADMIN_COLUMNS}
            self.locked_admins[admin_id] = Admin(**admin) if admin["id"] is not None else None
        return state_from_mapping(row)

    async def insert(self, state: ConversationState) -> int:
        """Insert a new conversation (its `id` is ignored) and return the stored id."""
        values = _state_values(state, [c.name for c in conv_t.c if c.name not in ("id",)])
        result = await self._execute(conv_t.insert().values(values).returning(conv_t.c.id))
        return int(result.scalar_one())

    async def insert_started(self, state: ConversationState) -> int | None:
        """Insert a conversation carrying `start_random_id`; None when that key was used."""
        values = _state_values(state, [c.name for c in conv_t.c if c.name != "id"])
        stmt = self._insert(conv_t).values(values)
        stmt = stmt.on_conflict_do_nothing(index_elements=["user_id", "start_random_id"])
        result = await self._execute(stmt.returning(conv_t.c.id))
        ident = result.scalar_one_or_none()
        return int(ident) if ident is not None else None

    async def find_started(self, user_id: int, start_random_id: int) -> int | None:
        query = select(conv_t.c.id).where(
            conv_t.c.user_id == user_id, conv_t.c.start_random_id == start_random_id
        )
        ident = (await self._execute(query)).scalar_one_or_none()
        return int(ident) if ident is not None else None

    def _insert(self, table: Any) -> Any:
        return postgresql.insert(table) if self.is_postgres else sqlite.insert(table)

    async def insert_part(self, part: Part) -> int | None:
        """Insert one part; None when its (kind, random_id) was already used in the conversation.

        On PostgreSQL the INSERT is deferred (with the id `lock` reserved, or one taken
        ahead); if its (kind, random_id) turns out to be used, `NothingAdded` is raised when
        it is sent (at the latest at COMMIT). On SQLite it runs at once.
        """
        if part.random_id is None:
            stmt = _INSERT_PART
        else:
            stmt = _INSERT_PART_IDEMPOTENT[self.conn.dialect.name]
        values = _part_values(part)
        reserved, self._reserved_part_id = self._reserved_part_id, None
        if reserved is not None:
            values["id"] = reserved
            await self.driver.defer(stmt, values, must_add=part.random_id is not None)
            return reserved
        if self.is_postgres:
            # No id reserved (a second part of the write, or a new conversation's): the id is
            # taken ahead and the INSERT deferred too, so all of the write's parts go in the
            # statement that updates its count cells (their words are added at that
            # statement's end: the word list after the cells, the order of every writer;
            # see `forget_erased`).
            values["id"] = await self.driver.fetch_ahead(_NEXT_PART_ID)
            await self.driver.defer(stmt, values, must_add=part.random_id is not None)
            return int(values["id"])
        rows = await self.driver.fetch(stmt, values)
        return int(rows[0][0]) if rows else None

    async def save(self, state: ConversationState, before: ConversationState | None = None) -> None:
        """Write the state's mutable columns, unless none differs from `before` when given.

        All of them, not only those that changed: every write then sends the same statement,
        which the database plans once (under the row lock no one else changes the others).
        """
        if before is not None and all(getattr(state, n) == getattr(before, n) for n in _MUTABLE):
            return
        params = _state_values(state, _MUTABLE)
        params["b_conversation_id"] = state.id
        await self.driver.defer(_UPDATE, params)

    async def mark_read(self, conversation_id: int, mark: MarkRead) -> None:
        await self.driver.defer(_MARK_READ[mark], {"b_conversation_id": conversation_id})

    async def erase(self, conversation_id: int, now: datetime) -> None:
        await self.driver.flush()
        postgres = self.conn.dialect.name == "postgresql"
        words = await search_words.of_conversation(self.conn, conversation_id) if postgres else []
        await self._execute(
            update(parts_t)
            .where(parts_t.c.conversation_id == conversation_id)
            .values(
                body="", body_json=None, attachments=None, referrer=None, actions=None, removed=now
            )
        )
        self._erased_words += words

    async def forget_erased(self) -> None:
        """Take the erased bodies' words out of the word list, last in the transaction.

        The lock order of every writer (PostgreSQL) is: the conversation row, then the count
        cells (in one sorted order), then the word list. A write's parts add their words in
        the statement that also updates its cells, by a trigger that runs at the statement's
        end, so after the cells. An erasure locks the word list (`search_words.forget`): it
        must hold its cells first, or it would wait for the cells of a writer that waits
        for the word list, a deadlock. So the statements pending here (the cells among
        them) are sent before the word list is locked.
        """
        if not self._erased_words:
            return
        words, self._erased_words = self._erased_words, []
        await self.driver.flush()
        await search_words.forget(self.conn, words)

    async def parts(self, conversation_id: int) -> list[Part]:
        query = (
            select(parts_t)
            .where(parts_t.c.conversation_id == conversation_id)
            .order_by(parts_t.c.id)
        )
        return [part_from_row(r) for r in await self._execute(query)]

    async def parts_by_id(self, ids: Sequence[int]) -> dict[int, Part]:
        if not ids:
            return {}
        rows = await self._execute(select(parts_t).where(parts_t.c.id.in_(list(ids))))
        return {p.id: p for p in map(part_from_row, rows)}

    async def find_part(self, conversation_id: int, kind: str, random_id: int) -> Part | None:
        query = select(parts_t).where(
            parts_t.c.conversation_id == conversation_id,
            parts_t.c.random_kind == kind,
            parts_t.c.random_id == random_id,
        )
        row = (await self._execute(query)).first()
        return part_from_row(row) if row else None

    async def count_all(self) -> int:
        """How many conversations every app has (what `iter_states` walks)."""
        return int((await self._execute(select(func.count()).select_from(conv_t))).scalar_one())

    async def iter_states(self, batch: int = 500) -> AsyncIterator[list[ConversationState]]:
        """Every conversation of every app, in id order, a batch at a time."""
        last_id = 0
        while True:
            query = (
                self._select_state().where(conv_t.c.id > last_id).order_by(conv_t.c.id).limit(batch)
            )
            states = [state_from_row(r) for r in await self._execute(query)]
            if not states:
                return
            yield states
            last_id = states[-1].id

    async def parts_of_many(self, conversation_ids: Sequence[int]) -> dict[int, list[Part]]:
        grouped: dict[int, list[Part]] = {cid: [] for cid in conversation_ids}
        query = (
            select(parts_t)
            .where(parts_t.c.conversation_id.in_(list(conversation_ids)))
            .order_by(parts_t.c.id)
        )
        for row in await self._execute(query):
            part = part_from_row(row)
            grouped[part.conversation_id].append(part)
        return grouped

    async def count(self) -> int:
        return int((await self._execute(select(func.count()).select_from(conv_t))).scalar_one())
