"""Replies per second through the real HTTP server, against the engine's raw-SQL floor.

Seeds a fresh database (an app, admins, a few hundred conversations, an API token), starts
the real server (`uvicorn threadline.web.app:create_app`, rate limiting off) as a
subprocess, and drives `POST /conversations/{id}/reply` from this process over HTTP/1.1
keep-alive connections: admin replies (`from_admin`) and user replies (`from_user`, the
as-user scope) mixed over the conversations, as urlencoded forms like the vendor's clients
send them. Every answer must be 200 with `meta.status` 200; anything else is an error.

- closed loop: C connections, each sending its next reply as soon as the previous answer
  arrives: replies/s, p50/p99 latency;
- open loop: replies scheduled at a fixed rate for a fixed time, latency counted from the
  scheduled send time (a reply that waits for a free connection is late, so coordinated
  omission cannot hide queueing): p50/p99/max latency and the rate achieved; when the rate
  is above what the closed loop reached, once more at half the closed loop's rate;
- the floor: `bench.engine` records the statements `service.perform` sends for the same
  replies and replays them with the raw driver on one connection; API replies/s over floor
  events/s is a yardstick of the machine's speed, not a ceiling (the server batches writes
  and runs several connections and workers, the floor does neither);
- the ceiling (PostgreSQL): the same replies written in process by as many concurrent
  writers as the client's connections, through as many `Database`s (each with its write
  batches) as the server has workers, every transaction recorded; then those transactions,
  batches and all, replayed with the raw driver on as many connections as were in flight at
  once. API replies/s over ceiling replies/s is the share of the database's speed the server
  keeps when it writes the same way;
- the benchmark exits with status 1 when a target is missed or a check fails: a request
  failed, the parts written differ from the successful answers, or `check` found drift.
- CPU per reply of this client, the server's processes and the PostgreSQL backends, and how
  busy the machine was with other work meanwhile (figures are noisy on a shared machine);
- with `--profile DIR`, where the server's CPU goes, by phase of the request.

    python -m bench.api [--db sqlite|postgres|both] [--duration 8] [--concurrency 32]
                        [--rate 1000] [--workers 1,2] [--client raw|httpx] [--profile DIR]

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import asyncpg
import httpx
import orjson
import uvloop
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url

from bench import engine as engine_bench
from threadline.apps import service as apps
from threadline.apps.repository import AppRepository
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AuthorKind, SentVia
from threadline.core.model import Author
from threadline.db import direct, schema
from threadline.db.engine import Database
from threadline.db.migrate import upgrade
from threadline.settings import Settings

# Lines are long (figures side by side): never wrap them, even when piped to a file.
console = Console(soft_wrap=True, highlight=False)
HOST = "127.0.0.1"
DEFAULT_PG = engine_bench.DEFAULT_PG
PG_NAMES = {
    name: f"tl_apibench_{name}"
    for name in ("seed", "record", "engine", "floor", "server", "ceiling")
}
# The share of user replies, as in bench.engine's mix (40% user to 30% admin replies).
USER_SHARE = 4 / 7
# Distinct requests prepared; the load cycles through them.
REQUEST_POOL = 20_000
# Upper bounds that keep every loop finite whatever the flags say.
MAX_CLOSED_REQUESTS = 1_000_000
REQUEST_TIMEOUT = 10.0
SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 15.0
# After an open-loop schedule ends, how long answers still in flight are waited for.
DRAIN_TIMEOUT = 5.0
# Targets for PostgreSQL on a 2-core machine.
TARGET_RPS = 1500.0
TARGET_RATIO = 0.6
TARGET_P99_MS = 50.0
TARGET_P99_RATE = 1000.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


# -- the workload ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A seeded database: its app, admins, conversations (with their user) and a token."""

    app_id: int
    admins: list[int]
    users: dict[int, int]  # conversation id -> its user id
    token: str

    def engine_seed(self) -> engine_bench.Seed:
        return engine_bench.Seed(self.app_id, self.admins, list(self.users))


@dataclass(frozen=True, slots=True)
class Reply:
    conversation: int
    body: str
    user: int | None = None  # a user reply written as this user
    admin: int | None = None  # an admin reply by this admin

    def event(self) -> ev.Event:
        """What the reply route hands to `service.perform` for this request."""
        if self.user is not None:
            return ev.UserReply(body=self.body, sent_via=SentVia.API)
        assert self.admin is not None
        return ev.AdminReply(
            author=Author(AuthorKind.ADMIN, self.admin), body=self.body, sent_via=SentVia.API
        )

    def form(self) -> bytes:
        fields = {"body": self.body}
        if self.user is not None:
            fields["from_user"] = str(self.user)
        else:
            fields["from_admin"] = str(self.admin)
        return urllib.parse.urlencode(fields).encode()


def replies(target: Target, n: int, seed: int = 7) -> list[Reply]:
    rng = random.Random(seed)
    conversations = list(target.users)
    out = []
    for i in range(n):
        cid = rng.choice(conversations)
        if rng.random() < USER_SHARE:
            body = f"User message {i}: the parcel has not arrived yet"
            out.append(Reply(cid, body, user=target.users[cid]))
        else:
            body = f"Operator answer {i}: we are on it"
            out.append(Reply(cid, body, admin=rng.choice(target.admins)))
    return out


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    body: bytes
    wire: bytes  # the whole HTTP/1.1 request, for the raw client


