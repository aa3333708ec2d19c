"""PostgreSQL: writes to different conversations that arrive together share a transaction
(threadline.conversations.batch). Each must still behave exactly as if it ran alone: its own
answer or error, all of it or nothing, exact derived fields and counts, the event log in
order per conversation; a write that cannot be batched runs alone."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text

from tests.conftest import World
from tests.test_event_log import all_events, assert_log_in_part_order, writers_and_a_moving_reader
from tests.waiting import until, until_waiting_on_locks
from threadline.apps import service as apps
from threadline.conversations import service
from threadline.conversations.batch import STALLED_AFTER_S, Batcher, batcher_of
from threadline.conversations.repository import ConversationRepository
from threadline.core import events as ev
from threadline.core.enums import AuthorKind, PartType
from threadline.core.errors import DomainError, NotFound
from threadline.core.model import Author
from threadline.core.rules import MAX_BODY_CHARS
from threadline.db import direct
from threadline.db.engine import Database
from threadline.db.schema import conversation_parts


@pytest.fixture
def pg(db: Database) -> Database:
    if db.is_sqlite:
        pytest.skip("SQLite runs one write transaction at a time: nothing to batch")
    return db


@contextmanager
def counting(statement_starts: str) -> Iterator[list[int]]:
    """Counts the statements sent meanwhile that start so (an item each)."""
    seen: list[int] = []

    def observe(statement: str, _args: list[Any]) -> None:
        if statement.startswith(statement_starts):
            seen.append(1)

    direct.observers.append(observe)
    try:
        yield seen
    finally:
        direct.observers.remove(observe)


def transactions() -> AbstractContextManager[list[int]]:
    """Counts the write transactions begun meanwhile."""
    return counting("BEGIN")


def single_locks() -> AbstractContextManager[list[int]]:
    """Counts the writes that locked their conversation alone, not in a batch."""
    return counting("SELECT pg_advisory_xact_lock($1)")


def admin(world: World) -> Author:
    return Author(AuthorKind.ADMIN, world.admin_id)


async def conversations(db: Database, world: World, n: int) -> list[int]:
    return [
        (
            await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body=f"{i}"))
        ).state.id
        for i in range(n)
    ]


async def assert_exact(db: Database) -> None:
    assert await service.check(db) == []


async def test_writes_arriving_together_share_transactions_and_each_gets_its_own_part(
    pg: Database, world: World
) -> None:
    cids = await conversations(pg, world, 24)
    _, start = await all_events(pg, world.app_id)
    writes = [
        ev.UserReply(body=f"user {i}")
        if i % 2
        else ev.AdminReply(author=admin(world), body=f"op {i}")
        for i in range(len(cids))
    ]
    with transactions() as begun:
        outcomes = await asyncio.gather(
            *(service.perform(pg, world.app_id, c, w) for c, w in zip(cids, writes, strict=True))
        )
    assert len(begun) < len(cids), "writes that arrived together shared transactions"
    for cid, write, outcome in zip(cids, writes, outcomes, strict=True):
        (part,) = outcome.parts
        assert outcome.state.id == cid
        assert part.body == write.body
        stored = await service.get_parts(pg, world.app_id, cid)
        assert [p.id for p in stored][-1] == part.id
        assert outcome.state.parts_count == len(stored)
        if isinstance(write, ev.AdminReply):
            assert outcome.people is not None
            assert list(outcome.people.admins) == [world.admin_id]
    events, _ = await all_events(pg, world.app_id, start, limit=500)
    assert len({e.id for e in events}) == len(events) == len(cids)
    assert {e.conversation_id: e.data["part"]["id"] for e in events} == {
        cid: outcome.parts[0].id for cid, outcome in zip(cids, outcomes, strict=True)
    }
    await assert_exact(pg)


async def test_a_refused_write_fails_alone_and_its_batch_commits_the_others(
    pg: Database, world: World
) -> None:
    cids = await conversations(pg, world, 8)
    foreign = await service.start_by_user(
        pg, world.foreign_app_id, world.foreign_user_id, ev.UserReply(body="theirs")
    )
    stranger = Author(AuthorKind.ADMIN, world.foreign_admin_id)
    calls = [
        service.perform(pg, world.app_id, cids[0], ev.UserReply(body="fine 0")),
        # Another app's conversation, and an admin of another app: unknown, as when alone.
        service.perform(pg, world.app_id, foreign.state.id, ev.UserReply(body="not mine")),
        service.perform(pg, world.app_id, cids[1], ev.AdminReply(author=stranger, body="x")),
        service.perform(pg, world.app_id, cids[2], ev.UserReply(body="x" * (MAX_BODY_CHARS + 1))),
        service.perform(
            pg, world.app_id, cids[3], ev.UserReply(body="not theirs"), user_id=world.user_id + 999
        ),
        *(
            service.perform(pg, world.app_id, c, ev.AdminReply(author=admin(world), body=f"ok {c}"))
            for c in cids[4:]
        ),
    ]
    with transactions() as begun:
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert len(begun) < len(calls)
    assert isinstance(results[1], NotFound)
    assert "conversation" in str(results[1])
    assert isinstance(results[2], NotFound)
    assert "admin" in str(results[2])
    assert isinstance(results[3], DomainError)
    assert isinstance(results[4], DomainError)
    for cid in cids[1:4]:
        assert len(await service.get_parts(pg, world.app_id, cid)) == 1, "the refused wrote nothing"
    assert len(await service.get_parts(pg, world.foreign_app_id, foreign.state.id)) == 1
    for cid, result in [(cids[0], results[0]), *zip(cids[4:], results[5:], strict=True)]:
        assert isinstance(result, service.Outcome)
        assert [p.id for p in await service.get_parts(pg, world.app_id, cid)][-1] == (
            result.parts[0].id
        )
    await assert_exact(pg)


async def test_a_write_that_needs_a_statement_of_its_own_runs_alone_and_right(
    pg: Database, world: World
) -> None:
    """A sender's reply reads the sender; a user's reply with an operator's answer in one
    write adds two parts (only the first part's id is reserved with the lock): both leave
    their batch and run alone; the others stay in theirs."""
    cids = await conversations(pg, world, 6)
    sender = Author(AuthorKind.SENDER, world.sender_id)
    calls = [
        service.perform(pg, world.app_id, cids[0], ev.AdminReply(author=sender, body="bot")),
        service.perform(
            pg,
            world.app_id,
            cids[1],
            ev.UserReply(body="question"),
            ev.AdminReply(author=admin(world), body="answer"),
        ),
        *(service.perform(pg, world.app_id, c, ev.UserReply(body="plain")) for c in cids[2:]),
    ]
    with single_locks() as alone:
        outcomes = await asyncio.gather(*calls)
    assert len(alone) == 2, "the two ran alone, the four others in batches"
    assert outcomes[0].parts[0].author == sender
    assert outcomes[0].people is not None
    assert list(outcomes[0].people.senders) == [world.sender_id]
    assert [p.type for p in outcomes[1].parts] == [PartType.REPLY_USER, PartType.REPLY_ADMIN]
    for cid, outcome in zip(cids, outcomes, strict=True):
        stored = await service.get_parts(pg, world.app_id, cid)
        assert [p.id for p in stored][-len(outcome.parts) :] == [p.id for p in outcome.parts]
    await assert_exact(pg)


async def test_a_retry_in_a_batch_answers_the_first_part_and_the_others_are_written_once(
    pg: Database, world: World
) -> None:
    cids = await conversations(pg, world, 6)
    first = await service.perform(pg, world.app_id, cids[0], ev.UserReply(body="a", random_id=77))
    calls = [
        service.perform(pg, world.app_id, cids[0], ev.UserReply(body="a", random_id=77)),
        *(
            service.perform(pg, world.app_id, c, ev.UserReply(body=f"b {c}", random_id=77))
            for c in cids[1:]
        ),
    ]
    batcher = batcher_of(pg)
    assert batcher is not None
    reruns = batcher.reruns
    outcomes = await asyncio.gather(*calls)
    assert batcher.reruns == reruns, "the retry was seen under the lock: no batch ran again"
    assert outcomes[0].duplicate
    assert [p.id for p in outcomes[0].parts] == [p.id for p in first.parts]
    assert len(await service.get_parts(pg, world.app_id, cids[0])) == 2
    for cid, outcome in zip(cids[1:], outcomes[1:], strict=True):
        assert not outcome.duplicate
        assert len(await service.get_parts(pg, world.app_id, cid)) == 2, "written exactly once"
    async with pg.read() as conn:
        count = select(func.count()).select_from(conversation_parts)
        assert (await conn.execute(count)).scalar_one() == 2 * len(cids)
    await assert_exact(pg)


async def test_writes_to_one_conversation_in_a_burst_go_one_per_batch_in_order(
    pg: Database, world: World
) -> None:
    (cid, other) = await conversations(pg, world, 2)
    _, start = await all_events(pg, world.app_id)
    bodies = [f"burst {i}" for i in range(12)]
    calls = [service.perform(pg, world.app_id, cid, ev.UserReply(body=b)) for b in bodies]
    calls += [service.perform(pg, world.app_id, other, ev.UserReply(body=b)) for b in bodies]
    outcomes = await asyncio.gather(*calls)
    for conversation in (cid, other):
        stored = await service.get_parts(pg, world.app_id, conversation)
        assert len(stored) == 1 + len(bodies)
        assert sorted(p.body for p in stored[1:]) == sorted(bodies)
        times = [p.created for p in stored]
        assert times == sorted(times), "parts are in time order"
    assert {o.parts[0].id for o in outcomes} == {
        p.id for c in (cid, other) for p in (await service.get_parts(pg, world.app_id, c))[1:]
    }
    events, _ = await all_events(pg, world.app_id, start, limit=500)
    assert len(events) == len(calls)
    await assert_log_in_part_order(pg, world.app_id, events)
    await assert_exact(pg)


async def test_count_cells_changed_by_the_writes_of_batches_stay_exact(
    pg: Database, world: World
) -> None:
    """On an assigned conversation, a user's reply makes it important and an operator's
    reply makes it unimportant again: each moves it between count cells of the inbox that
    other conversations' writes change too. A batch adds its writes' changes summed, in one
    statement; closes and assignments, running alone meanwhile, change the same cells."""
    cids = await conversations(pg, world, 16)
    operators = [world.admin_id, world.other_admin_id]
    for k, cid in enumerate(cids):
        await service.perform(pg, world.app_id, cid, ev.Assign(operators[k % 2], admin(world)))
    rng = random.Random(5)
    for round_ in range(4):
        calls = [
            service.perform(
                pg,
                world.app_id,
                cid,
                ev.UserReply(body="again?")
                if (k + round_) % 2
                else ev.AdminReply(author=admin(world), body="answered"),
            )
            for k, cid in enumerate(cids)
        ]
        alone = rng.sample(cids, 3)
        calls += [service.perform(pg, world.app_id, c, ev.Close(admin(world))) for c in alone]
        with transactions() as begun:
            results = await asyncio.gather(*calls, return_exceptions=True)
        assert len(begun) < len(calls), "the replies went in batches"
        assert all(isinstance(r, service.Outcome) for r in results[: len(cids)]), results
        flipped = [r for r in results[: len(cids)] if isinstance(r, service.Outcome)]
        assert {o.state.important for o in flipped} == {True, False}
    # The count cells are recounted from the conversations, the fields from the parts.
    await assert_exact(pg)


async def test_callers_cancelled_while_waiting_leave_the_others_and_the_data_exact(
    pg: Database, world: World
) -> None:
    cids = await conversations(pg, world, 12)
    tasks = [
        asyncio.create_task(service.perform(pg, world.app_id, c, ev.UserReply(body="maybe")))
        for c in cids
    ]
    await asyncio.sleep(0)
    for task in tasks[::3]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for cid, result in zip(cids, results, strict=True):
        parts = await service.get_parts(pg, world.app_id, cid)
        if isinstance(result, service.Outcome):
            assert parts[-1].id == result.parts[0].id
        else:
            assert isinstance(result, asyncio.CancelledError)
            assert len(parts) in (1, 2), "all of the write or nothing"
    await assert_exact(pg)
    # The batcher is idle and takes the next writes.
    batcher = batcher_of(pg)
    assert batcher is not None
    assert not batcher._running
    assert not batcher._waiting
    assert not batcher._busy
    after = service.perform(pg, world.app_id, cids[0], ev.UserReply(body="after"))
    assert (await asyncio.wait_for(after, 10)).parts[0].body == "after"


async def test_batches_of_two_processes_keep_the_log_in_order_per_conversation(
    pg: Database, world: World
) -> None:
    """Two Database objects (each with its own pool and batches, as two server processes)
    write concurrently to a few conversations; a reader polling all along sees every event
    once, and per conversation in the order the parts were stored."""
    other = Database(pg.url)
    try:
        await writers_and_a_moving_reader(
            [pg, other], world, conversations=5, writers=10, writes=12
        )
    finally:
        await other.dispose()
    await assert_exact(pg)


async def test_with_batching_off_every_write_has_its_transaction(
    world: World, pg: Database
) -> None:
    alone = Database(pg.url, batch_writes=1)
    try:
        assert batcher_of(alone) is None
        cids = await conversations(alone, world, 6)
        with transactions() as begun:
            await asyncio.gather(
                *(service.perform(alone, world.app_id, c, ev.UserReply(body="x")) for c in cids)
            )
        assert len(begun) == len(cids)
        await assert_exact(alone)
    finally:
        await alone.dispose()


async def test_an_admin_created_meanwhile_is_seen_by_a_batched_write(
    pg: Database, world: World
) -> None:
    cids = await conversations(pg, world, 4)
    newcomer = await apps.create_admin(pg, world.app_id, "Neo", email="neo@acme.test")
    author = Author(AuthorKind.ADMIN, newcomer)
    outcomes = await asyncio.gather(
        *(
            service.perform(pg, world.app_id, c, ev.AdminReply(author=author, body="hi"))
            for c in cids
        )
    )
    assert all(o.parts[0].author.id == newcomer for o in outcomes)
    await assert_exact(pg)


async def locked_elsewhere(
    db: Database, world: World, conversation_id: int
) -> tuple[asyncio.Task[None], asyncio.Event]:
    """A transaction holding the conversation's lock until the event returned is set."""
    release, locked = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with db.write() as conn:
            repo = ConversationRepository(conn)
            assert await repo.lock(world.app_id, conversation_id) is not None
            locked.set()
            await release.wait()

    holding = asyncio.create_task(holder())
    await locked.wait()
    return holding, release


async def test_writes_waiting_behind_a_stalled_batch_go_in_one_of_their_own(
    pg: Database, world: World
) -> None:
    """A batch waits for a conversation locked elsewhere; the writes to other conversations
    that arrive meanwhile do not wait for it."""
    held, others = (await conversations(pg, world, 1))[0], await conversations(pg, world, 4)
    holding, release = await locked_elsewhere(pg, world, held)
    stuck = asyncio.create_task(service.perform(pg, world.app_id, held, ev.UserReply(body="waits")))
    await until_waiting_on_locks(pg, 1)  # its batch waits for the conversation's lock
    outcomes = await asyncio.wait_for(
        asyncio.gather(
            *(service.perform(pg, world.app_id, c, ev.UserReply(body="goes")) for c in others)
        ),
        10,
    )
    assert not stuck.done()
    assert all(len(o.parts) == 1 for o in outcomes)
    release.set()
    await holding
    assert (await stuck).parts[0].body == "waits"
    await assert_exact(pg)


async def test_a_batch_whose_commit_fails_answers_the_error_and_never_writes_twice(
    pg: Database, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is lost after the server committed but before it answered: each write
    gets the error (as alone), and none is run again (it would be stored twice)."""
    cids = await conversations(pg, world, 4)
    attempt = Batcher._attempt
    failed: list[int] = []

    async def commit_then_fail(self: Batcher, batch: list[Any], *args: Any) -> None:
        await attempt(self, batch, *args)
        if len(batch) > 1 and not failed:
            failed.append(len(batch))
            raise ConnectionResetError("lost after COMMIT")

    monkeypatch.setattr(Batcher, "_attempt", commit_then_fail)
    # The first write starts a batch at once; the three others wait for it and go together.
    results = await asyncio.gather(
        *(service.perform(pg, world.app_id, c, ev.UserReply(body="once")) for c in cids),
        return_exceptions=True,
    )
    assert failed == [3]
    assert isinstance(results[0], service.Outcome)
    assert all(isinstance(r, ConnectionResetError) for r in results[1:]), results
    for cid in cids:
        bodies = [p.body for p in await service.get_parts(pg, world.app_id, cid)]
        assert bodies.count("once") == 1, "committed once, never run again"
    await assert_exact(pg)


async def test_a_write_running_sql_of_its_own_in_a_batch_sends_the_batch_back(
    pg: Database, world: World
) -> None:
    """A write that ran a statement through SQLAlchemy inside the batch's transaction makes
    the transaction untrustworthy: every write of the batch runs again alone."""
    cids = await conversations(pg, world, 3)
    batcher = batcher_of(pg)
    assert batcher is not None
    reruns = batcher.reruns
    seen: list[int] = []

    async def plain(_repo: Any, _conn: Any, state: Any) -> int:
        seen.append(state.id)
        return int(state.id)

    async def reads(_repo: Any, conn: Any, _state: Any) -> int:
        await conn.execute(select(func.count()).select_from(conversation_parts))
        return 0

    # The first starts a batch at once; the two others wait for it and go together.
    results = await asyncio.gather(
        batcher.run(world.app_id, cids[0], None, None, plain, lambda _: None),
        batcher.run(world.app_id, cids[1], None, None, plain, lambda _: None),
        batcher.run(world.app_id, cids[2], None, None, reads, lambda _: None),
        return_exceptions=True,
    )
    assert results[0] == cids[0]
    assert all(isinstance(r, direct.NotBatchable) for r in results[1:]), results
    assert batcher.reruns == reruns + 1


async def test_one_statement_takes_its_new_words_in_one_order(pg: Database, world: World) -> None:
    """What batches rely on: a statement inserting several parts adds their new words to the
    word list sorted, whatever the order of its parts. A: parts "a", "m", "z" waits at "m"
    (held by another transaction); B: parts "z", "a" then waits at "a" (A has it). Were the
    words added part after part, B would hold "z", which A wants next: a deadlock."""
    out = await service.start_by_user(pg, world.app_id, world.user_id, ev.UserReply(body="x"))
    async with pg.read() as conn:
        part = dict(
            (
                await conn.execute(
                    select(conversation_parts).where(conversation_parts.c.id == out.parts[0].id)
                )
            )
            .one()
            ._mapping
        )
    del part["id"]
    words = {w: f"ordered{w}word" for w in "amz"}
    held, release = asyncio.Event(), asyncio.Event()

    class Undo(Exception):
        pass

    async def holder() -> None:
        with contextlib.suppress(Undo):
            async with pg.write() as conn:
                await conn.execute(
                    text("INSERT INTO search_words (word) VALUES (:w)"), {"w": words["m"]}
                )
                held.set()
                await release.wait()
                raise Undo  # rolled back: "m" stays new for the others

    async def parts(*bodies: str) -> None:
        async with pg.write() as conn:
            rows = [{**part, "body": words[b]} for b in bodies]
            await conn.execute(insert(conversation_parts).values(rows))

    holding = asyncio.create_task(holder())
    await held.wait()
    first = asyncio.create_task(parts("a", "m", "z"))
    await until_waiting_on_locks(pg, 1)  # A waits at "m"
    second = asyncio.create_task(parts("z", "a"))
    await until_waiting_on_locks(pg, 2)  # B waits at "a"
    release.set()
    await holding
    await asyncio.wait_for(asyncio.gather(first, second), 30)  # no DeadlockDetectedError
    async with pg.read() as conn:
        listed = await conn.execute(
            text("SELECT count(*) FROM search_words WHERE word LIKE 'ordered%word'")
        )
        assert listed.scalar_one() == 3


async def test_a_cancelled_batch_cancels_its_writes_and_not_those_behind_it(
    pg: Database, world: World
) -> None:
    """A batch stuck on a conversation locked elsewhere is cancelled: its write is cancelled
    (nothing stored), and the next write to that conversation, waiting behind it, still
    runs once the lock is free."""
    (held,) = await conversations(pg, world, 1)
    holding, release = await locked_elsewhere(pg, world, held)
    stuck = asyncio.create_task(service.perform(pg, world.app_id, held, ev.UserReply(body="x")))
    batcher = batcher_of(pg)
    assert batcher is not None
    await until(lambda: len(batcher._running) == 1, "the batch of the first write runs")
    ((running, started),) = batcher._running.items()
    await until_waiting_on_locks(pg, 1)  # its conversation's lock is held elsewhere
    behind = asyncio.create_task(service.perform(pg, world.app_id, held, ev.UserReply(body="y")))
    loop = asyncio.get_running_loop()

    def checked_and_left_waiting() -> bool:
        # The stall check ran (the batch is older than STALLED_AFTER_S and no recheck is
        # pending) and left the second write waiting: its conversation is busy.
        return (
            len(batcher._waiting) == 1
            and loop.time() - started >= STALLED_AFTER_S * 2
            and batcher._recheck is None
        )

    await until(checked_and_left_waiting, "the second write waits behind the stuck batch")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stuck
    release.set()
    await holding
    assert (await asyncio.wait_for(behind, 10)).parts[0].body == "y"
    assert [p.body for p in await service.get_parts(pg, world.app_id, held)] == ["0", "y"]
    await assert_exact(pg)
