"""Durability: SQLite's `synchronous` setting, and `threadline backup` / `threadline restore`
end to end (a backup taken while writes go on, restored, checked clean, data equal)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from tests.conftest import _TABLES, _admin_execute
from threadline.apps import service as apps
from threadline.cli import cli
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db import backup as backups
from threadline.db.engine import Database
from threadline.db.migrate import upgrade
from threadline.settings import Settings
from threadline.web.app import create_app

runner = CliRunner()


def invoke(*args: str) -> Result:
    return runner.invoke(cli, list(args))


def one_red_line(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


# -- synchronous -----------------------------------------------------------------------


async def pragmas_of_server(settings: Settings, pragma: str) -> tuple[int, int]:
    """`PRAGMA <pragma>` of a started server's write and read connections."""
    # /health/ready is ready only on a database at the latest schema (upgrade runs its own loop).
    await asyncio.to_thread(upgrade, settings.database_url)
    app = create_app(settings)
    async with LifespanManager(app):
        db: Database = app.state.db
        async with db.write() as conn:
            written = (await conn.execute(text(f"PRAGMA {pragma}"))).scalar_one()
        async with db.read() as conn:
            read = (await conn.execute(text(f"PRAGMA {pragma}"))).scalar_one()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            assert (await client.get("/health/ready")).status_code == 200
    return int(written), int(read)


async def test_the_server_syncs_every_commit_by_default(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'full.db'}")
    assert settings.sqlite_synchronous == "FULL"
    assert await pragmas_of_server(settings, "synchronous") == (2, 2)  # FULL


async def test_synchronous_normal_is_a_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THREADLINE_SQLITE_SYNCHRONOUS", "normal")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'normal.db'}")
    assert settings.sqlite_synchronous == "NORMAL"
    assert await pragmas_of_server(settings, "synchronous") == (1, 1)  # NORMAL


def test_an_unknown_synchronous_mode_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        Database(f"sqlite:///{tmp_path / 'off.db'}", sqlite_synchronous="OFF")
    monkeypatch.setenv("THREADLINE_SQLITE_SYNCHRONOUS", "OFF")
    with pytest.raises(ValidationError):
        Settings()
    line = one_red_line(invoke("check", "--database-url", "sqlite:///unused.db"))
    assert "THREADLINE_SQLITE_SYNCHRONOUS" in line


# -- SQLite backup while writes go on ------------------------------------------------------


class Writer:
    """Replies written one after another on their own thread, loop and `Database` (as a
    server would), each recorded once its transaction committed."""

    def __init__(self, url: str, app_id: int, conversation_id: int, admin_id: int) -> None:
        self.url, self.app_id, self.conversation_id = url, app_id, conversation_id
        self.admin_id = admin_id
        self.acknowledged: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        from threadline.core.enums import AuthorKind
        from threadline.core.model import Author

        db = Database(self.url)
        try:
            n = 0
            while not self._stop.is_set():
                body = f"reply {n}"
                event = ev.AdminReply(author=Author(AuthorKind.ADMIN, self.admin_id), body=body)
                await service.perform(db, self.app_id, self.conversation_id, event)
                self.acknowledged.append(body)
                n += 1
        finally:
            await db.dispose()

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()


def _seed(url: str) -> tuple[int, int, int]:
    async def main() -> tuple[int, int, int]:
        db = Database(url)
        try:
            app = await apps.create_app(db, "Backup")
            admin_id = await apps.create_admin(db, app.app_id, "Ann")
            user_id = await apps.create_user(db, app.app_id, site_user_id="u-1")
            started = await service.start_by_user(
                db, app.app_id, user_id, ev.UserReply(body="Hello")
            )
            # Some bulk, so that the copy takes many steps.
            for i in range(200):
                await service.start_by_user(db, app.app_id, user_id, ev.UserReply(body=f"x{i}"))
            return app.app_id, started.state.id, admin_id
        finally:
            await db.dispose()

    return asyncio.run(main())


def _bodies(path: Path, conversation_id: int) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT body FROM conversation_parts WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        ).fetchall()
    return [r[0] for r in rows]


def _dump(path: Path) -> list[str]:
    """Every row of every table (the schema's text aside)."""
    with sqlite3.connect(path) as conn:
        return [line for line in conn.iterdump() if line.startswith("INSERT")]