def requests_for(work: list[Reply], port: int, token: str) -> list[Request]:
    out = []
    for r in work:
        path = f"/conversations/{r.conversation}/reply"
        body = r.form()
        head = (
            f"POST {path} HTTP/1.1\r\n"
            f"Host: {HOST}:{port}\r\n"
            f"Authorization: Token {token}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(Request(path, body, head.encode() + body))
    return out


async def prepare(url: str, conversations: int) -> Target:
    """Migrate and seed `url` with bench.engine's seed, then issue a token with every scope."""
    await asyncio.to_thread(upgrade, url)
    s = await engine_bench.seed(url, conversations)
    db = Database(url)
    try:
        async with db.write() as conn:
            token = await apps.issue_token(
                AppRepository(conn), s.app_id, "bench", list(apps.ALL_SCOPES), apps.utcnow()
            )
        users = {}
        for cid in s.conversations:
            users[cid] = (await service.get_conversation(db, s.app_id, cid)).user_id
        return Target(s.app_id, s.admins, users, token)
    finally:
        await db.dispose()


async def count_parts(url: str) -> int:
    db = Database(url)
    try:
        async with db.read() as conn:
            return int(
                (
                    await conn.execute(select(func.count()).select_from(schema.conversation_parts))
                ).scalar_one()
            )
    finally:
        await db.dispose()


async def drift(url: str) -> int:
    db = Database(url)
    try:
        return len(await service.check(db))
    finally:
        await db.dispose()


# -- the floor ---------------------------------------------------------------------------------


@dataclass
class Floor:
    engine_eps: float
    floor_eps: float
    statements: float  # per reply
    other_cores: float  # cores other work kept busy meanwhile


async def floor(
    name: str, target: Target, events: int, fresh: Callable[[str], Awaitable[str]]
) -> Floor:
    """bench.engine's engine and floor for `events` replies of the same mix as the API load.

    The engine's statements are recorded once, then engine and raw-driver replay take turns
    every 50 replies (bench.engine's interleaved pass), each on its own copy of the seed.
    """
    work = [(r.conversation, r.event()) for r in replies(target, events, seed=11)]
    s = target.engine_seed()
    log, bounds = await engine_bench.record_log(await fresh("record"), s, work)
    engine_url, floor_url = await fresh("engine"), await fresh("floor")
    run: Callable[[Any, list[engine_bench.Statement]], Awaitable[None]]
    if name == "postgres":
        conn: Any = await engine_bench.connect_postgres(floor_url)
        run = engine_bench.run_postgres_statements
    else:
        conn = await engine_bench.connect_sqlite(make_url(floor_url).database or "")
        run = engine_bench.run_sqlite_statements

    async def replay(statements: list[engine_bench.Statement]) -> None:
        await run(conn, statements)

    databases = [make_url(u).database or "" for u in (engine_url, floor_url)]
    watch = BackendWatch(databases if name == "postgres" else [])
    polling = asyncio.create_task(watch.run())
    busy, wall = machine_busy(), time.perf_counter()
    try:
        p = await engine_bench.interleaved_pass(
            engine_url, replay, s, work, log, bounds, f"{name}: engine and floor"
        )
        pg_cpu = watch.used()
    finally:
        polling.cancel()
        await conn.close()
    busy, wall = machine_busy() - busy, time.perf_counter() - wall
    other = max(0.0, busy - p.engine_cpu - p.floor_cpu - pg_cpu) / wall
    statements = engine_bench.statement_count(log) / events
    return Floor(events / p.engine_s, events / p.floor_s, statements, other)


# -- the ceiling (PostgreSQL) ------------------------------------------------------------------


@dataclass
class Ceiling:
    workers: int
    replies_per_s: float  # the raw-driver replay
    engine_eps: float  # the in-process writers while recorded (recording costs a little)
    transactions: int  # write transactions
    writes_per_transaction: float
    lanes: int  # connections of the replay: the most transactions the writers had open at once
    statements: float  # per reply
    errors: int  # replayed transactions that failed (rolled back; the figure is then suspect)
    cpu_per_reply_us: float  # this process's CPU in the replay (the driver's share)


@dataclass
class _Recorder:
    """Every statement the writers send, grouped per transaction (per asyncio task: a batch
    runs in its own task, a write alone in its caller's), in the order transactions began."""

    finished: list[tuple[int, list[engine_bench.Statement]]] = field(default_factory=list)
    open: dict[int, tuple[int, list[engine_bench.Statement]]] = field(default_factory=dict)
    # The tasks inside a write transaction (BEGIN sent), and the most of them at once.
    writing: set[int] = field(default_factory=set)
    most_writing: int = 0
    begun: int = 0

    def statement(self, sql: str, params: Any) -> None:
        task = id(asyncio.current_task())
        if sql == "BEGIN":
            self.end(task)  # a group left open (a read SQLAlchemy ended unrecorded)
            self.writing.add(task)
            self.most_writing = max(self.most_writing, len(self.writing))
        if task not in self.open:  # outside BEGIN: a transaction of its own
            self.open[task] = (self.begun, [])
            self.begun += 1
        control = sql in ("BEGIN", "COMMIT", "ROLLBACK")
        self.open[task][1].append((sql, None if control else params))
        if sql in ("COMMIT", "ROLLBACK"):
            self.end(task)

    def end(self, task: int) -> None:
        self.writing.discard(task)
        found = self.open.pop(task, None)
        if found is not None:
            self.finished.append(found)

    def clear(self) -> None:
        self.finished.clear()
        self.open.clear()
        self.writing.clear()
        self.most_writing = 0

    def transactions(self) -> list[list[engine_bench.Statement]]:
        for task in list(self.open):
            self.end(task)
        return [group for _, group in sorted(self.finished, key=lambda found: found[0])]


def _record_into(db: Database, recorder: _Recorder) -> Callable[[], None]:
    sync_engine = db.write_engine.sync_engine

    def on_execute(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        recorder.statement(statement, params)

    def on_commit(_conn: Any) -> None:
        recorder.statement("COMMIT", None)

    def on_rollback(_conn: Any) -> None:
        recorder.statement("ROLLBACK", None)

    event.listen(sync_engine, "before_cursor_execute", on_execute)
    event.listen(sync_engine, "commit", on_commit)
    event.listen(sync_engine, "rollback", on_rollback)

    def stop() -> None:
        event.remove(sync_engine, "before_cursor_execute", on_execute)
        event.remove(sync_engine, "commit", on_commit)
        event.remove(sync_engine, "rollback", on_rollback)

    return stop


async def _write_concurrently(
    url: str,
    target: Target,
    work: list[Reply],
    workers: int,
    writers: int,
    pool_size: int,
    recorder: _Recorder,
) -> float:
    """The replies through `service.perform` by `writers` concurrent tasks spread over
    `workers` Databases (the server's processes, each with its write batches), recorded.
    Returns the seconds it took."""
    settings = Settings()
    dbs = [
        Database(url, pool_size=pool_size, batch_writes=settings.write_batch)
        for _ in range(workers)
    ]
    stops = [_record_into(db, recorder) for db in dbs]

    def on_direct(statement: str, params: list[Any]) -> None:
        recorder.statement(statement, tuple(params))

    try:
        for db in dbs:  # connections and statement caches warm, outside the recording
            await service.get_conversation(db, target.app_id, work[0].conversation)
        recorder.clear()
        direct.observers.append(on_direct)
        pending = iter(work)

        async def writer(db: Database) -> None:
            for r in pending:
                await service.perform(db, target.app_id, r.conversation, r.event(), user_id=r.user)

        start = time.perf_counter()
        await asyncio.gather(*(writer(dbs[i % workers]) for i in range(writers)))
        elapsed = time.perf_counter() - start
    finally:
        if on_direct in direct.observers:
            direct.observers.remove(on_direct)
        for stop in stops:
            stop()
        for db in dbs:
            await db.dispose()
    return elapsed


async def ceiling(
    target: Target,
    events: int,
    workers: int,
    writers: int,
    pool_size: int | None,
    fresh: Callable[[str], Awaitable[str]],
) -> Ceiling:
    """The replies written the server's way (concurrent writers, write batches, `workers`
    processes' worth of connections), then the same transactions replayed on the raw driver
    with as many connections as were in flight at once."""
    work = replies(target, events, seed=13)
    recorder = _Recorder()
    pool = pool_size or Settings().pool_size
    engine_s = await _write_concurrently(
        await fresh("record"), target, work, workers, writers, pool, recorder
    )
    transactions = recorder.transactions()
    lanes = max(1, recorder.most_writing)
    url = await fresh("ceiling")
    conns = [await engine_bench.connect_postgres(url) for _ in range(lanes)]
    errors = 0
    try:
        queue = iter(transactions)

        async def lane(conn: Any) -> None:
            nonlocal errors
            for statements in queue:
                try:
                    await engine_bench.run_postgres_statements(conn, statements)
                except asyncpg.PostgresError:
                    errors += 1
                    if not conn.is_closed():
                        await conn.execute("ROLLBACK")

        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(lane(conn) for conn in conns))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        for conn in conns:
            await conn.close()
    control = ("BEGIN", "COMMIT", "ROLLBACK")
    statements = sum(sql not in control for t in transactions for sql, _ in t)
    # The write transactions (the others are the writers' reads, replayed as they came).
    writes = sum(1 for t in transactions if t and t[0][0] == "BEGIN")
    return Ceiling(
        workers=workers,
        replies_per_s=events / wall,
        engine_eps=events / engine_s,
        transactions=writes,
        writes_per_transaction=events / max(1, writes),
        lanes=lanes,
        statements=statements / events,
        errors=errors,
        cpu_per_reply_us=cpu / events * 1e6,
    )


def show_ceiling(c: Ceiling) -> None:
    failed = f", [red]{c.errors} transactions failed in the replay[/]" if c.errors else ""
    console.print(
        f"[bold]postgres[/] ceiling for {c.workers} worker(s): {c.replies_per_s:6.0f} replies/s "
        f"(raw driver, the writers' {c.transactions} transactions on {c.lanes} connections: "
        f"{c.writes_per_transaction:.1f} replies and {c.statements:.2f} statements per reply "
        f"besides BEGIN and COMMIT; driver CPU {c.cpu_per_reply_us:.0f} µs per reply); "
        f"engine in-process the same way {c.engine_eps:6.0f} replies/s{failed}"
    )


# -- CPU accounting ----------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (uvicorn's workers, multiprocessing helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_of(pids: list[int]) -> dict[int, float]:
    """User plus system CPU seconds of each live process in `pids` (stat fields 14, 15)."""
    out = {}
    for pid in pids:
        if (fields := _stat(pid)) is not None:
            out[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def backends_of(*databases: str) -> list[int]:
    """PostgreSQL backends connected to `databases`, found by their process title."""
    needles = [f" {database} ".encode() for database in databases]
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with suppress(OSError):
                title = Path(f"/proc/{entry}/cmdline").read_bytes()
                if title.startswith(b"postgres: ") and any(n in title for n in needles):
                    out.append(int(entry))
    return out


class BackendWatch:
    """CPU used by the backends of `databases` while connections come and go (polled)."""

    def __init__(self, databases: list[str]) -> None:
        self.databases = databases
        self.start = cpu_of(backends_of(*databases)) if databases else {}
        self.last = dict(self.start)

    def poll(self) -> None:
        if self.databases:
            self.last.update(cpu_of(backends_of(*self.databases)))

    def used(self) -> float:
        self.poll()
        return sum(v - self.start.get(pid, 0.0) for pid, v in self.last.items())

    async def run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(0.25)


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting for I/O)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLOCK_TICKS


class CpuMeter:
    """CPU spent by this client, the server's processes and its PostgreSQL backends.

    Processes are listed again at the end, so a backend opened mid-run is counted too.
    """

    def __init__(self, server_pid: int | None, database: str | None) -> None:
        self.server_pid = server_pid
        self.database = database
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, dict[int, float], dict[int, float], float]:
        server = cpu_of(process_tree(self.server_pid)) if self.server_pid else {}
        pg = cpu_of(backends_of(self.database)) if self.database else {}
        return time.perf_counter(), time.process_time(), server, pg, machine_busy()

    def begin(self) -> None:
        self.start = self._sample()

    def end(self, replies: int) -> Cpu:
        wall0, client0, server0, pg0, busy0 = self.start
        wall1, client1, server1, pg1, busy1 = self._sample()
        wall, client, busy = wall1 - wall0, client1 - client0, busy1 - busy0
        server = sum(v - server0.get(pid, 0.0) for pid, v in server1.items())
        pg = sum(v - pg0.get(pid, 0.0) for pid, v in pg1.items())
        n = max(replies, 1)
        others = max(0.0, busy - client - server - pg) / wall if wall > 0 else 0.0
        return Cpu(client / n * 1e6, server / n * 1e6, pg / n * 1e6, others)


