"""Deferred statements (DriverConnection.defer) run in order, before anything read after them,
and with the COMMIT; when one fails, the whole transaction is rolled back and the next write
works. On PostgreSQL they run at once; the same expectations hold."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, insert, select, update

from tests.conftest import World
from threadline.db.direct import DirectSelect, DirectStatement, DriverConnection
from threadline.db.engine import Database
from threadline.db.schema import channels

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
    async with db.read() as conn:
        row = (await conn.execute(select(channels).where(channels.c.id == world.channel_id))).one()
    duplicate = dict(row._mapping)  # the same primary key again

    async def rename_then_insert_a_duplicate() -> None:
        async with db.write() as conn:
            driver = DriverConnection(conn)
            await driver.defer(_RENAME, {"b_id": world.channel_id, "b_name": "renamed"})
            await driver.defer(_INSERT, duplicate)

    # The driver's own error (sqlite3's at COMMIT; asyncpg's at once, as PostgreSQL runs it).
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
