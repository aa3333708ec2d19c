"""PostgreSQL: concurrent writes to different conversations share one transaction.

Under load, most of a conversation write's cost is per transaction and per statement, not
per row: the round trips (BEGIN, the locking read, the write, COMMIT), the executor set-up
of each statement and the commit's WAL flush. So while a process's writes are in flight,
the next ones wait and then go together: one transaction locks all their conversations in
one statement, computes each write on its own (the same code as a write alone), sends all
their statements as one, and commits once.

Each write is computed as if it were alone: its statements are deferred (see
threadline.db.direct), and one that needs any other statement (a read, an early flush: a
sender's reply, a write of two parts, a snoozed conversation's count cells) leaves the
batch and runs again in a transaction of its own once the batch has ended; so does a retry
(its random_id is seen used under the lock). A write whose rules refuse it gets its error;
the others go on. Rows that other conversations' writes change too, the inbox's count
cells, are changed once for the whole batch, summed, in the one order every writer uses.
If the batch's statements fail (a random_id used meanwhile by another process), nothing of
it is kept and every write runs again alone, so each gets the answer it would have got
alone; if the database is down or stuck, each write gets that fault at once; if its COMMIT
fails (a lost connection), each write gets that error, as alone.

The batch holds the advisory locks of all its conversations before its transaction gets an
id (see ConversationRepository.lock_many), which keeps the event log ordered per
conversation exactly as single writes do. A conversation is in one running batch at most.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.conversations.repository import ConversationRepository
from threadline.core.model import ConversationState
from threadline.db.direct import Deferred, DriverConnection, NotBatchable
from threadline.db.engine import Database
from threadline.db.faults import StorageUnavailable, classify
from threadline.inbox import maintain as inbox

log = logging.getLogger(__name__)

T = TypeVar("T")
# The write computed under the lock: (its repository, the connection, the locked state or
# None when the conversation is not of the app) -> its result.
Work = Callable[[ConversationRepository, AsyncConnection, ConversationState | None], Awaitable[T]]


@dataclass(eq=False, slots=True)
class _Write(Generic[T]):
    app_id: int
    conversation_id: int
    admin_id: int | None
    # The write's idempotency key (kind, random_id), if it has one.
    key: tuple[str, int] | None
    work: Work[T]
    committed: Callable[[T], None]
    future: asyncio.Future[T]


class _Spoilt(Exception):
    """A write ran a statement through SQLAlchemy inside the batch's transaction."""


# A batch still running after this long is held up (a conversation locked elsewhere, a slow
# server): the writes waiting behind it then go in a batch of their own, up to this many.
STALLED_AFTER_S = 0.05
_MOST_RUNNING = 8


