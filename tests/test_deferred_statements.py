"""Deferred statements (DriverConnection.defer) run in order, before anything read after them,
and with the COMMIT; when one fails, the whole transaction is rolled back and the next write
works. On PostgreSQL the pending ones travel as one statement; the same expectations hold, and
a conversation write is four round trips."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import bindparam, event, insert, select, text, update
from sqlalchemy.dialects import postgresql

from tests.conftest import World
from tests.waiting import until_running
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AuthorKind
from threadline.core.errors import DomainError
from threadline.core.model import Author
from threadline.core.rules import MAX_BODY_CHARS
from threadline.db import direct
from threadline.db.direct import DirectSelect, DirectStatement, DriverConnection, NothingAdded
from threadline.db.engine import Database
from threadline.db.schema import channels, conversation_parts

_RENAME = DirectStatement(
    update(channels).where(channels.c.id == bindparam("b_id")).values(name=bindparam("b_name"))
)
_NAME = DirectSelect(select(channels.c.name).where(channels.c.id == bindparam("b_id")))
_INSERT = DirectStatement(insert(channels))


async def _name(db: Database, channel_id: int) -> str:
    async with db.read() as conn:
        name = (
            await conn.execute(select(channels.c.name).where(channels.c.id == channel_id))
        ).scalar_one()
    return str(name)


async def _channel_row(db: Database, channel_id: int) -> Any:
    async with db.read() as conn:
        return (await conn.execute(select(channels).where(channels.c.id == channel_id))).one()


async def test_deferred_statements_run_in_order_before_a_later_read(
    db: Database, world: World
) -> None:
    async with db.write() as conn:
        driver = DriverConnection(conn)
        await driver.defer(_RENAME, {"b_id": world.channel_id, "b_name": "first"})
        await driver.defer(_RENAME, {"b_id": world.channel_id, "b_name": "second"})
        # Another DriverConnection of the same transaction sees them (they run first).
        rows = await DriverConnection(conn).select(_NAME, {"b_id": world.channel_id})
        assert rows == [{"name": "second"}]
        await driver.defer(_RENAME, {"b_id": world.channel_id, "b_name": "third"})
    assert await _name(db, world.channel_id) == "third"


async def test_a_failing_deferred_statement_rolls_everything_back(
    db: Database, world: World
) -> None:
    row = await _channel_row(db, world.channel_id)
    duplicate = dict(row._mapping)  # the same primary key again

    async def rename_then_insert_a_duplicate() -> None:
        async with db.write() as conn:
            driver = DriverConnection(conn)
            await driver.defer(_RENAME, {"b_id": world.channel_id, "b_name": "renamed"})
            await driver.defer(_INSERT, duplicate)

    # The driver's own error, at COMMIT.
    with pytest.raises(Exception, match=r"(?i)unique") as failed:
        await rename_then_insert_a_duplicate()
    assert "Integrity" in type(failed.value).__name__ or "Unique" in type(failed.value).__name__
    assert await _name(db, world.channel_id) == "Sales"
    # The connection is usable: the next write commits.
    async with db.write() as conn:
        await DriverConnection(conn).defer(_RENAME, {"b_id": world.channel_id, "b_name": "ok"})
    assert await _name(db, world.channel_id) == "ok"


async def test_a_rolled_back_transaction_drops_what_it_deferred(db: Database, world: World) -> None:
    class Stop(Exception):
        pass

    async def rename_then_fail() -> None:
        async with db.write() as conn:
            await DriverConnection(conn).defer(
                _RENAME, {"b_id": world.channel_id, "b_name": "never"}
            )
            raise Stop

    with pytest.raises(Stop):
        await rename_then_fail()
    # A transaction after it: the dropped statement must not run there either.
    async with db.write() as conn:
        await DriverConnection(conn).select(_NAME, {"b_id": world.channel_id})
    assert await _name(db, world.channel_id) == "Sales"


@contextmanager
def _sent(db: Database) -> Iterator[list[str]]:
    """The statements sent in this block: the driver's own and SQLAlchemy's."""
    sent: list[str] = []

    def on_direct(sql: str, _args: list[Any]) -> None:
        sent.append(sql)

    def on_execute(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        sent.append(sql)

    engine = db.write_engine.sync_engine
    direct.observers.append(on_direct)
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield sent
    finally:
        direct.observers.remove(on_direct)
        event.remove(engine, "before_cursor_execute", on_execute)


async def test_a_statement_through_sqlalchemy_behind_pending_ones_is_refused(
    db: Database, world: World
) -> None:
    # It would overtake them and not see their changes; the write fails and changes nothing.
    async def rename_then_read_through_sqlalchemy() -> None:
        async with db.write() as conn:
            await DriverConnection(conn).defer(
                _RENAME, {"b_id": world.channel_id, "b_name": "pending"}
            )
            await conn.execute(select(channels.c.name))

    with pytest.raises(RuntimeError, match="deferred statements are pending"):
        await rename_then_read_through_sqlalchemy()
    assert await _name(db, world.channel_id) == "Sales"


async def test_only_statements_that_cannot_see_each_other_travel_together(
    db: Database, world: World
) -> None:
    row = await _channel_row(db, world.channel_id)
    new_channel = {**row._mapping, "id": row.id + 1000, "name": "Added"}
    with _sent(db) as sent:
        async with db.write() as conn:
            driver = DriverConnection(conn)
            await driver.defer(_RENAME, {"b_id": world.channel_id, "b_name": "one"})
            await driver.defer(_INSERT, new_channel)  # adds a row: joins the rename
            # Reads what the first rename wrote: the pending ones are sent before it.
            await driver.defer(_RENAME, {"b_id": world.channel_id, "b_name": "two"})
            await driver.defer(_RENAME, {"b_id": new_channel["id"], "b_name": "Added 2"})
    assert await _name(db, world.channel_id) == "two"
    assert await _name(db, new_channel["id"]) == "Added 2"
    writes = [s for s in sent if s not in ("BEGIN", "BEGIN IMMEDIATE", "COMMIT")]
    if db.is_sqlite:
        assert len(writes) == 4  # one by one, in the COMMIT's hop
    else:
        assert len(writes) == 3
        assert writes[0].startswith("WITH w0 AS (UPDATE")
        assert "w1 AS (INSERT" in writes[0]
        assert writes[1].startswith("UPDATE")
        assert writes[2].startswith("UPDATE")


_ADD_PART_ONCE = DirectStatement(
    postgresql.insert(conversation_parts)
    .on_conflict_do_nothing(index_elements=["conversation_id", "random_kind", "random_id"])
    .returning(conversation_parts.c.id)
)


async def test_a_deferred_insert_that_must_add_and_skips_rolls_everything_back(
    db: Database, world: World
) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite inserts answer their rows at once: nothing to check at COMMIT")
    reply = ev.UserReply(body="first", random_id=7)
    first = await service.start_by_user(db, world.app_id, world.user_id, reply)
    part = first.parts[0]
    again = {
        "conversation_id": part.conversation_id, "created": part.created, "type": "reply_user",
        "author_kind": "user", "author_id": world.user_id, "sent_via": "api", "body": "again",
        "read": False, "random_id": part.random_id, "random_kind": part.random_kind,
    }  # fmt: skip

    async def rename_then_add_the_part_again() -> None:
        async with db.write() as conn:
            driver = DriverConnection(conn)
            await driver.defer(_RENAME, {"b_id": world.channel_id, "b_name": "never"})
            await driver.defer(_ADD_PART_ONCE, again, must_add=True)

    with pytest.raises(NothingAdded):
        await rename_then_add_the_part_again()
    assert await _name(db, world.channel_id) == "Sales"
    assert [p.body for p in await service.get_parts(db, world.app_id, first.state.id)] == ["first"]


async def test_a_reply_is_four_round_trips_on_postgresql(db: Database, world: World) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite: statements go to its thread in hops, not round trips")
    started = await service.start_by_user(
        db, world.app_id, world.user_id, ev.UserReply(body="hello")
    )
    conversation = started.state.id
    with _sent(db) as sent:
        await service.perform(db, world.app_id, conversation, ev.UserReply(body="more"))
    # BEGIN, the locking read (which reserves the part's id), every write at once, COMMIT.
    assert len(sent) == 4, sent
    assert sent[0] == "BEGIN"
    assert sent[-1] == "COMMIT"
    assert "nextval" in sent[1]
    assert sent[2].startswith("WITH")
    admin = Author(AuthorKind.ADMIN, world.admin_id)
    with _sent(db) as sent:
        done = await service.perform(
            db, world.app_id, conversation, ev.AdminReply(author=admin, body="answer")
        )
    # The same: the admin is read with the lock, the user's parts are marked read in the batch.
    assert len(sent) == 4, sent
    assert "admins" in sent[1]
    parts = await service.get_parts(db, world.app_id, conversation)
    assert [(p.body, p.read) for p in parts] == [("hello", True), ("more", True), ("answer", False)]
    assert parts[-1].id == done.parts[0].id == done.state.part_last_id


async def test_a_refused_event_after_deferred_writes_answers_its_own_error(
    db: Database, world: World
) -> None:
    # The first event leaves writes pending (marking read, its part); the second is refused,
    # and looking up its random_id (a retry?) reads through SQLAlchemy behind them.
    started = await service.start_by_user(
        db, world.app_id, world.user_id, ev.UserReply(body="hello")
    )
    admin = Author(AuthorKind.ADMIN, world.admin_id)
    with pytest.raises(DomainError):
        await service.perform(
            db,
            world.app_id,
            started.state.id,
            ev.AdminReply(author=admin, body="answer"),
            ev.UserReply(body="x" * (MAX_BODY_CHARS + 1), random_id=5),
        )
    assert [p.body for p in await service.get_parts(db, world.app_id, started.state.id)] == [
        "hello"
    ]
    state = await service.get_conversation(db, world.app_id, started.state.id)
    assert state.admin_unread_count == 1


async def test_a_write_cancelled_during_a_statement_ends_with_the_cancellation(
    db: Database, world: World
) -> None:
    # Cancelling a statement breaks the connection under SQLAlchemy; ending the transaction
    # must not replace the cancellation by an error of that connection (a task that is
    # stopped must stop), and the next write gets a working connection.
    if db.is_sqlite:
        pytest.skip("SQLite runs a statement to its end in its thread: nothing is broken")
    running = asyncio.Event()

    async def slow_write() -> None:
        async with db.write() as conn:
            await DriverConnection(conn).defer(
                _RENAME, {"b_id": world.channel_id, "b_name": "never"}
            )
            await DriverConnection(conn).flush()
            running.set()
            await conn.execute(text("SELECT pg_sleep(5)"))

    task = asyncio.create_task(slow_write())
    await running.wait()
    await until_running(db, "SELECT pg_sleep(5)")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with db.write() as conn:
        await DriverConnection(conn).defer(_RENAME, {"b_id": world.channel_id, "b_name": "ok"})
    assert await _name(db, world.channel_id) == "ok"