@dataclass
class Cpu:
    client_us: float
    server_us: float
    postgres_us: float
    other_cores: float  # cores kept busy by everything else on the machine

    def line(self) -> str:
        parts = [f"client {self.client_us:.0f}", f"server {self.server_us:.0f}"]
        if self.postgres_us:
            parts.append(f"postgres {self.postgres_us:.0f}")
        total = self.client_us + self.server_us + self.postgres_us
        cores = os.cpu_count() or 1
        bound = cores / total * 1e6 if total else 0.0
        return (
            f"CPU per reply (µs): {', '.join(parts)} = {total:.0f} "
            f"(all {cores} cores on it alone: ~{bound:.0f} replies/s); "
            f"other work on the machine kept {self.other_cores:.2f} cores busy"
        )


# -- CPU profile -------------------------------------------------------------------------------

SAMPLER_ENV = "TL_BENCH_CPU_SAMPLES"
SAMPLE_SECONDS = 0.002
# Installed as `sitecustomize` in the server's processes by `--profile` (PYTHONPATH): samples
# the Python stack every 2 ms of *CPU time* (ITIMER_PROF), unlike a wall-clock sampler such as
# py-spy, which on a busy machine charges the time a process waits for a CPU to the code that
# ran last (typically the send that woke PostgreSQL). Greenlet-aware: SQLAlchemy's sync code
# runs in greenlets, whose frames are joined to the request frames that switched to them.
# Stacks are rewritten every half second to `$TL_BENCH_CPU_SAMPLES.<pid>`, since uvicorn ends
# by re-raising SIGTERM, so atexit hooks never run.
SAMPLER = f"""
import os

if os.environ.get("{SAMPLER_ENV}"):
    import signal
    import sys
    import threading
    import time
    from collections import Counter

    _stacks = Counter()
    _out = os.environ["{SAMPLER_ENV}"]

    def _sample(_signum, frame):
        names = []
        getcurrent = getattr(sys.modules.get("greenlet"), "getcurrent", None)
        g = getcurrent() if getcurrent is not None else None
        while True:
            while frame is not None:
                code = frame.f_code
                names.append(f"{{code.co_qualname}} ({{code.co_filename}})")
                frame = frame.f_back
            if g is None or g.parent is None:
                break
            g = g.parent
            frame = g.gr_frame
        _stacks[";".join(reversed(names))] += 1

    def _dump():
        while True:
            time.sleep(0.5)
            path = f"{{_out}}.{{os.getpid()}}"
            with open(path + ".tmp", "w") as f:
                for stack, n in list(_stacks.items()):
                    f.write(f"{{stack}} {{n}}\\n")
            os.replace(path + ".tmp", path)

    signal.signal(signal.SIGPROF, _sample)
    signal.setitimer(signal.ITIMER_PROF, {SAMPLE_SECONDS}, {SAMPLE_SECONDS})
    threading.Thread(target=_dump, daemon=True).start()
"""

