"""Engines and transactions for SQLite and PostgreSQL.

SQLite: WAL, a busy timeout, and `BEGIN IMMEDIATE` for every write transaction, so a
transaction that reads before it writes cannot fail on the lock upgrade; writes are also
serialised in-process by a lock, reads use their own pool. PostgreSQL: one asyncpg pool,
and conversation rows are locked with `SELECT ... FOR UPDATE` by the repository.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from threadline.db.direct import DriverConnection, refuse_statements_behind_deferred
from threadline.db.faults import Fault, StorageUnavailable, classify

log = logging.getLogger("threadline.db")

# Seconds a SQLite statement waits for another process's write lock (a migration, a
# `threadline check --fix`) before it fails as "did not answer in time" (503): the bound of
# PostgreSQL's statement timeout. This process's own writes never wait on it (they are
# serialised by a lock before they reach SQLite). THREADLINE_SQLITE_BUSY_TIMEOUT sets it.
DEFAULT_SQLITE_BUSY_TIMEOUT = 5.0
# SQLite's `PRAGMA synchronous` in WAL mode: FULL syncs the WAL at every commit, so an
# acknowledged write survives a power loss; NORMAL syncs at checkpoints only (an OS crash
# or power loss may lose the last commits, never corrupt the file).
SQLITE_SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")


def async_url(url: str) -> URL:
    """Accept plain `sqlite:///` and `postgresql://` URLs and pick the async driver."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database URL {parsed.render_as_string(hide_password=True)}")


def _install_sqlite_recipe(
    engine: AsyncEngine, begin_sql: str | None, synchronous: str, busy_timeout: float
) -> None:
    if synchronous not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"SQLite synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}")
    busy_ms = _busy_ms(busy_timeout)

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver; `on_begin` issues BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA synchronous={synchronous}",
            "PRAGMA foreign_keys=ON",
            f"PRAGMA busy_timeout={busy_ms}",
        ):
            cursor.execute(pragma)
        cursor.close()

    if begin_sql is None:
        return  # the owner of the connection issues BEGIN itself

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin_sql)


def _busy_ms(seconds: float) -> int:
    if not 0 < seconds <= 3600:  # NaN fails too
        raise ValueError("the SQLite busy timeout must be more than 0 and at most 3600 seconds")
    return max(1, round(seconds * 1000))


@dataclass(frozen=True, slots=True)
class Timeouts:
    """PostgreSQL: how long to wait for the server, in seconds (None: as long as it takes).

    `connect`: to open a connection; `statement`: for one statement's answer (checked by the
    client, so a frozen server or network is noticed too, and by the server as its
    `statement_timeout`); `pool`: for a pooled connection to come free.
    """

    connect: float | None = None
    statement: float | None = None
    pool: float | None = None


def _is_lost(dbapi_connection: Any) -> bool:
    """True when the asyncpg connection under SQLAlchemy's adapter is known to be closed (the
    server went away, or restarted, since it was last used)."""
    driver = getattr(dbapi_connection, "driver_connection", None) or getattr(
        dbapi_connection, "_connection", None
    )
    is_closed = getattr(driver, "is_closed", None)
    return bool(is_closed()) if callable(is_closed) else False


def _replace_lost_connections(engine: AsyncEngine) -> None:
    """A pooled connection the server closed while it sat idle is replaced at checkout: the
    pool retries with a fresh one, instead of handing out one that fails its first
    statement (after a PostgreSQL restart, every idle connection is such a one)."""

    @event.listens_for(engine.sync_engine, "checkout")
    def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if _is_lost(dbapi_connection):
            raise exc.DisconnectionError("connection closed by the server while idle")


