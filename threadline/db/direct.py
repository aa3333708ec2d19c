"""Hot-path statements compiled by SQLAlchemy once, executed straight on the driver.

SQLAlchemy's per-execution work (greenlet hand-off, execution context, result set-up)
costs more than a loopback round trip to the database. For the few statements every
conversation write issues, we let SQLAlchemy compile the statement once per dialect and
parameter set, keep its bind processors (so column types behave exactly as elsewhere), and
run the SQL on the driver connection inside the transaction SQLAlchemy opened.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Insert, Select, event
from sqlalchemy.dialects.postgresql.dml import OnConflictDoUpdate as PostgresUpsert
from sqlalchemy.dialects.sqlite.dml import OnConflictDoUpdate as SqliteUpsert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.compiler import Compiled
from sqlalchemy.sql.expression import ClauseElement


@dataclass(frozen=True, slots=True)
class _Form:
    compiled: Compiled
    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    # True when every bound value comes from the caller's parameters (no literals in the
    # statement), so SQLAlchemy's construct_params can be skipped.
    params_only: bool


class DirectStatement:
    """A DML statement (INSERT/UPDATE, optionally RETURNING) for the driver connection."""

    def __init__(self, statement: ClauseElement, *, one_conversation: bool = False) -> None:
        self.statement = statement
        self._forms: dict[tuple[str, frozenset[str]], _Form] = {}
        # The table a deferred statement writes, and whether it only adds rows (a plain
        # INSERT, or one that skips conflicts): see DriverConnection.defer.
        table = getattr(statement, "table", None)
        self.target: str | None = getattr(table, "name", None)
        self.only_adds = isinstance(statement, Insert) and not isinstance(
            getattr(statement, "_post_values_clause", None), PostgresUpsert | SqliteUpsert
        )
        # It changes only rows of the conversation its parameters name, which the writes of
        # other conversations in a batch never touch (see send_batch).
        self.one_conversation = one_conversation

    def _form(self, dialect: Dialect, keys: frozenset[str]) -> _Form:
        form = self._forms.get((dialect.name, keys))
        if form is None:
            compiled = self.statement.compile(dialect=dialect, column_keys=sorted(keys))
            names = tuple(getattr(compiled, "positiontup", None) or ())
            bind_processors: dict[str, Any] = getattr(compiled, "_bind_processors", {})
            processors = tuple(bind_processors.get(n) for n in names)
            form = _Form(compiled, str(compiled), names, processors, set(names) <= keys)
            self._forms[(dialect.name, keys)] = form
        return form

    def bind(self, dialect: Dialect, params: dict[str, Any]) -> tuple[str, list[Any]]:
        form = self._form(dialect, frozenset(params))
        # construct_params adds the values bound in the statement (e.g. `.values(read=True)`).
        values = params if form.params_only else (form.compiled.construct_params(params) or {})
        args = [values[name] for name in form.names]
        for i, process in enumerate(form.processors):
            if process is not None and args[i] is not None:
                args[i] = process(args[i])
        return form.sql, args


class DirectSelect(DirectStatement):
    """A SELECT whose rows are converted by the column types' own result processors."""

    def __init__(self, statement: Select[Any]) -> None:
        super().__init__(statement)
        self.keys = tuple(str(c.key) for c in statement.selected_columns)
        self._columns = tuple(statement.selected_columns)
        # Per dialect: (column position, result processor) for the columns that have one.
        self._processors: dict[str, list[tuple[int, Callable[[Any], Any]]]] = {}

    def convert(self, dialect: Dialect, rows: Sequence[Any]) -> list[dict[str, Any]]:
        processors = self._processors.get(dialect.name)
        if processors is None:
            processors = []
            for position, column in enumerate(self._columns):
                found = column.type._cached_result_processor(dialect, None)
                if found is not None:
                    processors.append((position, found))
            self._processors[dialect.name] = processors
        converted = []
        for row in rows:
            values = list(row)
            for position, convert in processors:
                values[position] = convert(values[position])
            converted.append(dict(zip(self.keys, values, strict=True)))
        return converted


# Callables told of every statement run here (benchmarks record them to replay the floor).
observers: list[Callable[[str, list[Any]], None]] = []