# Where a reply's server CPU goes: the first phase (in this order) with a frame in the stack.
PHASES = [
    ("auth: authenticate() token lookup, read txn", r"^authenticate \(.*threadline/apps/service"),
    (
        "route: get_conversation() read txn (from_user check)",
        r"^get_conversation \(.*threadline/conversations/service",
    ),
    ("engine: service.perform() write txn", r"^perform \(.*threadline/conversations/service"),
    ("route: Presenter queries (admins, senders)", r"^Presenter\."),
    ("route: presenter read txn begin/commit", r"^Database\.read \(.*threadline"),
    ("route: respond(), envelope to JSON", r"^respond \(.*threadline/api/envelope"),
    ("params: body read and parse", r"^(cached_raw_params|raw_params) "),
    ("params: pydantic ReplyParams", r"^params\.<locals>\.dependency"),
    ("auth: rest of require() (flags, scopes)", r"^require\.<locals>\.dependency"),
    ("route: reply() own code", r"^(reply|_reply|admin_author) \(.*threadline/api"),
    ("fastapi: dependency solving", r"^solve_dependencies "),
    ("fastapi/starlette: routing, middleware, Response", r"/(fastapi|starlette)/|^VersionPrefix"),
    ("uvicorn: HTTP parsing, ASGI cycle", r"^(HttpToolsProtocol|RequestResponseCycle)"),
]
STARTUP = r"_find_and_load|_populate_api_route_state|GenerateSchema|^lifespan |^startup "
LIBRARIES = [
    ("sqlalchemy", "/sqlalchemy/"),
    ("asyncpg", "/asyncpg/"),
    ("aiosqlite", "/aiosqlite/"),
    ("pydantic", "/pydantic"),
    ("fastapi/starlette", "/fastapi/"),
    ("fastapi/starlette", "/starlette/"),
    ("uvicorn", "/uvicorn/"),
    ("threadline", "/threadline/"),
]


def read_samples(prefix: Path) -> Counter[str]:
    stacks: Counter[str] = Counter()
    for path in prefix.parent.glob(f"{prefix.name}.*"):
        if path.suffix == ".tmp":
            continue
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if count.isdigit():
                stacks[stack] += int(count)
    return stacks


def library_of(frames: list[str]) -> str:
    """The library of the innermost frame that belongs to one (the stdlib otherwise)."""
    for frame in reversed(frames):
        if frame.startswith(("asyncio_run ", "Server.serve ", "Server._serve ")):
            break  # uvicorn's root frames: everything below is the event loop's
        for name, marker in LIBRARIES:
            if marker in frame:
                return name
    return "asyncio/stdlib"