@dataclass(eq=False)
class Batcher:
    """Collects a process's conversation writes into batches: at most `max_running` batches
    at once (more only when those have stalled), each of at most `max_writes` writes. With a
    free slot a write starts at once (alone, when nothing else waits), so batching adds no
    wait when the process is idle."""

    # Weak: the batcher lives as long as its database (see batcher_of), never longer.
    database: weakref.ref[Database]
    max_writes: int
    max_running: int
    _waiting: list[_Write[Any]] = field(default_factory=list)
    # The running batches' tasks, and when each started (the event loop's clock).
    _running: dict[asyncio.Task[None], float] = field(default_factory=dict)
    # The conversations of the running batches: a later write to one waits for its batch.
    _busy: set[int] = field(default_factory=set)
    _recheck: asyncio.TimerHandle | None = None
    # Batches whose writes all ran again alone (a retried random_id, a lost connection).
    reruns: int = 0

    async def run(
        self,
        app_id: int,
        conversation_id: int,
        admin_id: int | None,
        key: tuple[str, int] | None,
        work: Work[T],
        committed: Callable[[T], None],
    ) -> T:
        """The work's result once the batch committed; its error; or `NotBatchable`: the
        caller must run the write alone (also when `key` was used already: a retry).

        `committed` is called with the result right after the COMMIT, also when the caller
        was cancelled meanwhile (a write whose batch has started is not stopped by that).
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        write = _Write(app_id, conversation_id, admin_id, key, work, committed, future)
        self._waiting.append(write)
        self._start()
        return await future

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            if len(self._running) >= self.max_running and not self._stalled(loop.time()):
                if self._recheck is None:
                    self._recheck = loop.call_later(STALLED_AFTER_S, self._start_stalled)
                return
            batch = self._take()
            if not batch:
                return
            self._busy.update(w.conversation_id for w in batch)
            task = loop.create_task(self._run(batch), name="write-batch")
            self._running[task] = loop.time()

    def _stalled(self, now: float) -> bool:
        return len(self._running) < _MOST_RUNNING and all(
            now - started >= STALLED_AFTER_S for started in self._running.values()
        )

    def _start_stalled(self) -> None:
        self._recheck = None
        self._start()

    def _take(self) -> list[_Write[Any]]:
        batch: list[_Write[Any]] = []
        taken = set(self._busy)
        left: list[_Write[Any]] = []
        for write in self._waiting:
            if write.future.done():  # its caller was cancelled while it waited
                continue
            if len(batch) < self.max_writes and write.conversation_id not in taken:
                taken.add(write.conversation_id)
                batch.append(write)
            else:
                left.append(write)
        self._waiting = left
        return batch

    async def _run(self, batch: list[_Write[Any]]) -> None:
        results: list[tuple[Any, BaseException | None]] = []
        committing = asyncio.Event()  # set once the batch's statements went through
        try:
            await self._attempt(batch, results, committing)
        except Exception as exc:
            if committing.is_set():
                # The COMMIT failed (a lost connection): the writes may be stored. Each gets
                # the error, as it would alone; running them again could store them twice.
                log.warning("a batch of %d writes failed at COMMIT: %s", len(batch), exc)
                results = [(v, e if e is not None else exc) for v, e in results]
            elif (fault := classify(exc)) is not None:
                # The database is down or stuck: nothing was kept, and running each write
                # again alone would make each wait out the same timeouts once more before
                # its answer. Each is refused now (503): its client retries. So are the
                # writes that waited meanwhile: in turn, each would wait out the timeouts
                # again behind the one before (writes to one conversation go one by one).
                results = [(None, exc) for _ in batch]
                self._refuse_waiting(StorageUnavailable(fault))
            else:
                # Nothing of the batch was kept: each write runs again alone and meets its
                # own answer (the first write's part for a retried random_id, or an error).
                log.info("a batch of %d writes runs again one by one: %r", len(batch), exc)
                self.reruns += 1
                results = [_alone() for _ in batch]
        except BaseException:
            for write in batch:
                write.future.cancel()
            self._release(batch)
            self._start()  # the writes waiting behind it are not stranded
            raise
        self._release(batch)
        for write, (value, error) in zip(batch, results, strict=True):
            if error is None:
                try:
                    write.committed(value)
                except Exception:
                    log.exception("after the commit of a batched write")
            if write.future.done():
                continue
            if error is not None:
                write.future.set_exception(error)
            else:
                write.future.set_result(value)
        # After the answers: a write sent back to run alone goes before the next batch.
        self._start()

    def _refuse_waiting(self, error: BaseException) -> None:
        waiting, self._waiting = self._waiting, []
        for write in waiting:
            if not write.future.done():
                write.future.set_exception(error)

    def _release(self, batch: list[_Write[Any]]) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.pop(task, None)
        self._busy.difference_update(w.conversation_id for w in batch)

    async def _attempt(
        self,
        batch: list[_Write[Any]],
        results: list[tuple[Any, BaseException | None]],
        committing: asyncio.Event,
    ) -> None:
        db = self.database()
        assert db is not None, "a write of a disposed database"
        async with db.write() as conn:
            locked = await ConversationRepository(conn).lock_many(
                [(w.conversation_id, w.app_id, w.admin_id, w.key) for w in batch]
            )
            driver = DriverConnection(conn)
            statements: list[Deferred] = []
            for write in batch:
                repo = ConversationRepository(conn)
                row = locked.get(write.conversation_id)
                if row is not None and row["_done"]:
                    results.append(_alone())  # a retry: alone, it answers the first part
                    continue
                state = repo.adopt(row, write.admin_id) if row is not None else None
                driver.start_member()
                try:
                    value = await write.work(repo, conn, state)
                except NotBatchable:
                    results.append(_alone())
                except Exception as exc:
                    results.append((None, exc))
                else:
                    results.append((value, None))
                finally:
                    deferred = driver.end_member()
                if deferred is None:
                    raise _Spoilt
                if results[-1][1] is None:
                    statements.append(deferred)
            summed: Counter[Any] = Counter()
            for deferred in statements:
                summed.update(deferred.sums)
            await inbox.add_summed_counts(driver, summed)
            # Writes of the same kinds in the same order make the same statement, which the
            # driver has prepared already: order them by their statements' text.
            statements.sort(key=lambda d: tuple(sql for sql, _ in d.statements))
            await driver.send_batch(statements)
            committing.set()


def _alone() -> tuple[None, BaseException]:
    return None, NotBatchable("runs alone")


_batchers: weakref.WeakKeyDictionary[Database, Batcher] = weakref.WeakKeyDictionary()


def batcher_of(db: Database) -> Batcher | None:
    """The database's batcher; None on SQLite (one writer at a time) or with batching off."""
    if db.is_sqlite or db.batch_writes <= 1:
        return None
    batcher = _batchers.get(db)
    if batcher is None:
        batcher = _batchers[db] = Batcher(weakref.ref(db), db.batch_writes, db.batch_running)
    return batcher
