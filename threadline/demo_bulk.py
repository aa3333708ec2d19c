"""Demo data at scale: the demo's scenarios, computed in memory, loaded in bulk.

`threadline demo --conversations N` for a large N plays the same scenarios as the small
demo (so every state the spec names is there), with more operators, channels and tags,
longer conversations now and then, and free text that gives search both common and rare
words. Each event goes through the pure rules (`threadline.core.rules.apply`) exactly as
the engine would apply it, on an in-memory conversation; parts get their ids as storage
would give them. Nothing is estimated: the derived fields are the engine's, so
`threadline check` finds no drift, and the inbox's tag rows and count cells are computed
from the final conversations with the same code the write path uses.

Rows go in by batch: PostgreSQL `COPY`, SQLite one multi-row insert transaction. The
demo assumes nobody else writes to the database while it loads (ids are taken from the
sequences by block).
"""

from __future__ import annotations

import asyncio
import functools
import json
import operator
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.apps import service as apps
from threadline.core import events as ev
from threadline.core import rules
from threadline.core.enums import (
    HIDDEN_FROM_USER,
    AuthorKind,
    MessageStatus,
    PartType,
)
from threadline.core.model import Author, ConversationState, Part
from threadline.core.rules import MarkRead
from threadline.db.direct import DriverConnection
from threadline.db.engine import Database
from threadline.db.schema import (
    conversation_parts,
    conversation_tags,
    conversations,
    messages,
    users,
)
from threadline.db.types import UTCDateTime
from threadline.inbox import words as search_words
from threadline.inbox.maintain import (
    KIND_WATERMARK,
    VIEW_COLUMNS,
    add_to_counts,
    deltas,
    shard_of,
    tag_row_values,
    to_micros,
)

# From this many conversations on, `demo.fill` takes the bulk path.
BULK_FROM = 2_000
# Conversations computed and loaded together.
BATCH = 5_000
# From this many conversations on, batches are computed and loaded by worker processes.
PARALLEL_FROM = 50_000
# The bulk demo's organisation, the same at every size (so sizes compare).
OPERATOR_COUNT = 40
EXTRA_CHANNELS = (
    "VIP", "Partners", "Enterprise", "Returns", "Onboarding", "Mobile app", "API",
    "Germany", "France", "Spain", "Italy", "Nordics",
)  # fmt: skip
EXTRA_TAGS = (
    "refund", "invoice", "upgrade", "downgrade", "trial", "churn-risk", "feedback", "bug",
    "feature-request", "shipping-delay", "damaged", "lost-parcel", "password", "2fa",
    "sso", "webhooks", "mobile", "android", "ios", "chrome", "safari", "gdpr", "security",
    "partner", "reseller", "wholesale", "press", "hiring", "spam", "duplicate",
    "escalated", "callback", "angry", "happy", "follow-up",
)  # fmt: skip
# Free text: pseudo-words drawn by Zipf's law, so that a few words are in many parts and
# most are in a handful (a "rare word" for search).
VOCABULARY = 20_000
_SYLLABLES = (
    "ka", "lo", "mi", "ne", "tor", "vas", "ri", "pel", "du", "sen", "gra", "fi", "mon",
    "zu", "bel", "ta", "qui", "ro", "sha", "den", "vi", "lun", "ko", "mar",
)  # fmt: skip
_TYPES_THE_USER_READS = frozenset(
    t for t in PartType if t not in HIDDEN_FROM_USER and t is not PartType.REPLY_USER
)


def pseudo_words(count: int = VOCABULARY, seed: int = 1) -> list[str]:
    """`count` distinct made-up words, the same ones every time."""
    rng = random.Random(seed)
    found: dict[str, None] = {}
    while len(found) < count:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        found.setdefault(word, None)
    return list(found)


class Vocabulary:
    """Made-up words and their Zipf weights (built once per process: see `vocabulary`)."""

    def __init__(self) -> None:
        self.words = pseudo_words()
        total = 0.0
        self.cumulative: list[float] = []
        for rank in range(1, len(self.words) + 1):
            total += 1.0 / rank
            self.cumulative.append(total)

    def sentence(self, rng: random.Random) -> str:
        words = rng.choices(self.words, cum_weights=self.cumulative, k=rng.randint(3, 9))
        return " ".join(words).capitalize() + rng.choice((".", ".", "?", "!"))