_ADAPTER = "threadline.direct.adapter"
_DRIVER = "threadline.direct.driver"
_DEFERRED = "threadline.direct.deferred"
# Set while a write of a batch runs (see DriverConnection.start_member).
_MEMBER = "threadline.direct.member"
# Events appended in the transaction so far: the next event's index in it.
_EVENTS = "threadline.direct.events"
Pending = list[tuple[str, Any]]


@dataclass(slots=True)
class Deferred:
    """A transaction's deferred statements (kept on its connection's info while pending)."""

    statements: Pending = field(default_factory=list)
    # PostgreSQL: the tables they write, and the positions of those that must add a row.
    written: set[str | None] = field(default_factory=set)
    must_add: list[int] = field(default_factory=list)
    # In a batch's write: amounts to add per key, which the batch adds summed over its
    # writes in one statement (see DriverConnection.batch_sums).
    sums: Counter[Any] = field(default_factory=Counter)


_PLACEHOLDER = re.compile(r"\$(\d+)")


class NothingAdded(Exception):
    """A deferred INSERT that must add its row skipped it (a conflict); the transaction is
    rolled back."""


class NotBatchable(Exception):
    """A write running in a batch needs a statement of its own (a read, or deferred
    statements sent early): it leaves the batch and runs again in a transaction of its own."""


def _shift(placeholder: re.Match[str], offset: int) -> str:
    return f"${int(placeholder.group(1)) + offset}"


def combine(pending: Pending, must_add: Sequence[int] = ()) -> tuple[str, list[Any]]:
    """PostgreSQL: several statements as one, in one round trip.

    Each becomes a data-modifying WITH query; PostgreSQL runs every one of them to completion,
    all on the snapshot the statement started with, so none sees another's rows (the caller
    only batches statements for which that is the same as running them in order). The one
    row answered says whether each statement in `must_add` returned a row.
    """
    if len(pending) == 1 and not must_add:
        return pending[0]
    sql = _combined_sql(tuple(sql for sql, _ in pending), tuple(must_add))
    return sql, [arg for _, statement_args in pending for arg in statement_args]


@functools.lru_cache(maxsize=512)
def _combined_sql(statements: tuple[str, ...], must_add: tuple[int, ...]) -> str:
    queries: list[str] = []
    offset = 0
    for i, sql in enumerate(statements):
        queries.append(
            f"w{i} AS ({_PLACEHOLDER.sub(functools.partial(_shift, offset=offset), sql)})"
        )
        offset += max((int(n) for n in _PLACEHOLDER.findall(sql)), default=0)
    added = " AND ".join(f"EXISTS (SELECT FROM w{i})" for i in must_add) or "true"
    return "WITH " + ", ".join(queries) + f" SELECT {added}"


def _run_in_thread(
    conn: sqlite3.Connection, pending: Pending, sql: str | None, args: Any, commit: bool
) -> list[Any]:
    """In aiosqlite's thread: the deferred statements, then `sql` (its rows), then COMMIT."""
    for deferred_sql, deferred_args in pending:
        conn.execute(deferred_sql, deferred_args)
    rows: list[Any] = []
    if sql is not None:
        cursor = conn.execute(sql, args)
        try:
            rows = cursor.fetchall()
        finally:
            cursor.close()
    if commit:
        conn.commit()
    return rows


