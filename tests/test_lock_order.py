"""One lock order for every writer (PostgreSQL): erasures, batched writes and single writes of
two parts run together for a bounded time; PostgreSQL must detect no deadlock, and every
acknowledged write must be there."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from sqlalchemy import func, select, text

from tests.conftest import World
from tests.waiting import until
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AuthorKind
from threadline.core.model import Author
from threadline.db.engine import Database
from threadline.db.schema import conversation_parts

DURATION_SECONDS = 12.0
COMMON = ["order", "refund", "delivery", "parcel", "invoice", "account", "password", "billing"]


def body(rng: random.Random, rare: str = "") -> str:
    return " ".join([*rng.sample(COMMON, 3), rare, f"w{rng.randrange(10_000)}"])


async def _other_backends(db: Database) -> set[int]:
    """The other sessions on this database now."""
    async with db.read() as conn:
        found = await conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        return {int(pid) for (pid,) in found}


async def _deadlocks(db: Database) -> int:
    async with db.read() as conn:
        await conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        found = await conn.execute(
            text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        )
        return int(found.scalar_one())


async def test_writers_never_deadlock(db_url: str, world: World) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite runs one write transaction at a time: no lock order to keep")
    # Reads the statistics once the writers' sessions have ended: a session reports its
    # counts (deadlocks among them) when it ends, if not before.
    reader = Database(db_url)
    others = await _other_backends(reader)
    db = Database(db_url, batch_writes=8)
    admin = Author(AuthorKind.ADMIN, world.admin_id)
    errors: list[BaseException] = []
    acknowledged: list[int] = []
    counts = {"batched": 0, "two_parts": 0, "erasures": 0}
    try:
        busy = [
            (
                await service.start_by_user(
                    db, world.app_id, world.user_id, ev.UserReply(body="hi")
                )
            ).state.id
            for _ in range(12)
        ]
        before = await _deadlocks(reader)
        deadline = time.monotonic() + DURATION_SECONDS

        async def guarded(kind: str, write: object) -> None:
            try:
                outcome = await write  # type: ignore[misc]
            except Exception as exc:
                errors.append(exc)
                return
            acknowledged.extend(p.id for p in outcome.parts)
            counts[kind] += 1

        async def batched(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < deadline:
                cid = rng.choice(busy)
                reply = ev.UserReply(body=body(rng))
                await guarded("batched", service.perform(db, world.app_id, cid, reply))

        async def two_parts(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < deadline:
                cid = rng.choice(busy)
                assignee = rng.choice([world.admin_id, world.other_admin_id, None])
                events = (ev.AdminReply(author=admin, body=body(rng)), ev.Assign(assignee, admin))
                await guarded("two_parts", service.perform(db, world.app_id, cid, *events))

        async def erasures(seed: int) -> None:
            rng = random.Random(seed)
            n = 0
            while time.monotonic() < deadline:
                n += 1
                rare = f"rare{seed}x{n}"
                started = await service.start_by_user(
                    db, world.app_id, world.user_id, ev.UserReply(body=body(rng, rare))
                )
                acknowledged.extend(p.id for p in started.parts)
                cid = started.state.id
                await guarded(
                    "two_parts",
                    service.perform(db, world.app_id, cid, ev.Assign(world.admin_id, admin)),
                )
                await guarded("erasures", service.perform(db, world.app_id, cid, ev.Remove()))

        await asyncio.gather(
            *(batched(i) for i in range(8)),
            *(two_parts(100 + i) for i in range(3)),
            *(erasures(200 + i) for i in range(2)),
        )
        await db.dispose()  # the writers' sessions end

        async def writers_gone() -> bool:
            return not (await _other_backends(reader) - others)

        await until(writers_gone, "the writers' sessions ended (their statistics reported)")
        deadlocks = await _deadlocks(reader) - before
        async with reader.read() as conn:
            stored = (
                await conn.execute(
                    select(func.count()).where(conversation_parts.c.id.in_(acknowledged))
                )
            ).scalar_one()
    finally:
        await db.dispose()
        await reader.dispose()
    assert all(n > 20 for n in counts.values()), counts
    assert errors == []
    assert deadlocks == 0
    assert stored == len(set(acknowledged))
