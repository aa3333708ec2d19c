"""Stream caps across processes: open streams are counted in the database (PostgreSQL
without Redis) or in Redis, so `serve --workers 2` holds one cap, not one per process; a
crashed process's slots come free when their leases run out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import select, update
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import World, redis_url
from tests.events.live import WAIT
from tests.faults.infra import Server
from tests.waiting import until
from threadline.db.engine import Database
from threadline.db.schema import stream_slots
from threadline.events.slots import DatabaseSlots, MemorySlots, RedisSlots, Slots, utcnow
from threadline.widget import service as widget

LIMITS = {"token:a": 3, "address:192.0.2.1": 5}


async def fill(slots: Slots, limits: dict[str, int], count: int) -> list[str]:
    taken = []
    for _ in range(count):
        slot = await slots.take(limits)
        assert slot is not None
        taken.append(slot)
    return taken


async def check_shared(first: Slots, second: Slots, renew_second: bool = True) -> None:
    """Two processes' slots: one cap between them."""
    held = await fill(first, LIMITS, 2)
    held += await fill(second, LIMITS, 1)
    assert await first.take(LIMITS) is None
    assert await second.take(LIMITS) is None
    # Another token from the same address: up to the address's 5.
    other = {"token:b": 3, "address:192.0.2.1": 5}
    await fill(second, other, 2)
    assert await first.take(other) is None
    # Releasing frees a place for either process.
    await first.release(held[0])
    assert await second.take(LIMITS) is not None
    assert await first.take(LIMITS) is None
    if renew_second:
        await second.renew()
    # A key without a limit is not counted against.
    assert await first.take({"token:c": 0, "address:198.51.100.1": 1}) is not None


async def lease_end(db: Database, slot: str) -> datetime:
    async with db.read() as conn:
        query = select(stream_slots.c.expires).where(stream_slots.c.slot == slot)
        end: datetime = (await conn.execute(query)).scalar_one()
        return end


async def test_memory_slots_count_in_one_process() -> None:
    slots = MemorySlots()
    held = await fill(slots, LIMITS, 3)
    assert await slots.take(LIMITS) is None
    await slots.release(held[0])
    assert await slots.take(LIMITS) is not None


async def test_database_slots_are_shared_between_processes(db_url: str, world: World) -> None:
    first, second = Database(db_url), Database(db_url)
    try:
        await check_shared(DatabaseSlots(first), DatabaseSlots(second))
    finally:
        await first.dispose()
        await second.dispose()


async def test_database_slots_of_a_crashed_process_come_free(db_url: str, world: World) -> None:
    first, second = Database(db_url), Database(db_url)
    try:
        crashed = DatabaseSlots(first)
        await fill(crashed, LIMITS, 3)
        alive = DatabaseSlots(second)
        assert await alive.take(LIMITS) is None
        await first.dispose()  # it never renews nor releases again
        # Its leases run out (moved to the past rather than waited for).
        async with second.write() as conn:
            await conn.execute(
                update(stream_slots)
                .where(stream_slots.c.slot.in_(crashed.held))
                .values(expires=utcnow() - timedelta(seconds=1))
            )
        assert await alive.take(LIMITS) is not None
        # A live process renews its leases: each renewal moves their end on.
        renewing = DatabaseSlots(second, lease_seconds=30.0)
        (slot,) = await fill(renewing, {"token:r": 1}, 1)
        before = await lease_end(second, slot)
        await until(lambda: utcnow() > before - timedelta(seconds=29), "time to pass", WAIT)
        await renewing.renew()
        assert await lease_end(second, slot) > before
    finally:
        await first.dispose()
        await second.dispose()


async def test_redis_slots_are_shared_between_processes(redis_pair: list[Redis]) -> None:
    namespace = f"test_{secrets.token_hex(6)}"
    first, second = (RedisSlots(c, namespace) for c in redis_pair)
    await check_shared(first, second)