@functools.cache
def vocabulary() -> Vocabulary:
    return Vocabulary()


class IdBlock:
    """Ids handed out in order from a block taken from the table's sequence."""

    def __init__(self, first: int) -> None:
        self.next = first

    def take(self) -> int:
        ident = self.next
        self.next += 1
        return ident


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


_CONVERSATION_COLUMNS = [c.name for c in conversations.c]
_JSON_COLUMNS = frozenset({"tags", "body_json", "attachments", "actions", "props"})
_PART_COLUMNS = [
    "id", "conversation_id", "created", "edited", "removed", "part_group", "type",
    "author_kind", "author_id", "bot_name", "sent_via", "body", "body_json", "read",
    "attachments", "random_id", "random_kind", "external_id", "tag", "assignee_id", "referrer",
    "actions",
]  # fmt: skip
assert set(_PART_COLUMNS) == {c.name for c in conversation_parts.c}


class Loader:
    """Rows in, by table: PostgreSQL `COPY`, SQLite a multi-row insert."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.postgres = conn.dialect.name == "postgresql"

    async def load(self, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self.postgres:
            raw = await self.conn.get_raw_connection()
            driver: Any = raw.driver_connection
            await driver.copy_records_to_table(table.name, records=rows, columns=list(columns))
            return
        # SQLite: the stored forms (fixed-width UTC text, JSON text), one executemany.
        datetimes = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, UTCDateTime)]
        jsons = [i for i, c in enumerate(columns) if c in _JSON_COLUMNS]
        stored = []
        for row in rows:
            values = list(row)
            for i in datetimes:
                if values[i] is not None:
                    values[i] = values[i].astimezone(UTC).isoformat(" ", "microseconds")[:26]
            for i in jsons:
                if values[i] is not None and not isinstance(values[i], str):
                    values[i] = _json(values[i])
            stored.append(tuple(values))
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608  (our own table and column names)
        await self.conn.exec_driver_sql(sql, stored)


_state_columns = operator.attrgetter(*_CONVERSATION_COLUMNS)
_TAGS_AT = _CONVERSATION_COLUMNS.index("tags")


def conversation_row(state: ConversationState, postgres: bool) -> tuple[Any, ...]:
    """The conversation's row, columns in table order (field names are column names)."""
    row = list(_state_columns(state))
    row[_TAGS_AT] = _json(list(state.tags)) if postgres else list(state.tags)
    return tuple(row)


def part_row(p: Part, postgres: bool) -> tuple[Any, ...]:
    """The part's row, columns in `_PART_COLUMNS` order (as the repository stores it)."""
    attachments: Any = (
        [
            {"id": a.id, "size": a.size, "filename": a.filename, "mime_type": a.mime_type}
            for a in p.attachments
        ]
        if p.attachments
        else None
    )
    body_json: Any = p.body_json
    actions: Any = p.actions
    if postgres:
        body_json, attachments, actions = _json(body_json), _json(attachments), _json(actions)
    return (
        p.id, p.conversation_id, p.created, p.edited, p.removed,
        None if p.part_group == p.id else p.part_group, p.type, p.author.kind, p.author.id,
        p.author.name, p.sent_via, p.body, body_json, p.read, attachments, p.random_id,
        p.random_kind, p.external_id, p.tag, p.assignee_id, p.referrer, actions,
    )  # fmt: skip


def apply_events(
    state: ConversationState,
    parts: list[Part],
    events: Iterable[ev.Event],
    now: datetime,
    part_ids: IdBlock,
) -> ConversationState:
    """What `conversations.service.perform` stores for `events`, computed in memory."""
    for event in events:
        change = rules.apply(state, event, now)
        if not change.changed:
            continue
        change.with_ids([part_ids.take() for _ in change.parts])
        parts.extend(change.parts)
        if change.mark_read is MarkRead.USER_PARTS_BY_ADMIN:
            for part in parts:
                if part.type is PartType.REPLY_USER:
                    part.read = True
        elif change.mark_read is MarkRead.ADMIN_PARTS_BY_USER:
            for part in parts:
                if part.type in _TYPES_THE_USER_READS:
                    part.read = True
        if change.erase:
            for part in parts:
                part.body, part.body_json, part.attachments, part.removed = "", None, (), now
                part.referrer = part.actions = None
        state = change.state
    return state