def create_engine(
    url: str,
    *,
    write: bool = True,
    pool_size: int = 10,
    sqlite_begin: bool = True,
    sqlite_synchronous: str = "FULL",
    timeouts: Timeouts | None = None,
    sqlite_busy_timeout: float = DEFAULT_SQLITE_BUSY_TIMEOUT,
) -> AsyncEngine:
    """An engine for `url`. On SQLite, `sqlite_begin=False` leaves BEGIN to the caller;
    `sqlite_busy_timeout` is how long (seconds) a statement waits for another process's lock."""
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            parsed,
            connect_args={"timeout": _busy_ms(sqlite_busy_timeout) / 1000},
            pool_size=1 if write else pool_size,
            max_overflow=0 if write else pool_size,
            json_deserializer=orjson.loads,
        )
        begin_sql = ("BEGIN IMMEDIATE" if write else "BEGIN") if sqlite_begin else None
        _install_sqlite_recipe(engine, begin_sql, sqlite_synchronous, sqlite_busy_timeout)
        refuse_statements_behind_deferred(engine)
        return engine
    # JSON columns decode with orjson (as on SQLite): the stdlib decoder was a visible part
    # of reading the event log for the realtime streams.
    # asyncpg prepares each statement text once per connection and keeps the last 100. A
    # write's deferred statements go as one text per combination (threadline.db.direct
    # `combine`), so a varied workload has more texts than that: a statement that falls out
    # of the cache costs one more round trip and a new plan.
    timeouts = timeouts or Timeouts()
    connect_args: dict[str, Any] = {"statement_cache_size": 1000}
    if timeouts.connect is not None:
        connect_args["timeout"] = timeouts.connect
    if timeouts.statement is not None:
        connect_args["command_timeout"] = timeouts.statement
        connect_args["server_settings"] = {
            "statement_timeout": str(max(1, round(timeouts.statement * 1000)))
        }
    engine = create_async_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=timeouts.pool if timeouts.pool is not None else 30.0,
        json_deserializer=orjson.loads,
        connect_args=connect_args,
    )
    refuse_statements_behind_deferred(engine)
    _replace_lost_connections(engine)
    return engine


async def _close(conn: AsyncConnection) -> None:
    """Close a connection; one that broke on the way is dropped with a warning, not raised
    (so it never hides the error that broke it)."""
    try:
        await conn.close()
    except Exception as failure:
        quiet = classify(failure) is not None
        log.log(
            logging.DEBUG if quiet else logging.WARNING,
            "closing a database connection failed (%s); dropped",
            failure,
        )
        with contextlib.suppress(Exception):
            await conn.invalidate()


async def _drop(conn: AsyncConnection) -> None:
    """Discard a connection without a word to the server (which may not answer)."""
    with contextlib.suppress(Exception):
        await conn.invalidate()


# After a write found PostgreSQL down or stuck, for this long (or until a write succeeds)
# only one write at a time goes to it.
PROBE_WINDOW_SECONDS = 5.0


