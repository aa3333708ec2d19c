"""SQLite's busy timeout is a setting (THREADLINE_SQLITE_BUSY_TIMEOUT, seconds): how long a
statement waits for another process's write lock before the request is refused as a
timeout (503), never an unbounded wait. SQLite only: PostgreSQL has its own timeouts
(THREADLINE_DB_*), tested with the fault suite."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.api.helpers import admin, started
from tests.conftest import build_world
from tests.test_backup import invoke, one_red_line, pragmas_of_server
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db.engine import DEFAULT_SQLITE_BUSY_TIMEOUT, Database
from threadline.db.faults import classify
from threadline.db.migrate import upgrade
from threadline.settings import Settings


async def test_the_default_is_five_seconds(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'default.db'}")
    assert settings.sqlite_busy_timeout == DEFAULT_SQLITE_BUSY_TIMEOUT == 5.0
    assert await pragmas_of_server(settings, "busy_timeout") == (5000, 5000)


async def test_the_busy_timeout_is_a_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THREADLINE_SQLITE_BUSY_TIMEOUT", "0.25")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'short.db'}")
    assert settings.sqlite_busy_timeout == 0.25
    assert await pragmas_of_server(settings, "busy_timeout") == (250, 250)


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "nan", "inf", "3601"])
def test_a_bad_busy_timeout_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("THREADLINE_SQLITE_BUSY_TIMEOUT", bad)
    with pytest.raises(ValidationError, match="sqlite_busy_timeout"):
        Settings()
    line = one_red_line(invoke("check", "--database-url", f"sqlite:///{tmp_path / 'x.db'}"))
    assert "THREADLINE_SQLITE_BUSY_TIMEOUT" in line
    for seconds in (0.0, -1.0, float("nan"), 3601.0):
        with pytest.raises(ValueError, match="busy timeout"):
            Database(f"sqlite:///{tmp_path / 'y.db'}", sqlite_busy_timeout=seconds)


async def test_a_write_behind_another_process_lock_fails_as_a_timeout_then_succeeds(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}"
    await asyncio.to_thread(upgrade, url)
    db = Database(url, sqlite_busy_timeout=0.2)
    try:
        world = await build_world(db)
        cid = await started(db, world)
        reply = ev.AdminReply(author=admin(world), body="waits for the lock")
        # Another process (here: another connection) holds SQLite's write lock.
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(sqlite3.OperationalError, match="locked") as refused:
                await service.perform(db, world.app_id, cid, reply)
            fault = classify(refused.value)
            assert fault is not None, refused.value
            assert fault.kind == "timeout"
            other.execute("COMMIT")
        finally:
            other.close()
        # Nothing was written by the refused attempt; once the lock is free, it succeeds.
        assert [p.body for p in await service.get_parts(db, world.app_id, cid)] == ["Hello"]
        written = await service.perform(db, world.app_id, cid, reply)
        assert [p.body for p in written.parts] == ["waits for the lock"]
    finally:
        await db.dispose()
