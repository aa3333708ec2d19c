"""Backups of a Threadline database, and restoring one.

SQLite: SQLite's online backup API, page by page, from inside one read transaction of
the source: the copy is the database as of the moment that transaction began, consistent
while the server goes on writing (WAL lets writers proceed; stepping inside the one read
transaction means their commits never restart the copy). Restoring copies a backup, after
an integrity check, into the database file the same way, then migrates it to the current
schema. Run it with the server stopped: a running server would keep serving what it had
cached.

PostgreSQL: `pg_dump --format=custom` and `pg_restore --clean --if-exists`, the machine's
PostgreSQL client programs (their major version must be at least the server's).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import URL

from threadline.db.engine import async_url

# Pages copied per backup step (4 MiB with SQLite's default 4 KiB pages): the progress
# bar moves between steps.
BACKUP_STEP_PAGES = 1024
# A copy from the command line may wait longer than a request for a server's write lock.
BACKUP_BUSY_TIMEOUT_SECONDS = 30.0
# A table every Threadline database has: a file without it is not a Threadline backup.
_MARKER_TABLE = "alembic_version"

# Told (pages copied, pages in all) after every step.
Progress = Callable[[int, int], None]


class BackupError(Exception):
    """A backup or a restore that cannot be done, phrased for the person at the terminal."""


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory SQLite database has nothing to back up")
    return Path(url.database)


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    """`mode`: `ro`, `rw` (both: the file must exist) or `rwc`."""
    if mode != "rwc" and not path.is_file():
        raise BackupError(f"{path}: no such database file")
    # Autocommit mode: BEGIN and COMMIT are issued explicitly below.
    return sqlite3.connect(
        f"file:{path}?mode={mode}",
        uri=True,
        timeout=BACKUP_BUSY_TIMEOUT_SECONDS,
        isolation_level=None,
    )


def _copy(source: sqlite3.Connection, target: sqlite3.Connection, progress: Progress) -> None:
    def step(_status: int, remaining: int, total: int) -> None:
        progress(total - remaining, total)

    # One read transaction for every step: the copy is one snapshot, never restarted.
    source.execute("BEGIN")
    try:
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()
        source.backup(target, pages=BACKUP_STEP_PAGES, progress=step)
    finally:
        source.execute("COMMIT")


def _check_threadline(conn: sqlite3.Connection, path: Path) -> None:
    try:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_MARKER_TABLE,)
        ).fetchone()
        verdict = conn.execute("PRAGMA quick_check").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: not a SQLite database ({exc})") from None
    if found is None:
        raise BackupError(f"{path}: not a Threadline database (no {_MARKER_TABLE} table)")
    if verdict is None or verdict[0] != "ok":
        raise BackupError(f"{path}: the file is damaged ({verdict[0] if verdict else '?'})")


def backup_sqlite(url: URL, destination: Path, progress: Progress) -> None:
    source_path = _sqlite_path(url)
    if destination.exists():
        raise BackupError(f"{destination} exists: choose a new file name")
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Read-write: a reader of a WAL database may have to set up its shared-memory index.
    source = _connect(source_path, "rw")
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        _check_threadline(source, source_path)
        target = sqlite3.connect(partial, isolation_level=None)
        try:
            _copy(source, target, progress)
            # A backup is one self-contained file: no WAL beside it.
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    partial.rename(destination)


def restore_sqlite(url: URL, backup: Path, progress: Progress) -> None:
    target_path = _sqlite_path(url)
    source = _connect(backup, "ro")  # a backup may be read-only
    try:
        _check_threadline(source, backup)
        target_path.parent.mkdir(parents=True, exist_ok=True)
        target = _connect(target_path, "rwc")
        try:
            _copy(source, target, progress)
            # The server's mode; the backup file itself was left in rollback-journal mode.
            target.execute("PRAGMA journal_mode=WAL")
        finally:
            target.close()
    finally:
        source.close()


# -- PostgreSQL ---------------------------------------------------------------------------


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """The libpq connection string (without the password) and the environment with it."""
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _program(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} not found: install the PostgreSQL client programs (the server's major "
            "version or newer) and put them on PATH"
        )
    return found


def _run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        detail = lines[0] if lines else f"exit status {done.returncode}"
        raise BackupError(f"{Path(command[0]).name} failed: {detail}")


def backup_postgres(url: URL, destination: Path) -> None:
    if destination.exists():
        raise BackupError(f"{destination} exists: choose a new file name")
    dsn, env = _libpq(url)
    partial = destination.with_name(destination.name + ".partial")
    try:
        _run(
            [_program("pg_dump"), "--format=custom", "--no-owner", f"--file={partial}", dsn],
            env,
        )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(destination)


def restore_postgres(url: URL, backup: Path) -> None:
    if not backup.is_file():
        raise BackupError(f"{backup}: no such backup file")
    dsn, env = _libpq(url)
    _run(
        [
            _program("pg_restore"),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={dsn}",
            str(backup),
        ],
        env,
    )


def backup(database_url: str, destination: Path, progress: Progress) -> None:
    """Write a backup of the database to `destination` (a new file)."""
    url = async_url(database_url)
    if url.get_backend_name() == "sqlite":
        backup_sqlite(url, destination, progress)
    else:
        backup_postgres(url, destination)


def restore(database_url: str, backup_file: Path, progress: Progress) -> None:
    """Replace the database's content with a backup's (the server must be stopped)."""
    url = async_url(database_url)
    if url.get_backend_name() == "sqlite":
        restore_sqlite(url, backup_file, progress)
    else:
        restore_postgres(url, backup_file)