def phase_table(stacks: Counter[str], server_us: float, out: Path) -> None:
    """Print where the server's CPU went, by phase of the request and by library."""
    out.write_text("".join(f"{stack} {n}\n" for stack, n in stacks.items() if n > 0))
    startup = re.compile(STARTUP)
    rules = [(name, re.compile(rx)) for name, rx in PHASES]
    by_phase: Counter[str] = Counter()
    by_library: Counter[str] = Counter()
    for stack, n in stacks.items():
        frames = stack.split(";")
        if n <= 0 or any(startup.search(f) for f in frames):
            continue
        library = library_of(frames)
        phase = next(
            (name for name, rx in rules if any(rx.search(f) for f in frames)),
            f"event loop: callbacks, tasks, futures ({library})",
        )
        by_phase[phase] += n
        by_library[library] += n
    total = sum(by_phase.values())
    if not total:
        console.print("  no CPU samples")
        return
    console.print(
        f"  server CPU by phase ({total} samples of {SAMPLE_SECONDS * 1e3:.0f} ms CPU; "
        f"µs scaled to the {server_us:.0f} µs/reply measured; stacks in {out}):"
    )
    for phase, n in by_phase.most_common():
        console.print(f"    {n / total:6.1%} {n / total * server_us:6.0f} µs  {phase}")
    libraries = ", ".join(f"{name} {n / total:.0%}" for name, n in by_library.most_common())
    console.print(f"  by library of the innermost frame: {libraries}")


# -- the server --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Server:
    """`uvicorn threadline.web.app:create_app` in its own process group, always stopped."""

    def __init__(
        self,
        url: str,
        workers: int,
        data_dir: Path,
        pool_size: int | None,
        cpu_samples: Path | None = None,
    ) -> None:
        self.url = url
        self.workers = workers
        self.port = free_port()
        self.data_dir = data_dir
        self.pool_size = pool_size
        self.cpu_samples = cpu_samples  # prefix of the sampler's per-process files
        self.log_path = data_dir / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "THREADLINE_DATABASE_URL": self.url,
            "THREADLINE_RATE_LIMIT": "",  # no limit: the benchmark is one token
            "THREADLINE_DATA_DIR": str(self.data_dir),
        }
        if self.pool_size is not None:
            env["THREADLINE_POOL_SIZE"] = str(self.pool_size)
        if self.cpu_samples is not None:
            folder = self.data_dir / "sampler"
            folder.mkdir(exist_ok=True)
            (folder / "sitecustomize.py").write_text(SAMPLER)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")]))
            env[SAMPLER_ENV] = str(self.cpu_samples)
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "threadline.web.app:create_app",
            "--factory",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--no-access-log",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603  (our own interpreter and arguments)
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_healthy(self) -> None:
        """Until /health answers 200 (every worker must also have started)."""
        assert self.proc is not None
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        with httpx.Client(base_url=f"http://{HOST}:{self.port}", timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise SystemExit(f"the server exited at start:\n{self.log_tail()}")
                with suppress(httpx.HTTPError):
                    if client.get("/health").status_code == 200:
                        break
                time.sleep(0.1)
            else:
                raise SystemExit(f"the server did not answer /health:\n{self.log_tail()}")
        if self.workers > 1:
            # The supervisor and one process per worker; each worker imports the app itself.
            while time.monotonic() < deadline and len(self.pids()) < self.workers + 1:
                time.sleep(0.1)
            time.sleep(0.5)

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid) if self.proc is not None else []

    def stop(self) -> None:
        """SIGTERM (uvicorn stops its workers), then SIGKILL to the group if it hangs."""
        proc, self.proc = self.proc, None
        stop_group(proc, signal.SIGTERM, SERVER_STOP_TIMEOUT)

    def log_tail(self, lines: int = 20) -> str:
        return tail_of(self.log_path, lines)