async def _first_free_id(conn: AsyncConnection, table: Table, reserve: int) -> int:
    """The first of `reserve` ids nobody else will take (PostgreSQL: from the sequence)."""
    if conn.dialect.name == "postgresql":
        sequence = f"{table.name}_id_seq"
        first = int((await conn.execute(text(f"SELECT nextval('{sequence}')"))).scalar_one())
        await conn.execute(
            text(f"SELECT setval('{sequence}', :last)"), {"last": first + reserve - 1}
        )
        return first
    return int((await conn.execute(select(func.max(table.c.id)))).scalar_one() or 0) + 1


async def load_people(
    db: Database,
    app_id: int,
    count: int,
    make: Callable[[int], tuple[str, dict[str, Any], datetime]],
) -> list[int]:
    """`count` users made by `make(index)` -> (site id, props, created); their ids."""
    async with db.write() as conn:
        loader = Loader(conn)
        first = await _first_free_id(conn, users, count)
        rows = []
        for index in range(count):
            site_id, props, created = make(index)
            stored = _json(props) if loader.postgres else props
            rows.append((first + index, app_id, site_id, stored, created, None))
        await loader.load(users, ["id", "app_id", "user_id", "props", "created", "removed"], rows)
    return [first + i for i in range(count)]


# Part ids per conversation of a batch: far more than they ever have (about five each).
PARTS_PER_CONVERSATION = 100


@dataclass(frozen=True, slots=True)
class Blocks:
    """Where each batch's ids start: blocks taken once, so batches never collide."""

    size: int
    conversation_base: int
    part_base: int
    message_base: int

    def conversations(self, batch: int) -> int:
        return self.conversation_base + batch * self.size

    def parts(self, batch: int) -> int:
        return self.part_base + batch * self.size * PARTS_PER_CONVERSATION

    def messages(self, batch: int) -> int:
        return self.message_base + batch * self.size


async def take_blocks(db: Database, batches: int, size: int = BATCH) -> Blocks:
    """Blocks of ids for `batches` batches of `size` conversations."""
    async with db.write() as conn:
        return Blocks(
            size,
            await _first_free_id(conn, conversations, batches * size),
            await _first_free_id(conn, conversation_parts, batches * size * PARTS_PER_CONVERSATION),
            await _first_free_id(conn, messages, batches * size),
        )


def check_block(blocks: Blocks, batch: int, next_part: int, next_message: int) -> None:
    if next_part > blocks.parts(batch + 1) or next_message > blocks.messages(batch + 1):
        raise RuntimeError(f"demo batch {batch} used more ids than its block holds")


async def create_organisation(db: Database, app_id: int) -> tuple[list[int], list[str]]:
    """More operators and channels: their ids, and the channel names."""
    admin_ids = [
        await apps.create_admin(db, app_id, f"Operator {i + 1}", email=f"op{i + 1}@example.com")
        for i in range(OPERATOR_COUNT)
    ]
    names = []
    for name in EXTRA_CHANNELS:
        await apps.create_channel(db, app_id, name)
        names.append(name)
    return admin_ids, names


@dataclass(slots=True)
class BatchSummary:
    """What the process that loads a batch tells the one that finishes the demo."""

    conversations: int
    scenarios: Counter[str]
    counts: Counter[tuple[int, Any]]


