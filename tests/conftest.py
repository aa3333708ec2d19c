"""Fixtures: a migrated database per test, on SQLite and on PostgreSQL.

PostgreSQL: one database per xdist worker, migrated once by Alembic, truncated before each
test. SQLite: a migrated template file per worker, copied for each test (a real file, since
WAL and locking behaviour is part of what is tested). The PostgreSQL URL comes from
THREADLINE_TEST_POSTGRES_URL; under CI=true a missing URL is an error, never a skip.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import weakref
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from threadline.apps import service as apps
from threadline.db.engine import Database, async_url
from threadline.db.migrate import upgrade
from threadline.db.schema import metadata

BACKENDS = ["sqlite", "postgres"]


# An aiosqlite connection collected unclosed stops its worker thread with a future on
# whatever loop `asyncio.get_event_loop()` gives then (often one a finished test closed):
# the thread then raises in some later, unrelated test. Each connection remembers the test
# that opened it; a test that leaves one of its connections open is collected at teardown
# (only then, so the check costs nothing otherwise) and fails if one was dropped unclosed.
_running_test = ["(outside a test)"]
_opened: weakref.WeakSet[aiosqlite.Connection] = weakref.WeakSet()
_dropped_unclosed: list[str] = []


def _watch_aiosqlite_connections() -> None:
    cls = aiosqlite.Connection
    init, finalize = cls.__init__, cls.__del__

    def __init__(self: aiosqlite.Connection, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        self._opened_by = _running_test[0]  # type: ignore[attr-defined]
        _opened.add(self)

    def __del__(self: aiosqlite.Connection) -> None:
        if self._connection is not None:
            _dropped_unclosed.append(getattr(self, "_opened_by", "?"))
        finalize(self)

    cls.__init__ = __init__  # type: ignore[method-assign]
    cls.__del__ = __del__  # type: ignore[method-assign]


_watch_aiosqlite_connections()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    _running_test[0] = item.nodeid
    _opened.clear()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    result = yield  # the test's fixtures are torn down (engines disposed) by now
    if any(conn._connection is not None for conn in _opened):
        gc.collect()
    _opened.clear()
    _running_test[0] = "(outside a test)"
    if _dropped_unclosed:
        opened_by = sorted(set(_dropped_unclosed))
        _dropped_unclosed.clear()
        pytest.fail(f"aiosqlite connection(s) garbage-collected unclosed, opened by: {opened_by}")
    return result


def postgres_base_url() -> str | None:
    url = os.environ.get("THREADLINE_TEST_POSTGRES_URL")
    if not url and os.environ.get("CI"):
        raise RuntimeError("CI=true but THREADLINE_TEST_POSTGRES_URL is not set")
    return url


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


async def _admin_execute(base_url: str, *statements: str) -> None:
    engine = create_async_engine(async_url(base_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated PostgreSQL database of this test process's own, dropped at the end."""
    base = postgres_base_url()
    if not base:
        pytest.skip("THREADLINE_TEST_POSTGRES_URL is not set")
    # The pid keeps concurrent test runs (and xdist workers) on one server apart.
    name = f"threadline_test_{_worker()}_{os.getpid()}"
    drop = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    asyncio.run(_admin_execute(base, drop, f"CREATE DATABASE {name}"))
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    asyncio.run(_admin_execute(base, drop))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


# PostgreSQL's word list (revision 0010) is not in the metadata, yet is emptied with the parts.
# `deployment` keeps its row: the migration made it, as it makes it for every database.
_TABLES = ", ".join(
    [*(t.name for t in reversed(metadata.sorted_tables) if t.name != "deployment"), "search_words"]
)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly emptied, migrated database URL, once per backend."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "threadline.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    url: str = request.getfixturevalue("postgres_url")
    asyncio.run(_admin_execute(url, f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE"))
    yield url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    try:
        yield database
    finally:
        await database.dispose()


@dataclass(frozen=True, slots=True)
class World:
    """One app with two admins, two channels, a user, and a second app to test tenancy."""

    app_id: int
    token: str
    default_channel_id: int
    sender_id: int
    admin_id: int
    other_admin_id: int
    channel_id: int
    user_id: int
    foreign_app_id: int
    foreign_admin_id: int
    foreign_channel_id: int
    foreign_user_id: int


async def build_world(db: Database) -> World:
    app = await apps.create_app(db, "Acme")
    admin_id = await apps.create_admin(db, app.app_id, "Ann", email="ann@acme.test")
    other_admin_id = await apps.create_admin(db, app.app_id, "Bob", email="bob@acme.test")
    channel_id = await apps.create_channel(db, app.app_id, "Sales")
    user_id = await apps.create_user(
        db, app.app_id, site_user_id="u-1", props={"$name": "Uma", "$email": "uma@example.com"}
    )
    foreign = await apps.create_app(db, "Other")
    return World(
        app_id=app.app_id,
        token=app.token,
        default_channel_id=app.default_channel_id,
        sender_id=app.default_sender_id,
        admin_id=admin_id,
        other_admin_id=other_admin_id,
        channel_id=channel_id,
        user_id=user_id,
        foreign_app_id=foreign.app_id,
        foreign_admin_id=await apps.create_admin(db, foreign.app_id, "Zed"),
        foreign_channel_id=await apps.create_channel(db, foreign.app_id, "Theirs"),
        foreign_user_id=await apps.create_user(db, foreign.app_id, site_user_id="u-1"),
    )


@pytest.fixture
async def world(db: Database) -> World:
    return await build_world(db)


def redis_url() -> str:
    """The test Redis (THREADLINE_TEST_REDIS_URL): skipped without one, an error under CI."""
    url = os.environ.get("THREADLINE_TEST_REDIS_URL")
    if not url:
        if os.environ.get("CI"):
            raise RuntimeError("CI=true but THREADLINE_TEST_REDIS_URL is not set")
        pytest.skip("THREADLINE_TEST_REDIS_URL is not set")
    return url


@pytest.fixture
async def redis_pair() -> AsyncIterator[list[Redis]]:
    """Two clients of the test Redis: two processes."""
    url = redis_url()
    made = [Redis.from_url(url), Redis.from_url(url)]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()