def stop_group(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> None:
    """Send `sig` to a started process, then SIGKILL its group if it has not ended in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


def tail_of(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file ("" when there is none)."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


@contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# -- the clients -------------------------------------------------------------------------------


class Sender(Protocol):
    async def send(self, request: Request) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class RawConnection:
    """One keep-alive HTTP/1.1 connection with hand-written requests: a cheap client."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, request: Request) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        try:
            self.writer.write(request.wire)
            head = await self.reader.readuntil(b"\r\n\r\n")
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at < 0:
                raise ConnectionError("answer without content-length")
            end = lower.find(b"\r\n", at + 17)
            body = await self.reader.readexactly(int(lower[at + 17 : end]))
            if b"\r\nconnection: close" in lower:
                await self.close()
            return int(head[9:12]), body
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()


class HttpxPool:
    """httpx.AsyncClient with a pool of `connections` keep-alive connections."""

    def __init__(self, port: int, token: str, connections: int) -> None:
        self.client = httpx.AsyncClient(
            base_url=f"http://{HOST}:{port}",
            headers={
                "Authorization": f"Token {token}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            timeout=REQUEST_TIMEOUT,
        )

    async def send(self, request: Request) -> tuple[int, bytes]:
        response = await self.client.post(request.path, content=request.body)
        return response.status_code, response.content

    async def close(self) -> None:
        await self.client.aclose()


def senders(kind: str, port: int, token: str, connections: int) -> list[Sender]:
    if kind == "httpx":
        pool = HttpxPool(port, token, connections)
        return [pool] * connections
    return [RawConnection(port) for _ in range(connections)]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    next_index: int = 0
    unanswered: int = 0  # open loop: still waiting when the drain time was up

    @property
    def done(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    def take(self, pool: list[Request]) -> Request:
        request = pool[self.next_index % len(pool)]
        self.next_index += 1
        return request


async def exchange(sender: Sender, request: Request, tally: Tally) -> bool:
    """Send one reply; True when it answered 200 in the envelope, else count the error."""
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            status, body = await sender.send(request)
    except TimeoutError:
        tally.errors["timeout"] += 1
        return False
    except (OSError, asyncio.IncompleteReadError, ConnectionError, httpx.HTTPError) as exc:
        tally.errors[f"connection: {type(exc).__name__}"] += 1
        return False
    if status != 200:
        tally.errors[f"HTTP {status}: {body[:160]!r}"] += 1
        return False
    try:
        meta = orjson.loads(body)["meta"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        tally.errors[f"not an envelope: {body[:160]!r}"] += 1
        return False
    if meta.get("status") != 200:
        tally.errors[f"meta.status {meta.get('status')}: {meta.get('error')}"] += 1
        return False
    return True


async def ticker(progress: Progress, task: Any, tally: Tally) -> None:
    while True:
        progress.update(task, completed=tally.done)
        progress.refresh()
        await asyncio.sleep(0.25)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        auto_refresh=False,  # refreshed by `ticker` on the benchmark's own loop
    )


async def closed_loop(
    conns: list[Sender], pool: list[Request], first: int, seconds: float, label: str
) -> tuple[Tally, float]:
    """Every connection sends its next reply when the last one is answered, for `seconds`."""
    tally = Tally(next_index=first)
    limit = first + MAX_CLOSED_REQUESTS

    async def client(sender: Sender) -> None:
        while time.perf_counter() < deadline and tally.next_index < limit:
            request = tally.take(pool)
            sent = time.perf_counter()
            if await exchange(sender, request, tally):
                tally.latencies.append(time.perf_counter() - sent)

    with progress_bar() as progress:
        task = progress.add_task(label, total=None)
        tick = asyncio.create_task(ticker(progress, task, tally))
        start = time.perf_counter()
        deadline = start + seconds
        try:
            await asyncio.gather(*(client(s) for s in conns))
        finally:
            tick.cancel()
        elapsed = time.perf_counter() - start
    return tally, elapsed


async def open_loop(
    conns: list[Sender], pool: list[Request], first: int, rate: float, seconds: float, label: str
) -> tuple[Tally, float]:
    """`rate` replies a second for `seconds`; latency counts from each scheduled send time."""
    total = max(1, int(rate * seconds))
    tally = Tally(next_index=first)
    queue: asyncio.Queue[tuple[float, Request] | None] = asyncio.Queue()
    start = time.perf_counter() + 0.01
    last_answer = start

    async def schedule() -> None:
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((due, tally.take(pool)))
        for _ in conns:
            queue.put_nowait(None)

    async def client(sender: Sender) -> None:
        nonlocal last_answer
        while (item := await queue.get()) is not None:
            due, request = item
            if await exchange(sender, request, tally):
                last_answer = time.perf_counter()
                tally.latencies.append(last_answer - due)

    with progress_bar() as progress:
        task = progress.add_task(label, total=total)
        tick = asyncio.create_task(ticker(progress, task, tally))
        try:
            await asyncio.wait_for(
                asyncio.gather(schedule(), *(client(s) for s in conns)), seconds + DRAIN_TIMEOUT
            )
        except TimeoutError:
            tally.unanswered = total - tally.done
        finally:
            tick.cancel()
    return tally, last_answer - start


# -- one server run ----------------------------------------------------------------------------


@dataclass
class OpenLoop:
    rate: float
    achieved: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    unanswered: int
    cpu: Cpu

    @property
    def clean(self) -> bool:
        return not self.errors and not self.unanswered


@dataclass
class Result:
    db: str
    workers: int
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu: Cpu
    open: list[OpenLoop]
    # Every request of the run (warm-up included): answered with success, and failed (an
    # error or no answer in time: such a write may or may not have been stored).
    answered: int = 0
    failed: int = 0
    # Filled in after the run: the parts the server stored and the drifted fields.
    written: int = 0
    drifted: int = 0

    def check_failures(self) -> list[str]:
        """What the run got wrong: each successful answer must have stored exactly one part,
        nothing else may have been stored, and `check` must find no drift."""
        found = []
        if not self.answered <= self.written <= self.answered + self.failed:
            found.append(
                f"{self.db} workers {self.workers}: {self.written} parts written for "
                f"{self.answered} successful answers ({self.failed} failed requests)"
            )
        if self.drifted:
            found.append(f"{self.db} workers {self.workers}: {self.drifted} drifted fields")
        if self.failed:
            found.append(f"{self.db} workers {self.workers}: {self.failed} failed requests")
        return found


def quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def report_errors(name: str, tally: Tally) -> None:
    for error, count in tally.errors.most_common(5):
        console.print(f"[red]  {name}: {count} x {error}[/]")


async def start_profiler(
    folder: Path | None, name: str, server: Server, seconds: float
) -> asyncio.subprocess.Process | None:
    """py-spy (wall-clock samples, raw collapsed stacks) on the server for the closed loop."""
    if folder is None or server.proc is None:
        return None
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        console.print("  py-spy is not installed: CPU-time samples only (pip install py-spy)")
        return None
    out = folder / f"{name}-workers{server.workers}.pyspy.txt"
    return await asyncio.create_subprocess_exec(
        spy,
        "record",
        "--format",
        "raw",
        "--output",
        str(out),
        "--pid",
        str(server.proc.pid),
        "--subprocesses",
        "--nonblocking",
        "--duration",
        str(max(1, int(seconds))),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def stop_profiler(spy: asyncio.subprocess.Process | None) -> None:
    if spy is None:
        return
    try:
        await asyncio.wait_for(spy.wait(), SERVER_STOP_TIMEOUT)
    except TimeoutError:
        spy.terminate()
        await spy.wait()


async def drive(
    args: argparse.Namespace, db_name: str, server: Server, target: Target, database: str | None
) -> Result:
    pool = requests_for(replies(target, REQUEST_POOL), server.port, target.token)
    conns = senders(args.client, server.port, target.token, args.concurrency)
    tag = f"{db_name}, {server.workers} worker(s)"
    meter = CpuMeter(server.proc.pid if server.proc else None, database)
    try:
        warm, _ = await closed_loop(conns, pool, 0, args.warmup, f"{tag}: warm-up")
        report_errors("warm-up", warm)

        console.print(f"  closed loop  ({load()})")
        spy = await start_profiler(args.profile, db_name, server, args.duration)
        samples = read_samples(server.cpu_samples) if server.cpu_samples else Counter()
        meter.begin()
        tally, elapsed = await closed_loop(
            conns, pool, warm.next_index, args.duration, f"{tag}: closed loop"
        )
        closed_cpu = meter.end(len(tally.latencies))
        if server.cpu_samples is not None and args.profile is not None:
            samples = read_samples(server.cpu_samples) - samples
            out = args.profile / f"{db_name}-workers{server.workers}.cpu.txt"
            phase_table(samples, closed_cpu.server_us, out)
        await stop_profiler(spy)
        report_errors("closed loop", tally)
        lat = sorted(tally.latencies)

        rates = [args.rate]
        if len(lat) / elapsed < args.rate:
            # Above capacity the latency is only the backlog growing: also measure at half
            # the closed loop's rate, where the server keeps up.
            rates.append(max(1.0, round(len(lat) / elapsed / 2)))
        first = tally.next_index
        loops = []
        opened_tallies: list[Tally] = []
        for rate in rates:
            console.print(f"  open loop {rate:.0f}/s  ({load()})")
            meter.begin()
            opened, span = await open_loop(
                conns, pool, first, rate, args.duration, f"{tag}: open loop {rate:.0f}/s"
            )
            first = opened.next_index
            opened_tallies.append(opened)
            report_errors(f"open loop {rate:.0f}/s", opened)
            olat = sorted(opened.latencies)
            loops.append(
                OpenLoop(
                    rate=rate,
                    achieved=len(olat) / span if span > 0 else 0.0,
                    p50_ms=quantile(olat, 0.50) * 1e3,
                    p99_ms=quantile(olat, 0.99) * 1e3,
                    max_ms=(olat[-1] if olat else float("nan")) * 1e3,
                    errors=sum(opened.errors.values()),
                    unanswered=opened.unanswered,
                    cpu=meter.end(len(olat)),
                )
            )
    finally:
        for sender in {id(s): s for s in conns}.values():
            await sender.close()
    loop_tallies = [warm, tally, *opened_tallies]
    return Result(
        db=db_name,
        workers=server.workers,
        concurrency=args.concurrency,
        rps=len(lat) / elapsed,
        p50_ms=quantile(lat, 0.50) * 1e3,
        p99_ms=quantile(lat, 0.99) * 1e3,
        errors=sum(tally.errors.values()),
        cpu=closed_cpu,
        open=loops,
        answered=sum(len(t.latencies) for t in loop_tallies),
        failed=sum(sum(t.errors.values()) + t.unanswered for t in loop_tallies),
    )


def show(r: Result, floor_: Floor, ceiling_: Ceiling | None = None) -> None:
    # SQLite has one writer and no batches: its floor is its ceiling.
    share = (
        f"  of the ceiling (same concurrency and batches, raw driver) "
        f"{r.rps / ceiling_.replies_per_s:.2f}"
        if ceiling_ is not None
        else "  (one writer, no batches: the floor is the ceiling)"
        if r.db == "sqlite"
        else ""
    )
    console.print(
        f"[bold]{r.db:8}[/] workers {r.workers}  closed loop C={r.concurrency}: "
        f"[bold]{r.rps:6.0f} replies/s[/]  p50 {r.p50_ms:6.1f} ms  p99 {r.p99_ms:6.1f} ms  "
        f"errors {r.errors}  machine-speed yardstick (to the one-connection floor) "
        f"{r.rps / floor_.floor_eps:.2f}{share}"
    )
    console.print(f"{'':8} {r.cpu.line()}")
    for o in r.open:
        behind = f"  unanswered {o.unanswered} (behind the schedule)" if o.unanswered else ""
        console.print(
            f"{'':8} workers {r.workers}  open loop {o.rate:5.0f}/s: achieved "
            f"{o.achieved:6.0f}/s  p50 {o.p50_ms:6.1f} ms  p99 {o.p99_ms:6.1f} ms  "
            f"max {o.max_ms:6.1f} ms  errors {o.errors}{behind}"
        )
        console.print(f"{'':8} {o.cpu.line()}")


def serve_and_drive(
    args: argparse.Namespace,
    db_name: str,
    url: str,
    workers: int,
    target: Target,
    data_dir: Path,
    database: str | None,
) -> Result:
    """Start the server on `url`, drive it, stop it; check what it wrote."""
    before = asyncio.run(count_parts(url))
    samples = data_dir / "cpu" / f"{db_name}-{workers}" if args.profile else None
    if samples is not None:
        samples.parent.mkdir(exist_ok=True)
    with running(Server(url, workers, data_dir, args.pool_size, samples)) as server:
        result = uvloop.run(drive(args, db_name, server, target, database))
    result.written = asyncio.run(count_parts(url)) - before
    result.drifted = asyncio.run(drift(url))
    console.print(
        f"  {result.written} parts written by the server for {result.answered} successful "
        f"answers ({result.failed} failed); "
        + ("no drift" if not result.drifted else f"[red]{result.drifted} drifted fields[/]")
    )
    for failure in result.check_failures():
        console.print(f"[red]  check failed: {failure}[/]")
    return result


# -- per database ------------------------------------------------------------------------------


def bench_postgres(args: argparse.Namespace, data_dir: Path) -> tuple[list[Result], Floor]:
    base = args.postgres_url

    def url_of(name: str) -> str:
        return make_url(base).set(database=name).render_as_string(hide_password=False)

    async def fresh(kind: str) -> str:
        name = PG_NAMES[kind]
        await engine_bench.pg_admin(
            base,
            f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
            f"CREATE DATABASE {name} TEMPLATE {PG_NAMES['seed']}",
        )
        return url_of(name)

    async def drop_all() -> None:
        await engine_bench.pg_admin(
            base, *(f"DROP DATABASE IF EXISTS {n} WITH (FORCE)" for n in PG_NAMES.values())
        )

    try:
        asyncio.run(drop_all())
        asyncio.run(engine_bench.pg_admin(base, f"CREATE DATABASE {PG_NAMES['seed']}"))
        console.print(f"postgres: seeding {args.conversations} conversations  ({load()})")
        target = asyncio.run(prepare(url_of(PG_NAMES["seed"]), args.conversations))
        console.print(f"postgres: the engine's floor on {args.floor_events} replies  ({load()})")
        floor_ = asyncio.run(floor("postgres", target, args.floor_events, fresh))
        show_floor("postgres", floor_)
        results = []
        for workers in args.workers:
            console.print(
                f"postgres: the ceiling for {workers} worker(s) on {args.floor_events} replies  "
                f"({load()})"
            )
            ceiling_ = asyncio.run(
                ceiling(target, args.floor_events, workers, args.concurrency, args.pool_size, fresh)
            )
            CEILINGS[workers] = ceiling_
            show_ceiling(ceiling_)
            url = asyncio.run(fresh("server"))
            console.print(f"postgres: server with {workers} worker(s)  ({load()})")
            result = serve_and_drive(
                args, "postgres", url, workers, target, data_dir, PG_NAMES["server"]
            )
            show(result, floor_, ceiling_)
            results.append(result)
        return results, floor_
    finally:
        asyncio.run(drop_all())


def bench_sqlite(args: argparse.Namespace, data_dir: Path) -> tuple[list[Result], Floor]:
    folder = data_dir / "sqlite"
    folder.mkdir()
    template = folder / "seed.db"

    async def fresh(kind: str) -> str:
        path = folder / f"{kind}.db"
        for suffix in ("", "-wal", "-shm"):
            await asyncio.to_thread(Path(f"{path}{suffix}").unlink, missing_ok=True)
        await asyncio.to_thread(shutil.copyfile, template, path)
        return f"sqlite:///{path}"

    console.print(f"sqlite: seeding {args.conversations} conversations  ({load()})")
    target = asyncio.run(prepare(f"sqlite:///{template}", args.conversations))
    console.print(f"sqlite: the engine's floor on {args.floor_events} replies  ({load()})")
    floor_ = asyncio.run(floor("sqlite", target, args.floor_events, fresh))
    show_floor("sqlite", floor_)
    url = asyncio.run(fresh("server"))
    console.print(f"sqlite: server with 1 worker  ({load()})")
    result = serve_and_drive(args, "sqlite", url, 1, target, data_dir, None)
    show(result, floor_)
    return [result], floor_


# The PostgreSQL ceilings measured, by worker count.
CEILINGS: dict[int, Ceiling] = {}


def show_floor(name: str, f: Floor) -> None:
    console.print(
        f"[bold]{name:8}[/] floor {f.floor_eps:6.0f} replies/s (raw driver, one connection, "
        f"{f.statements:.1f} statements/reply); engine in-process {f.engine_eps:6.0f} replies/s; "
        f"other work on the machine kept {f.other_cores:.2f} cores busy"
    )


def verdict(results: list[Result], floors: dict[str, Floor]) -> list[str]:
    """Print the targets' table; the targets missed."""
    pg = [r for r in results if r.db == "postgres"]
    if not pg:
        return []
    console.print(f"Targets (PostgreSQL, 2 cores)  ({load()})")
    table = Table()
    for column in ("target", "measured", "met"):
        table.add_column(column)
    best = max(pg, key=lambda r: r.rps)
    ratio = best.rps / floors["postgres"].floor_eps
    at_rate = [(r, o) for r in pg for o in r.open if o.rate == TARGET_P99_RATE]

    missed: list[str] = []

    def row(target: str, measured: str, ok: bool) -> None:
        table.add_row(target, measured, "[green]yes[/]" if ok else "[red]no[/]")
        if not ok:
            missed.append(f"{target}: {measured}")

    row(
        f"≥ {TARGET_RPS:.0f} replies/s",
        f"{best.rps:.0f} (workers {best.workers})",
        best.rps >= TARGET_RPS and best.errors == 0,
    )
    row(
        f"≥ {TARGET_RATIO} of the floor (a machine-speed yardstick)",
        f"{ratio:.2f}",
        ratio >= TARGET_RATIO,
    )
    for r, o in at_rate:
        row(
            f"p99 ≤ {TARGET_P99_MS:.0f} ms at {TARGET_P99_RATE:.0f}/s (workers {r.workers})",
            f"{o.p99_ms:.1f} ms at {o.achieved:.0f}/s",
            o.p99_ms <= TARGET_P99_MS and o.clean,
        )
    console.print(table)
    return missed


def worker_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of worker counts, e.g. 1,2")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per loop")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="keep-alive connections (both loops)"
    )
    parser.add_argument("--rate", type=float, default=TARGET_P99_RATE, help="open loop replies/s")
    parser.add_argument(
        "--workers",
        type=worker_counts,
        default=[1, 2],
        help="PostgreSQL server worker counts to run, e.g. 2 or 1,2 (SQLite always uses 1)",
    )
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--floor-events", type=int, default=2000)
    parser.add_argument(
        "--pool-size", type=int, default=None, help="THREADLINE_POOL_SIZE of the server"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="profile the server during each closed loop: CPU-time samples (phase table "
        "printed, stacks in DIR/*.cpu.txt) and py-spy wall-clock samples (DIR/*.pyspy.txt)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("THREADLINE_TEST_POSTGRES_URL", DEFAULT_PG),
        help="a server where the benchmark may create and drop its own databases",
    )
    args = parser.parse_args()
    if args.duration <= 0 or args.rate <= 0 or args.concurrency < 1:
        parser.error("--duration, --rate and --concurrency must be positive")
    args.duration = min(args.duration, 300.0)
    args.warmup = min(max(args.warmup, 0.0), 60.0)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)

    signal.signal(signal.SIGTERM, _terminate)
    console.print(
        f"bench.api: client {args.client}, C={args.concurrency}, {args.duration:.0f} s per loop, "
        f"open loop {args.rate:.0f}/s  ({load()})"
    )
    data_dir = Path(tempfile.mkdtemp(prefix="tl-apibench-"))
    try:
        run(args, data_dir)
    except KeyboardInterrupt:
        console.print("[red]interrupted: the server is stopped and the databases dropped[/]")
        raise SystemExit(130) from None
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def run(args: argparse.Namespace, data_dir: Path) -> None:
    results: list[Result] = []
    floors: dict[str, Floor] = {}
    runs = {"sqlite": bench_sqlite, "postgres": bench_postgres}
    for name in ("sqlite", "postgres"):
        if args.db in (name, "both"):
            found, floors[name] = runs[name](args, data_dir)
            results.extend(found)
    if len(floors) > 1:
        console.print()
        for name, f in floors.items():
            show_floor(name, f)
        for c in CEILINGS.values():
            show_ceiling(c)
        for r in results:
            show(r, floors[r.db], CEILINGS.get(r.workers) if r.db == "postgres" else None)
    missed = verdict(results, floors)
    failures = [f for r in results for f in r.check_failures()]
    for failure in failures:
        console.print(f"[red]check failed: {failure}[/]")
    for target in missed:
        console.print(f"[red]target missed: {target}[/]")
    if failures or missed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