class Batch:
    """The rows of a batch of conversations, and what they add to each count cell."""

    def __init__(self, postgres: bool, watermark: datetime | None = None) -> None:
        self.postgres = postgres
        # The snoozed cells count the snoozes that end after this (see inbox.maintain).
        self.watermark = None if watermark is None else to_micros(watermark)
        self.conversations: list[tuple[Any, ...]] = []
        self.parts: list[tuple[Any, ...]] = []
        self.messages: list[tuple[Any, ...]] = []
        self.tags: list[tuple[Any, ...]] = []
        self.counts: Counter[tuple[int, Any]] = Counter()
        self.scenarios: Counter[str] = Counter()

    def add(self, state: ConversationState, parts: list[Part]) -> None:
        self.conversations.append(conversation_row(state, self.postgres))
        self.parts.extend([part_row(p, self.postgres) for p in parts])
        if state.tags:
            values = tag_row_values(state)
            row = tuple(values[c] for c in _TAG_VALUE_COLUMNS)
            self.tags.extend((state.id, tag, state.app_id, *row) for tag in state.tags)
        shard = shard_of(state.id, "postgresql" if self.postgres else "sqlite")
        for cell, n in deltas(None, state, self.watermark):
            self.counts[(shard, cell)] += n

    def tables(self) -> list[tuple[Table, Sequence[str], list[tuple[Any, ...]]]]:
        return [
            (messages, _MESSAGE_COLUMNS, self.messages),
            (conversations, _CONVERSATION_COLUMNS, self.conversations),
            (conversation_parts, _PART_COLUMNS, self.parts),
            (conversation_tags, _TAG_COLUMNS, self.tags),
        ]

    async def store(self, conn: AsyncConnection) -> None:
        loader = Loader(conn)
        for table, columns, rows in self.tables():
            await loader.load(table, columns, rows)

    def summary(self) -> BatchSummary:
        return BatchSummary(len(self.conversations), self.scenarios, self.counts)


async def copy_batch(url: str, batch: Batch) -> None:
    """Load a batch into PostgreSQL over a connection of its own (in a worker process)."""
    import asyncpg

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for table, columns, rows in batch.tables():
                if rows:
                    await conn.copy_records_to_table(
                        table.name, records=rows, columns=list(columns)
                    )
    finally:
        await conn.close()


async def finish(
    db: Database,
    app_id: int,
    blocks: Blocks,
    summaries: Sequence[BatchSummary],
    watermark: datetime | None = None,
) -> None:
    """Add every batch's count cells, and the watermark they were counted against, in one
    transaction."""
    total: Counter[tuple[int, Any]] = Counter()
    for summary in summaries:
        total.update(summary.counts)
    by_shard: dict[int, list[Any]] = {}
    for (shard, cell), n in sorted(total.items()):
        if n:
            by_shard.setdefault(shard, []).append((cell, n))
    async with db.write() as conn:
        driver = DriverConnection(conn)
        for shard, changes in by_shard.items():
            await add_to_counts(driver, app_id, shard, changes)
        if watermark is not None:
            mark = (KIND_WATERMARK, "", False, 0, 0, False)
            await add_to_counts(driver, app_id, 0, [(mark, to_micros(watermark))])


def workers_for(db: Database, conversations: int) -> int:
    """Worker processes for the bulk load: PostgreSQL takes parallel loads, SQLite one
    writer; small demos are not worth starting processes for."""
    if db.is_sqlite or conversations < PARALLEL_FROM:
        return 1
    return max(1, min(2, os.cpu_count() or 1))


_TAG_VALUE_COLUMNS = ("inbox", *VIEW_COLUMNS)
_TAG_COLUMNS = ("conversation_id", "tag", "app_id", *_TAG_VALUE_COLUMNS)
_MESSAGE_COLUMNS = [
    "id", "app_id", "type", "reply_type", "recipient_type", "sender_id", "admin_id", "body",
    "created",
]  # fmt: skip


def status_path(rng: random.Random, statuses: Sequence[MessageStatus]) -> list[MessageStatus]:
    """Delivery goes created -> rendered -> sent -> its final status (or fails early)."""
    final = rng.choice(list(statuses))
    if final in (MessageStatus.DROPPED, MessageStatus.ERROR):
        return [MessageStatus.RENDERED, final]
    path = [MessageStatus.RENDERED, MessageStatus.SENT]
    if final is not MessageStatus.SENT:
        path.append(final)
    return path