class Database:
    """The process's handle on storage: `write()` and `read()` transactions."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        batch_writes: int = 8,
        batch_running: int = 1,
        sqlite_synchronous: str = "FULL",
        timeouts: Timeouts | None = None,
        sqlite_busy_timeout: float = DEFAULT_SQLITE_BUSY_TIMEOUT,
    ) -> None:
        self.url = url
        self.timeouts = timeouts or Timeouts()
        # PostgreSQL: up to `batch_writes` conversation writes share a transaction while
        # `batch_running` such transactions are in flight (threadline.conversations.batch).
        self.batch_writes = batch_writes
        self.batch_running = batch_running
        self.is_sqlite = async_url(url).get_backend_name() == "sqlite"
        # SQLite's writer issues BEGIN IMMEDIATE and COMMIT on the driver itself (see write()).
        self.write_engine = create_engine(
            url,
            write=True,
            pool_size=pool_size,
            sqlite_begin=not self.is_sqlite,
            sqlite_synchronous=sqlite_synchronous,
            timeouts=self.timeouts,
            sqlite_busy_timeout=sqlite_busy_timeout,
        )
        self.read_engine = (
            create_engine(
                url,
                write=False,
                pool_size=pool_size,
                sqlite_synchronous=sqlite_synchronous,
                sqlite_busy_timeout=sqlite_busy_timeout,
            )
            if self.is_sqlite
            else self.write_engine
        )
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        # SQLite has one writer at a time anyway, so it keeps one write connection open
        # instead of checking one out of a pool (and resetting it) for every transaction.
        self._writer: AsyncConnection | None = None
        # PostgreSQL writers keep connections checked out between transactions, as many as
        # the pool keeps open: a pool checkout and reset cost more than a conversation write.
        # The pool's overflow (as large again) stays for reads.
        self._idle_writers: list[AsyncConnection] = []
        self._max_idle_writers = max(1, pool_size)
        # Told the app id after a transaction that appended to the event log has committed
        # (the realtime bus and the webhook worker listen here). Never told of a rollback.
        self.commit_listeners: list[Callable[[int], None]] = []
        # The storage fault the last write transaction failed with, and when (monotonic);
        # None once a write succeeded since. Readiness reports a recent one.
        self.last_write_fault: tuple[Fault, float] | None = None
        self._probing = False

    def events_committed(self, app_id: int) -> None:
        """Called by the writer once its transaction, which appended events, committed."""
        for listener in self.commit_listeners:
            try:
                listener(app_id)
            except Exception:  # the write is committed: a listener's failure must not undo it
                log.exception("commit listener failed")

    @property
    def dialect(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed when the block ends, rolled back on error.

        BEGIN and COMMIT go straight to the driver: SQLAlchemy's own transaction handling
        costs more than the statements of a typical conversation write.
        """
        probe = self._probe()
        try:
            async with self._write() as conn:
                yield conn
        except Exception as failure:
            fault = classify(failure)
            if fault is not None:
                self.last_write_fault = (fault, time.monotonic())
            raise
        finally:
            if probe:
                self._probing = False
        self.last_write_fault = None

    def _probe(self) -> bool:
        """PostgreSQL, after a write found the database down or stuck: one write at a time
        tries whether it is back (True: this one); the others are refused at once, rather
        than each waiting out the timeouts in turn behind the writes before it."""
        fault = self.last_write_fault
        if (
            self.is_sqlite
            or fault is None
            or fault[0].kind not in ("unavailable", "timeout")
            or time.monotonic() - fault[1] > PROBE_WINDOW_SECONDS
        ):
            return False
        if self._probing:
            raise StorageUnavailable(fault[0])
        self._probing = True
        return True

    async def _writer_connection(self) -> AsyncConnection:
        """PostgreSQL: a kept write connection, or one from the pool. A kept one the server
        closed meanwhile (a restart, a cut network) is dropped, never used."""
        while self._idle_writers:
            conn = self._idle_writers.pop()
            raw = conn.sync_connection.connection.dbapi_connection if conn.sync_connection else None
            if raw is not None and not conn.invalidated and not _is_lost(raw):
                return conn
            with contextlib.suppress(Exception):
                await conn.invalidate()
            await _close(conn)
        return await self.write_engine.connect()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is None:
            conn = await self._writer_connection()
            keep = False
            try:
                async with self._transaction(conn):
                    yield conn
                keep = len(self._idle_writers) < self._max_idle_writers
            except Exception as failure:
                if classify(failure) is not None:
                    # Lost, or stuck behind a statement that timed out: dropped at once (a
                    # rollback or reset would wait for the same server a second time).
                    await _drop(conn)
                raise
            finally:
                if keep:
                    self._idle_writers.append(conn)
                elif not conn.invalidated:
                    # Back to SQLAlchemy's pool, which resets it (or discards it if broken).
                    await _close(conn)
            return
        async with self._write_lock:
            if self._writer is None:
                self._writer = await self.write_engine.connect()
            conn = self._writer
            try:
                async with self._transaction(conn):
                    yield conn
            except BaseException as failure:
                fault = classify(failure) if isinstance(failure, Exception) else None
                # A file opened read-only stays so: the next write opens it again.
                if conn.invalidated or (fault is not None and fault.kind == "read_only"):
                    self._writer = None
                    with contextlib.suppress(Exception):
                        await conn.invalidate()
                    await _close(conn)
                raise

    @staticmethod
    @asynccontextmanager
    async def _transaction(conn: AsyncConnection) -> AsyncIterator[None]:
        transaction = DriverConnection(conn)
        await transaction.begin()
        try:
            yield
        except BaseException as failure:
            if (
                transaction.is_postgres
                and isinstance(failure, Exception)
                and classify(failure) is not None
            ):
                raise  # no rollback on a lost or stuck connection: the caller drops it
            try:
                await transaction.end(commit=False)
            except Exception as rollback_failure:
                # The connection broke under a statement (a cancelled one, a lost server) and
                # cannot roll back: the caller must see what happened first (a cancelled task
                # must stop), and the connection is dropped on close. A storage fault is
                # logged by whoever reports the failure: once, not here as well.
                quiet = classify(rollback_failure) is not None
                log.log(
                    logging.DEBUG if quiet else logging.WARNING,
                    "rollback failed (%s) after %r",
                    rollback_failure,
                    failure,
                )
            raise
        await transaction.end(commit=True)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.read_engine.begin() as conn:
            try:
                yield conn
            except Exception as failure:
                if not self.is_sqlite and classify(failure) is not None:
                    await _drop(conn)  # no rollback or reset waiting for the same server
                raise

    async def dispose(self) -> None:
        """Close every connection. The process is stopping: a connection that broke on the
        way is dropped with a warning, not raised."""
        writers, self._idle_writers = self._idle_writers, []
        if self._writer is not None:
            writers.append(self._writer)
            self._writer = None
        for conn in writers:
            await _close(conn)
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()