def refuse_statements_behind_deferred(engine: AsyncEngine) -> None:
    """A statement SQLAlchemy runs would overtake the deferred ones of its transaction and
    not see their changes: refuse it (a caller must `flush()` first)."""

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def check(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if _MEMBER in conn.info:
            conn.info[_MEMBER] = "spoilt"  # the batch's transaction is not to be trusted
            raise NotBatchable(statement[:60])
        if _DEFERRED in conn.info:
            raise RuntimeError(f"deferred statements are pending before: {statement[:60]}")


def notify(sql: str, args: list[Any]) -> None:
    for observe in observers:
        observe(sql, args)


class DriverConnection:
    """The driver connection under an `AsyncConnection`, inside its transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.dialect = conn.dialect
        self.is_postgres = conn.dialect.name == "postgresql"
        self._driver: Any = None

    async def _get(self) -> Any:
        if self._driver is None:
            # Cached on the pooled connection's info, which lives as long as the connection.
            info = self.conn.info
            adapter: Any = info.get(_ADAPTER)
            if adapter is None:
                raw = await self.conn.get_raw_connection()
                adapter = info[_ADAPTER] = raw.dbapi_connection
                info[_DRIVER] = raw.driver_connection
            if self.is_postgres and adapter._transaction is None:
                # SQLAlchemy's asyncpg adapter starts its transaction lazily; start it now so
                # our statements are part of it.
                await adapter._start_transaction()
            self._driver = info[_DRIVER]
        return self._driver

    def _take_pending(self) -> Deferred:
        deferred: Deferred | None = self.conn.info.pop(_DEFERRED, None)
        return deferred or Deferred()

    async def defer(
        self, statement: DirectStatement, params: dict[str, Any], *, must_add: bool = False
    ) -> None:
        """Run a statement that returns nothing, in order, at the latest at COMMIT.

        Each statement is a round trip (on SQLite a hop to aiosqlite's thread and back) that
        costs more than the statement itself: deferred ones travel together with the next
        statement or the COMMIT. On PostgreSQL they go as one statement (`combine`), where
        none sees the rows of another: one that reads the rows it changes (an UPDATE, a
        DELETE, an upsert) of a table written by a pending one sends those first.

        With `must_add` (PostgreSQL, an INSERT ... ON CONFLICT DO NOTHING RETURNING), sending
        it raises `NothingAdded` if it added no row.
        """
        sql, args = statement.bind(self.dialect, params)
        if _MEMBER in self.conn.info and not (statement.only_adds or statement.one_conversation):
            # Rows other writes may change too (the inbox's count cells): in a batch, their
            # row locks would be taken in the order of its writes, not in one order.
            raise NotBatchable(f"a write to {statement.target}")
        if self.is_postgres:
            pending: Deferred | None = self.conn.info.get(_DEFERRED)
            if pending and not statement.only_adds and statement.target in pending.written:
                await self.flush()
        else:
            assert not must_add, "SQLite inserts return their rows at once"
            notify(sql, args)
        deferred: Deferred = self.conn.info.setdefault(_DEFERRED, Deferred())
        if must_add:
            deferred.must_add.append(len(deferred.statements))
        deferred.written.add(statement.target)
        deferred.statements.append((sql, args))

    async def flush(self) -> None:
        """Send the deferred statements now (before a statement SQLAlchemy runs here)."""
        if _MEMBER in self.conn.info:
            raise NotBatchable("a statement before the batch's COMMIT")
        if _DEFERRED not in self.conn.info:
            return
        if self.is_postgres:
            await self._send(self._take_pending())
        else:
            await self._sqlite_hop(None, None, commit=False)

    async def _send(self, deferred: Deferred) -> None:
        must_add = deferred.must_add
        sql, args = combine(deferred.statements, must_add)
        notify(sql, args)
        driver = await self._get()
        if not must_add:
            await driver.execute(sql, *args)
        elif not await driver.fetchval(sql, *args):
            raise NothingAdded

    async def fetch_ahead(self, sql: str) -> Any:
        """PostgreSQL: the one value of `sql` (which reads no table a deferred statement
        writes, such as `nextval`), run without sending the deferred statements first."""
        assert self.is_postgres
        notify(sql, [])
        driver = await self._get()
        return await driver.fetchval(sql)

    def next_event_index(self, count: int) -> int:
        """The index in this transaction of the first of `count` events about to be added."""
        first: int = self.conn.info.get(_EVENTS, 0)
        self.conn.info[_EVENTS] = first + count
        return first

    # PostgreSQL batches (threadline.conversations.batch): several conversation writes in
    # one transaction, each computed on its own, their statements sent together at the end.

    def start_member(self) -> None:
        """From now on statements are deferred for one write of a batch; any other statement
        raises `NotBatchable`."""
        assert self.is_postgres
        assert _DEFERRED not in self.conn.info
        self.conn.info[_MEMBER] = True

    def batch_sums(self) -> Counter[Any] | None:
        """In a batch's write, where it adds to shared rows (e.g. the inbox's count cells)
        instead of deferring a statement: the batch sends the sums of all its writes in one
        statement, which takes the rows in one order (the writes' own statements would take
        them in the order of the writes). None outside a batch."""
        if _MEMBER not in self.conn.info:
            return None
        deferred: Deferred = self.conn.info.setdefault(_DEFERRED, Deferred())
        return deferred.sums

    def end_member(self) -> Deferred | None:
        """The write's deferred statements; None if it tried to run another statement through
        SQLAlchemy (the batch's transaction is then not to be trusted)."""
        spoilt = self.conn.info.pop(_MEMBER) == "spoilt"
        deferred = self._take_pending()
        return None if spoilt else deferred

    async def send_batch(self, writes: Sequence[Deferred]) -> None:
        """Send the statements of a batch's writes, and those the batch deferred itself, as
        one statement. Each write changes only rows of its own conversation besides the rows
        it adds (`defer` refuses others in a batch), so none needs to see another's changes."""
        batch = self._take_pending()
        for write in writes:
            batch.must_add += [len(batch.statements) + i for i in write.must_add]
            batch.statements += write.statements
        if batch.statements:
            await self._send(batch)

    async def _sqlite_hop(self, sql: str | None, args: Any, *, commit: bool) -> list[Any]:
        driver = await self._get()
        pending = self._take_pending().statements
        if not pending and not commit and sql is not None:
            return list(await driver.execute_fetchall(sql, args))
        # aiosqlite runs any function on its thread with `_execute`; one call, one hop.
        rows: list[Any] = await driver._execute(
            _run_in_thread, driver._conn, pending, sql, args, commit
        )
        return rows

    async def begin(self) -> None:
        """Open the transaction on the driver (SQLite: BEGIN IMMEDIATE, a write lock)."""
        self._take_pending()  # nothing is left from an earlier transaction
        self.conn.info.pop(_EVENTS, None)
        if self.is_postgres:
            notify("BEGIN", [])
            await self._get()
        else:
            driver = await self._get()
            notify("BEGIN IMMEDIATE", [])
            await driver.execute_fetchall("BEGIN IMMEDIATE")

    async def end(self, *, commit: bool) -> None:
        """Commit or roll back the transaction `begin` opened."""
        if not commit:
            self._take_pending()
        if self.conn.in_transaction():
            # SQLAlchemy ran statements here too and tracks the transaction: end it through
            # SQLAlchemy so that its bookkeeping ends with the real transaction.
            try:
                if commit:
                    await self.flush()
            except BaseException:
                await self.conn.rollback()
                raise
            await (self.conn.commit() if commit else self.conn.rollback())
            return
        if self.is_postgres:
            adapter: Any = self.conn.info[_ADAPTER]
            try:
                if commit:
                    await self.flush()
            except BaseException:
                commit = False
                raise
            finally:
                notify("COMMIT" if commit else "ROLLBACK", [])
                transaction, adapter._transaction = adapter._transaction, None
                if transaction is not None:
                    await (transaction.commit() if commit else transaction.rollback())
            return
        notify("COMMIT" if commit else "ROLLBACK", [])
        driver = await self._get()
        if not commit:
            await driver.rollback()
            return
        try:
            await self._sqlite_hop(None, None, commit=True)
        except BaseException:
            await driver.rollback()
            raise

    async def select(self, statement: DirectSelect, params: dict[str, Any]) -> list[dict[str, Any]]:
        return statement.convert(self.dialect, await self.fetch(statement, params))

    async def fetch(self, statement: DirectStatement, params: dict[str, Any]) -> Sequence[Any]:
        """Run the statement; returns the rows of its RETURNING clause (else an empty list)."""
        sql, args = statement.bind(self.dialect, params)
        if self.is_postgres:
            await self.flush()
            notify(sql, args)
            driver = await self._get()
            return list(await driver.fetch(sql, *args))
        notify(sql, args)
        # One hop to aiosqlite's thread for the deferred statements, execute, fetch and close.
        return await self._sqlite_hop(sql, args, commit=False)