def later(now: datetime, rng: random.Random, gap: tuple[int, int], latest: datetime) -> datetime:
    step = timedelta(minutes=rng.randint(*gap), seconds=rng.random())
    return min(now + step, latest)


def admin_author(admin_id: int) -> Author:
    return Author(AuthorKind.ADMIN, admin_id)


_BULK_TABLES = ("conversations", "conversation_parts", "conversation_tags", "users", "messages")


@dataclass(slots=True)
class Aside:
    """Indexes and foreign keys dropped for a bulk load, to be created again after it; and
    whether the word list's trigger was switched off (the list is filled once at the end)."""

    indexes: list[str]
    foreign_keys: list[tuple[str, str, str]]
    word_list: bool = False


# PostgreSQL's word list (threadline.inbox.words) has a trigger; one statement filling it
# from every body (`search_words.FILL`) costs much less than the trigger once per part.
_WORDS_TRIGGER = "search_words_add"


async def set_aside(db: Database) -> Aside:
    """PostgreSQL, no conversation yet: drop the secondary indexes and the foreign keys of
    the tables a bulk load fills (one sorted index build, one join to check each key, are
    much faster than millions of insertions checked one by one). Else nothing."""
    aside = Aside([], [])
    if db.is_sqlite:
        return aside
    async with db.write() as conn:
        if (await conn.execute(select(conversations.c.id).limit(1))).first() is not None:
            return aside
        tables = {"tables": list(_BULK_TABLES)}
        rows = await conn.execute(
            text(
                "SELECT k.conrelid::regclass::text AS tab, k.conname, "
                "pg_get_constraintdef(k.oid) AS definition FROM pg_constraint k "
                "WHERE k.contype = 'f' AND k.conrelid::regclass::text = ANY(:tables) "
                "ORDER BY k.conname"
            ),
            tables,
        )
        aside.foreign_keys = [(str(r.tab), str(r.conname), str(r.definition)) for r in rows]
        rows = await conn.execute(
            text(
                "SELECT c.relname AS name, pg_get_indexdef(c.oid) AS definition FROM pg_index x "
                "JOIN pg_class c ON c.oid = x.indexrelid "
                "WHERE x.indrelid::regclass::text = ANY(:tables) AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid) "
                "ORDER BY c.relname"
            ),
            tables,
        )
        named = [(str(r.name), str(r.definition)) for r in rows]
        for table, name, _ in aside.foreign_keys:
            await conn.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
        for name, _ in named:
            await conn.execute(text(f'DROP INDEX "{name}"'))
        aside.indexes = [definition for _, definition in named]
        await conn.execute(text(f"ALTER TABLE conversation_parts DISABLE TRIGGER {_WORDS_TRIGGER}"))
        aside.word_list = True
    return aside


async def restore(db: Database, aside: Aside) -> None:
    """Create again what `set_aside` dropped, exactly as it was: the indexes two at a
    time (the text indexes take longest), then the foreign keys."""
    if not aside.indexes and not aside.foreign_keys and not aside.word_list:
        return
    queue = sorted(aside.indexes, key=lambda d: " gin " not in d.lower())
    if aside.word_list:
        queue.insert(1, search_words.FILL)

    async def builder() -> None:
        async with db.write_engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(text("SET maintenance_work_mem = '256MB'"))
            while queue:
                await auto.execute(text(queue.pop(0)))

    await asyncio.gather(builder(), builder())
    async with db.write_engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table, name, definition in aside.foreign_keys:
            await auto.execute(text(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'))
        if aside.word_list:
            await auto.execute(
                text(f"ALTER TABLE conversation_parts ENABLE TRIGGER {_WORDS_TRIGGER}")
            )


async def analyze(db: Database) -> None:
    """Fresh planner statistics (and, on PostgreSQL, a vacuumed visibility map, so that
    index-only scans need no table visits) after a bulk load."""
    if db.is_sqlite:
        async with db.write() as conn:
            await conn.execute(text("ANALYZE"))
        return
    tables = (
        "conversations, conversation_parts, conversation_tags, inbox_counts, users, search_words"
    )
    async with db.write_engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.execute(text(f"VACUUM (ANALYZE) {tables}"))
