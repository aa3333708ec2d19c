"""Fixtures of the fault suite: a private PostgreSQL cluster (one per test module), an app
with a conversation in a fresh database, and the checks every fault test ends with."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from tests.api.helpers import started
from tests.conftest import build_world
from tests.faults.infra import PrivatePostgres, Tally, postgres_bin, threadline
from threadline.db.engine import Database
from threadline.db.schema import conversation_parts

_names = itertools.count()


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    if postgres_bin() is None:
        pytest.fail("the fault suite needs PostgreSQL's initdb and pg_ctl on this machine")
    cluster = PrivatePostgres()
    try:
        yield cluster
    finally:
        cluster.close()


@dataclass(frozen=True, slots=True)
class Target:
    """A migrated database with an app, its token and a conversation to write to."""

    url: str
    token: str
    app_id: int
    conversation_id: int


async def _populate(url: str) -> Target:
    db = Database(url)
    try:
        world = await build_world(db)
        cid = await started(db, world)
    finally:
        await db.dispose()
    return Target(url, world.token, world.app_id, cid)


def prepare(url: str) -> Target:
    result = threadline("init", "--database-url", url)
    assert result.returncode == 0, result.stderr
    return asyncio.run(_populate(url))


@pytest.fixture
def pg_target(private_postgres: PrivatePostgres) -> Target:
    name = f"faults_{next(_names)}"
    private_postgres.create_database(name)
    return prepare(private_postgres.url(database=name))


async def _stored(url: str, cid: int) -> list[tuple[int, int]]:
    db = Database(url)
    try:
        async with db.read() as conn:
            rows = await conn.execute(
                select(conversation_parts.c.random_id, conversation_parts.c.id).where(
                    conversation_parts.c.conversation_id == cid,
                    conversation_parts.c.random_id.is_not(None),
                )
            )
            return [(int(r), int(i)) for r, i in rows]
    finally:
        await db.dispose()


def assert_writes_kept(target: Target, tally: Tally) -> None:
    """Every acknowledged write is stored exactly once, as the part it was answered with;
    nothing is stored that was not sent; `threadline check` finds no drift."""
    stored = asyncio.run(_stored(target.url, target.conversation_id))
    counts = Counter(random_id for random_id, _ in stored)
    assert [r for r, n in counts.items() if n > 1] == []
    parts = dict(stored)
    lost = {r: p for r, p in tally.acknowledged.items() if parts.get(r) != p}
    assert lost == {}, "acknowledged writes lost or changed"
    unknown = set(parts) - set(tally.acknowledged) - tally.pending
    assert unknown == set(), "parts nobody sent"
    check = threadline("check", "--database-url", target.url)
    assert check.returncode == 0, check.stdout + check.stderr
