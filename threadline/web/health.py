"""`/health/live`, `/health/ready` and `/health` (the same as ready): answered within a second.

Live: the process serves requests. Ready: the database answers and is writable, its schema
is at the latest migration, and Redis (when configured) answers. Each check has its own
deadline, shorter than the answer's, and says what is wrong when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from alembic.script import ScriptDirectory
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.engine import make_url

from threadline import __version__
from threadline.db.engine import Database
from threadline.db.faults import MESSAGES, classify
from threadline.db.migrate import alembic_config

# Each check's deadline; the whole answer stays under a second.
CHECK_SECONDS = 0.7
# A write that failed for a full or read-only storage this recently keeps readiness off.
RECENT_WRITE_FAULT_SECONDS = 10.0
# SQLite: the probe written next to the database file (a full disk refuses it).
PROBE_BYTES = 64 * 1024


class CheckFailed(Exception):
    """A readiness check's finding, said in a few words."""


@functools.lru_cache(maxsize=1)
def migration_head() -> str | None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return script.get_current_head()


def _check_revision(found: str | None) -> None:
    head = migration_head()
    if found != head:
        raise CheckFailed(f"migrations not current: database at {found}, code at {head}")


def _sqlite_check(path: Path) -> None:
    """In a thread: the file is there and writable, the disk takes a write, the schema is
    current."""
    if not path.exists():
        raise CheckFailed("database file missing")
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise CheckFailed(MESSAGES["read_only"])
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".ready-probe-") as probe:
            probe.write(b"\0" * PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckFailed(MESSAGES["storage_full"]) from exc
        if exc.errno in (errno.EROFS, errno.EACCES):
            raise CheckFailed(MESSAGES["read_only"]) from exc
        raise
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=CHECK_SECONDS)
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    finally:
        conn.close()
    _check_revision(row[0] if row else None)


async def _postgres_check(url: str) -> None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=CHECK_SECONDS, command_timeout=CHECK_SECONDS)
    try:
        read_only = await conn.fetchval("SELECT current_setting('transaction_read_only')")
        if read_only == "on":
            raise CheckFailed(MESSAGES["read_only"])
        revision = await conn.fetchval("SELECT version_num FROM alembic_version")
    finally:
        conn.terminate()  # no goodbye round trip: the server may be the problem
    _check_revision(revision)


async def _database_check(db: Database) -> None:
    fault = db.last_write_fault
    if (
        fault is not None
        and fault[0].kind in ("storage_full", "read_only")
        and time.monotonic() - fault[1] < RECENT_WRITE_FAULT_SECONDS
    ):
        raise CheckFailed(fault[0].message)
    if db.is_sqlite:
        database = make_url(db.url).database
        assert database, "readiness needs a database file"
        await asyncio.to_thread(_sqlite_check, Path(database))
    else:
        await _postgres_check(db.url)


async def _redis_check(url: str) -> None:
    client = Redis.from_url(url, socket_connect_timeout=CHECK_SECONDS, socket_timeout=CHECK_SECONDS)
    try:
        await client.ping()
    except RedisTimeoutError:
        raise CheckFailed(f"Redis did not answer within {CHECK_SECONDS} s") from None
    except (RedisError, OSError) as exc:
        raise CheckFailed(f"Redis unavailable ({type(exc).__name__})") from None
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


async def _run(check: Any) -> str:
    try:
        await asyncio.wait_for(check, CHECK_SECONDS)
    except CheckFailed as finding:
        return str(finding)
    except TimeoutError:
        return f"no answer within {CHECK_SECONDS} s"
    except Exception as exc:
        fault = classify(exc)
        what = fault.message if fault is not None else "check failed"
        return f"{what}: {type(exc).__name__}: {exc}"[:200]
    return "ok"


async def readiness(db: Database, redis_url: str | None) -> tuple[bool, dict[str, str]]:
    """Each check's finding ("ok" or what is wrong), and whether all are ok."""
    names = ["database"]
    checks = [_run(_database_check(db))]
    if redis_url:
        names.append("redis")
        checks.append(_run(_redis_check(redis_url)))
    findings = dict(zip(names, await asyncio.gather(*checks), strict=True))
    return all(f == "ok" for f in findings.values()), findings


def register(app: FastAPI) -> None:
    @app.get("/health/live", include_in_schema=False)
    async def live() -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    async def ready(request: Request) -> JSONResponse:
        db: Database = request.app.state.db
        ok, checks = await readiness(db, request.app.state.settings.redis_url)
        body: dict[str, Any] = {"status": "ok" if ok else "unavailable", "database": db.dialect}
        body["checks"] = checks
        if ok:
            body["version"] = __version__
            return JSONResponse(body)
        body["error"] = "; ".join(f"{name}: {f}" for name, f in checks.items() if f != "ok")
        return JSONResponse(body, status_code=503, headers={"Retry-After": "2"})

    app.add_api_route("/health/ready", ready, methods=["GET"], include_in_schema=False)
    app.add_api_route("/health", ready, methods=["GET"], include_in_schema=False)