async def test_redis_slots_of_a_crashed_process_come_free(redis_pair: list[Redis]) -> None:
    namespace = f"test_{secrets.token_hex(6)}"
    crashed = RedisSlots(redis_pair[0], namespace)
    alive = RedisSlots(redis_pair[1], namespace)
    await fill(crashed, LIMITS, 3)
    assert await alive.take(LIMITS) is None
    # The crashed process's leases run out (moved to the past rather than waited for).
    past = utcnow().timestamp() - 1
    for slot, names in crashed.held.items():
        for name in names:
            await redis_pair[1].zadd(name, {slot: past}, xx=True)
    assert await alive.take(LIMITS) is not None
    # A live process's renewal moves its leases' end on.
    (slot,) = await fill(alive, {"token:r": 1}, 1)
    key = f"{namespace}:streams:token:r"
    before = await redis_pair[1].zscore(key, slot)
    assert before is not None
    taken = before - alive.lease
    await until(lambda: utcnow().timestamp() > taken + 0.01, "time to pass", WAIT)
    await alive.renew()
    after = await redis_pair[1].zscore(key, slot)
    assert after is not None
    assert after > before


# --- A real server of two worker processes ----------------------------------------------


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    found.add(target[8:-1])
    return found


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    kids.append(int(entry))
    return kids


def _server_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the server's end of a loopback TCP connection from `client_port`."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if (
                    int(local.rsplit(":", 1)[1], 16) == server_port
                    and int(remote.rsplit(":", 1)[1], 16) == client_port
                ):
                    return inode
    return None


def worker_of(server: Server, sock: ClientConnection) -> int | None:
    """Which worker process serves this WebSocket."""
    assert server.process is not None
    inode = _server_inode(server.port, sock.local_address[1])
    if inode is None:
        return None
    for pid in _children(server.process.pid):
        if inode in _socket_inodes(pid):
            return pid
    return None


@pytest.fixture(params=["database", "redis"])
def shared_by(request: pytest.FixtureRequest, db: Database) -> dict[str, str]:
    if db.is_sqlite:
        pytest.skip("SQLite serves from one process")
    if request.param == "redis":
        return {
            "THREADLINE_REDIS_URL": redis_url(),
            "THREADLINE_BUS_CHANNEL": f"test_{secrets.token_hex(6)}",
        }
    return {}


async def test_two_workers_hold_one_cap(
    db_url: str, world: World, db: Database, tmp_path: Path, shared_by: dict[str, str]
) -> None:
    visitor = await widget.open_session(db, world.app_id, site_user_id=None, user_hash=None)
    channels = f"conversation.{world.app_id}.{visitor.visitor.user_id}"
    protocols = ["threadline", f"token.{visitor.token}"]
    server = await asyncio.to_thread(
        Server,
        db_url,
        tmp_path,
        workers=2,
        THREADLINE_REALTIME_MAX_STREAMS_PER_TOKEN="3",
        THREADLINE_REALTIME_MAX_STREAMS_PER_ADDRESS="0",
        **shared_by,
    )
    url = f"ws://127.0.0.1:{server.port}/websocket/{channels}"
    try:
        async with contextlib.AsyncExitStack() as stack:

            async def try_open() -> ClientConnection:
                sock = await stack.enter_async_context(connect(url, subprotocols=protocols))  # type: ignore[arg-type]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sock.recv(), 0.2)
                return sock

            async def opened() -> ClientConnection:
                """A stream let in (a place freed a moment ago may take the server a moment
                to see)."""
                got: list[ClientConnection] = []

                async def admitted() -> bool:
                    sock = await try_open()
                    if sock.close_code is None:
                        got.append(sock)
                        return True
                    assert sock.close_code == 3429, sock.close_code
                    return False

                await until(admitted, "a stream to be let in", WAIT)
                return got[0]

            # Hold the cap's three streams spread over both workers: each worker then holds
            # fewer than three, so a per-process count would let the next one in.
            held: list[ClientConnection] = []
            for _ in range(40):
                while len(held) < 3:
                    held.append(await opened())
                if len({worker_of(server, s) for s in held} - {None}) == 2:
                    break
                await held.pop(0).close()  # try again for the other worker
            workers = {worker_of(server, s) for s in held} - {None}
            assert len(workers) == 2, "the connections never reached both workers"
            # Whichever worker takes them, more are refused.
            for _ in range(6):
                async with connect(url, subprotocols=protocols) as extra:  # type: ignore[arg-type]
                    await asyncio.wait_for(extra.wait_closed(), WAIT)
                    assert extra.close_code == 3429
            # One closed: a place comes free (on any worker).
            await held.pop().close()

            async def admitted() -> bool:
                async with connect(url, subprotocols=protocols) as again:  # type: ignore[arg-type]
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(again.recv(), 0.3)
                    return again.close_code is None

            await until(admitted, "a closed stream's place to come free", WAIT)
    finally:
        await asyncio.to_thread(server.stop)