def test_backup_while_writing_then_restore_is_consistent_and_checks_clean(
    sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "live.db"
    shutil.copyfile(sqlite_template, source)
    url = f"sqlite:///{source}"
    app_id, conversation_id, admin_id = _seed(url)
    # One page per step, and a pause between steps: the writer commits during the copy.
    monkeypatch.setattr(backups, "BACKUP_STEP_PAGES", 1)
    steps: list[tuple[int, int]] = []

    def slow(done: int, total: int) -> None:
        steps.append((done, total))
        time.sleep(0.002)

    destination = tmp_path / "backups" / "one.db"
    with Writer(url, app_id, conversation_id, admin_id) as writer:
        while len(writer.acknowledged) < 5:
            time.sleep(0.01)
        before = list(writer.acknowledged)
        backups.backup(url, destination, slow)
        during = len(writer.acknowledged) - len(before)
        while len(writer.acknowledged) < len(before) + during + 5:
            time.sleep(0.01)
    assert during > 0, "no write committed while the backup was copying"
    assert len(steps) > 20
    assert [d for d, _ in steps] == sorted(d for d, _ in steps)  # never restarted
    assert steps[-1][0] == steps[-1][1]
    assert not destination.with_name("one.db.partial").exists()

    # The backup is one snapshot: the writes acknowledged before it began, in order, then
    # perhaps some of those acknowledged during it, and nothing acknowledged after it.
    backed_up = [b for b in _bodies(destination, conversation_id) if b.startswith("reply ")]
    assert backed_up == writer.acknowledged[: len(backed_up)]
    assert len(before) <= len(backed_up) <= len(before) + during
    assert len(writer.acknowledged) > len(backed_up)
    with sqlite3.connect(destination) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)

    # Restored over the live database (the "server" stopped): equal to the backup, clean.
    restored = invoke("restore", str(destination), "--database-url", url)
    assert restored.exit_code == 0, restored.output
    assert "Restored" in restored.stdout
    assert _dump(source) == _dump(destination)
    checked = invoke("check", "--database-url", url)
    assert checked.exit_code == 0, checked.output
    assert "no drift found" in checked.stdout
    # ... and still a working database: writes go on where the backup ended.
    with Writer(url, app_id, conversation_id, admin_id) as again:
        while len(again.acknowledged) < 3:
            time.sleep(0.01)
    assert _bodies(source, conversation_id)[-len(again.acknowledged) :] == again.acknowledged


def test_backup_and_restore_through_the_command(sqlite_template: Path, tmp_path: Path) -> None:
    source = tmp_path / "a.db"
    shutil.copyfile(sqlite_template, source)
    _, conversation_id, _ = _seed(f"sqlite:///{source}")
    backup_file = tmp_path / "a.backup"
    done = invoke("backup", str(backup_file), "--database-url", f"sqlite:///{source}")
    assert done.exit_code == 0, done.output
    assert f"Backup written: {backup_file}" in done.stdout
    backup_file.chmod(0o444)  # a backup kept read-only restores all the same
    # Restored into a new file: created, equal, clean, migrated.
    target = tmp_path / "new" / "b.db"
    restored = invoke("restore", str(backup_file), "--database-url", f"sqlite:///{target}")
    assert restored.exit_code == 0, restored.output
    assert _dump(target) == _dump(source)
    assert _bodies(target, conversation_id) == ["Hello"]
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert invoke("check", "--database-url", f"sqlite:///{target}").exit_code == 0


def test_backup_and_restore_failures_are_one_line_and_change_nothing(
    sqlite_template: Path, tmp_path: Path
) -> None:
    source = tmp_path / "a.db"
    shutil.copyfile(sqlite_template, source)
    url = f"sqlite:///{source}"
    _seed(url)
    before = _dump(source)

    existing = tmp_path / "exists.db"
    existing.write_bytes(b"keep me")
    assert "exists" in one_red_line(invoke("backup", str(existing), "--database-url", url))
    assert existing.read_bytes() == b"keep me"

    missing = tmp_path / "nothing.db"
    line = one_red_line(
        invoke("backup", str(tmp_path / "b"), "--database-url", f"sqlite:///{missing}")
    )
    assert "no such database file" in line
    assert not missing.exists()

    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("hello " * 1000)
    assert "not a SQLite database" in one_red_line(
        invoke("restore", str(not_sqlite), "--database-url", url)
    )
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    assert "not a Threadline database" in one_red_line(
        invoke("restore", str(foreign), "--database-url", url)
    )
    assert "no such database file" in one_red_line(
        invoke("restore", str(tmp_path / "absent.db"), "--database-url", url)
    )
    assert _dump(source) == before


# -- PostgreSQL: pg_dump and pg_restore ----------------------------------------------------


async def _counts(url: str) -> dict[str, int]:
    db = Database(url)
    try:
        async with db.read() as conn:
            return {
                table: int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())
                for table in ("apps", "conversations", "conversation_parts", "events")
            }
    finally:
        await db.dispose()


def test_postgres_backup_and_restore_with_pg_dump(postgres_url: str, tmp_path: Path) -> None:
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("the PostgreSQL client programs are not installed")
    truncate = f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE"
    asyncio.run(_admin_execute(postgres_url, truncate))
    _, conversation_id, _ = _seed(postgres_url)
    dump = tmp_path / "pg.dump"
    done = invoke("backup", str(dump), "--database-url", postgres_url)
    assert done.exit_code == 0, done.output
    assert dump.stat().st_size > 0

    name = f"{make_url(postgres_url).database}_restored"
    target = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    drop = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    asyncio.run(_admin_execute(postgres_url, drop, f"CREATE DATABASE {name}"))
    try:
        for _ in range(2):  # into an empty database, then over the restored one
            restored = invoke("restore", str(dump), "--database-url", target)
            assert restored.exit_code == 0, restored.output
            assert asyncio.run(_counts(target)) == asyncio.run(_counts(postgres_url))
            checked = invoke("check", "--database-url", target)
            assert checked.exit_code == 0, checked.output
        assert asyncio.run(_counts(target))["conversations"] == 201
        assert conversation_id
        line = one_red_line(
            invoke("restore", str(tmp_path / "absent.dump"), "--database-url", target)
        )
        assert "no such backup file" in line
        assert asyncio.run(_counts(target))["conversations"] == 201
    finally:
        asyncio.run(_admin_execute(postgres_url, drop))
