"""Concurrent events on one conversation never lose an update.

Two OS processes, each with its own `Database` on the same PostgreSQL database (or the same
SQLite file), run many asyncio tasks that reply to one conversation at the same time: user
replies, admin replies and reads by the admins, plus retried replies that share their
`random_id` across the processes. Afterwards every counter must be exact: the totals are
known in advance, and the order-dependent fields must match the parts as stored.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from tests.conftest import World
from tests.test_rules_properties import assert_invariants
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AuthorKind, PartType
from threadline.core.model import Author
from threadline.db.engine import Database

PROCESSES = 2
TASKS = 10  # per process
ROUNDS = 10  # events per task
RETRIED = 5  # replies every process sends with the same random_id
RETRIED_BASE = 900_000
# What task `t` does in round `r`: the mix is fixed so that the totals are known.
PLAN = ("user", "admin", "user", "read")
READY_TIMEOUT_S = 60
RUN_TIMEOUT_S = 120
ROOT = Path(__file__).resolve().parents[1]


def _kind(task: int, round_: int) -> str:
    return PLAN[(task * ROUNDS + round_) % len(PLAN)]


def _planned(kind: str) -> int:
    """How many events of `kind` one process performs."""
    return sum(_kind(t, r) == kind for t in range(TASKS) for r in range(ROUNDS))


# --- the worker process -----------------------------------------------------------------


async def _work(url: str, app_id: int, conversation_id: int, admins: list[int], proc: int) -> Any:
    db = Database(url, pool_size=TASKS)
    created: list[tuple[int, str, str]] = []
    retried: list[tuple[int, int, bool]] = []
    try:
        await service.get_conversation(db, app_id, conversation_id)  # connect before the start
        print("ready", flush=True)  # noqa: T201  (the parent waits for this line)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        assert line.strip() == "go", line

        async def task(t: int) -> None:
            for r in range(ROUNDS):
                kind = _kind(t, r)
                body = f"p{proc} t{t} r{r}"
                event: ev.Event
                if kind == "user":
                    event = ev.UserReply(body=body, random_id=1 + proc * 10**5 + t * 10**3 + r)
                elif kind == "admin":
                    author = Author(AuthorKind.ADMIN, admins[(proc + t + r) % len(admins)])
                    event = ev.AdminReply(author=author, body=body)
                else:
                    event = ev.ReadByAdmin()
                outcome = await service.perform(db, app_id, conversation_id, event)
                assert not outcome.duplicate
                created.extend((p.id, p.type.value, p.body) for p in outcome.parts)
                if t < RETRIED and r == ROUNDS // 2:
                    # The same retried request, racing with the other process's copy.
                    again = ev.UserReply(body=f"retry {t}", random_id=RETRIED_BASE + t)
                    outcome = await service.perform(db, app_id, conversation_id, again)
                    assert len(outcome.parts) == 1
                    retried.append((RETRIED_BASE + t, outcome.parts[0].id, outcome.duplicate))

        await asyncio.gather(*(task(t) for t in range(TASKS)))
    finally:
        await db.dispose()
    return {"created": created, "retried": retried}


def worker_main(argv: list[str]) -> None:
    """Entry point of one worker process: `url app_id conversation_id admins proc`."""
    url, app_id, conversation_id, admins, proc = argv
    result = asyncio.run(
        _work(url, int(app_id), int(conversation_id), json.loads(admins), int(proc))
    )
    print(json.dumps(result), flush=True)  # noqa: T201  (the result goes to the parent)


_WORKER = "import sys; from tests.test_concurrency import worker_main; worker_main(sys.argv[1:])"


# --- the test ---------------------------------------------------------------------------


async def _run_workers(url: str, app_id: int, cid: int, admins: list[int]) -> list[Any]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER,
            url,
            str(app_id),
            str(cid),
            json.dumps(admins),
            str(proc),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for proc in range(PROCESSES)
    ]
    try:
        # A start barrier: both processes are connected before either writes.
        for proc in procs:
            assert proc.stdout is not None
            ready = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
            if ready.strip() != b"ready":
                _, err = await proc.communicate()
                raise AssertionError(f"worker did not start: {ready!r}\n{err.decode()}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        outputs = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in procs)), RUN_TIMEOUT_S
        )
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        assert b"database is locked" not in err
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


async def test_concurrent_replies_from_two_processes(
    db: Database, db_url: str, world: World
) -> None:
    started = await service.start_by_user(
        db, world.app_id, world.user_id, ev.UserReply(body="start")
    )
    cid = started.state.id
    admins = [world.admin_id, world.other_admin_id]

    results = await _run_workers(db_url, world.app_id, cid, admins)

    state = await service.get_conversation(db, world.app_id, cid)
    parts = await service.get_parts(db, world.app_id, cid)
    users, operators, reads = _planned("user"), _planned("admin"), _planned("read")
    assert (users, operators, reads) == (50, 25, 25)  # the plan itself, per process

    # Exact totals: every reply made is stored once, none twice, none lost.
    user_replies = 1 + PROCESSES * users + RETRIED
    admin_replies = PROCESSES * operators
    assert len(parts) == user_replies + admin_replies
    assert state.parts_count == user_replies + admin_replies
    assert state.replies_count == user_replies + admin_replies
    types = Counter(p.type for p in parts)
    assert types == {PartType.REPLY_USER: user_replies, PartType.REPLY_ADMIN: admin_replies}
    # Nobody read as the user, so every operator reply is still unread by the user.
    assert state.user_unread_count == admin_replies
    assert state.unread_parts_count == admin_replies

    created = [tuple(c) for r in results for c in r["created"]]
    assert len(created) == PROCESSES * (users + operators)
    stored = {(p.id, p.type.value, p.body) for p in parts}
    assert set(created) <= stored
    replied = {
        f"p{p} t{t} r{r}"
        for p in range(PROCESSES)
        for t in range(TASKS)
        for r in range(ROUNDS)
        if _kind(t, r) != "read"
    }
    retries = {f"retry {t}" for t in range(RETRIED)}
    assert sorted(p.body for p in parts) == sorted({"start"} | replied | retries)

    # A retried reply is stored once, whichever process wins; the loser gets that part back.
    retried = [tuple(x) for r in results for x in r["retried"]]
    assert len(retried) == PROCESSES * RETRIED
    for key in range(RETRIED_BASE, RETRIED_BASE + RETRIED):
        answers = [(ident, dup) for k, ident, dup in retried if k == key]
        assert sorted(dup for _, dup in answers) == [False] + [True] * (PROCESSES - 1)
        assert len({ident for ident, _ in answers}) == 1
        (ident,) = {ident for ident, _ in answers}
        assert [p.id for p in parts if p.random_id == key] == [ident]

    # Order-dependent fields, from the stored order of the parts.
    ordered = sorted(parts, key=lambda p: p.id)
    last_admin = max(
        (i for i, p in enumerate(ordered) if p.type is PartType.REPLY_ADMIN), default=-1
    )
    after_answer = ordered[last_admin + 1 :]
    assert state.not_answered_admin_replies == len(after_answer)
    assert all(p.type is PartType.REPLY_USER for p in after_answer)
    assert state.last_admin_id == ordered[last_admin].author.id
    assert state.reply_last_id == ordered[-1].id
    assert state.last_update == ordered[-1].created
    # Answering or reading marks every earlier user reply read: the unread ones are the
    # newest user replies, all after the last operator reply.
    flags = [p.read for p in ordered if p.type is PartType.REPLY_USER]
    assert flags == sorted(flags, reverse=True)
    assert all(p.read for p in ordered[:last_admin] if p.type is PartType.REPLY_USER)
    assert state.admin_unread_count == flags.count(False)
    assert state.admin_unread_count <= len(after_answer)

    assert_invariants(state, parts)
    assert await service.check(db) == []
