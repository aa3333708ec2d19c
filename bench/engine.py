"""Events per second through the storage layer, against the raw-SQL floor.

The workload is a realistic operator-inbox mix on many conversations: user replies, admin
replies, reads by the operator and (re)assignments, each through `service.perform` (lock,
reference checks, pure rules, part insert, derived-field update, one transaction).

The floor is measured by recording every SQL statement and parameter set the engine sent
(BEGIN and COMMIT included) and replaying exactly those statements with the same driver
(asyncpg or aiosqlite) in the same process, on an identical copy of the seeded database.
On SQLite the replay also makes the same trips to aiosqlite's thread as the engine: the
statements the engine sent in one trip (deferred ones with the next statement or the
COMMIT) go in one trip, and a trip without a statement (SQLAlchemy fetching its rows)
is one too, so the floor does the same work apart from the engine's own.
The ratio engine/floor says how much of the database's speed the engine keeps. Engine and
floor take turns every 50 events, each on its own copy of the database, so a busy machine
slows both alike; each pass prints its ratio and the median is reported.

    python -m bench.engine [--events 4000] [--db sqlite|postgres|both]
                           [--synchronous FULL|NORMAL|EXTRA]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
from rich.console import Console
from rich.progress import Progress
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from threadline.apps import service as apps
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AuthorKind
from threadline.core.model import Author
from threadline.db import direct
from threadline.db.engine import SQLITE_SYNCHRONOUS as SQLITE_SYNCHRONOUS_MODES
from threadline.db.engine import Database, async_url
from threadline.db.migrate import upgrade

console = Console()
# Seconds of this process's CPU spent in each timed loop: the engine's own cost, apart from
# the database server's (which runs in other processes).
CPU: dict[str, float] = {}
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
# SQLite's `PRAGMA synchronous` for the engine and the floor alike, as the server's setting
# (`--synchronous` overrides it).
SQLITE_SYNCHRONOUS = os.environ.get("THREADLINE_SQLITE_SYNCHRONOUS", "FULL").strip().upper()


@dataclass
class Seed:
    app_id: int
    admins: list[int]
    conversations: list[int]


async def seed(url: str, conversations: int) -> Seed:
    db = Database(url)
    try:
        app = await apps.create_app(db, "Bench")
        admins = [await apps.create_admin(db, app.app_id, f"Admin {i}") for i in range(5)]
        ids = []
        for i in range(conversations):
            user = await apps.create_user(db, app.app_id, site_user_id=f"u{i}")
            out = await service.start_by_user(
                db, app.app_id, user, ev.UserReply(body=f"Hello, I need help with order {i}")
            )
            ids.append(out.state.id)
        return Seed(app.app_id, admins, ids)
    finally:
        await db.dispose()


def workload(s: Seed, n: int) -> list[tuple[int, ev.Event]]:
    """A fixed (seeded) mix: 40% user replies, 30% admin replies, 15% reads, 15% assigns."""
    rng = random.Random(42)
    out: list[tuple[int, ev.Event]] = []
    for i in range(n):
        cid = rng.choice(s.conversations)
        admin = Author(AuthorKind.ADMIN, rng.choice(s.admins))
        roll = rng.random()
        event: ev.Event
        if roll < 0.40:
            event = ev.UserReply(body=f"User message {i}: the parcel has not arrived yet")
        elif roll < 0.70:
            event = ev.AdminReply(author=admin, body=f"Operator answer {i}: we are on it")
        elif roll < 0.85:
            event = ev.ReadByAdmin()
        else:
            event = ev.Assign(admin_id=rng.choice(s.admins), by=admin)
        out.append((cid, event))
    return out


Statement = tuple[str, Any]
# In a recorded log (SQLite): the engine made a trip to aiosqlite's thread here, with the
# statements since the previous marker.
TRIP = "-- trip to the driver's thread"


def statement_count(log: list[Statement]) -> int:
    return sum(statement != TRIP for statement, _ in log)


def trip_count(log: list[Statement]) -> int:
    return sum(statement == TRIP for statement, _ in log)


def record(db: Database, log: list[Statement]) -> Callable[[], None]:
    """Record what the engine sends to the driver, including transaction control, and on
    SQLite each trip to aiosqlite's thread (a `TRIP` marker after its statements)."""
    sync_engine = db.write_engine.sync_engine
    hop = aiosqlite.Connection._execute

    async def traced_hop(conn: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        log.append((TRIP, None))
        return await hop(conn, fn, *args, **kwargs)

    if db.is_sqlite:
        aiosqlite.Connection._execute = traced_hop  # type: ignore[method-assign]

    def on_execute(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        log.append((statement, params))

    def on_commit(_conn: Any) -> None:
        log.append(("COMMIT", None))

    def on_rollback(_conn: Any) -> None:
        log.append(("ROLLBACK", None))

    def on_direct(statement: str, params: list[Any]) -> None:
        control = statement in ("BEGIN", "COMMIT", "ROLLBACK")
        log.append((statement, None if control else tuple(params)))

    direct.observers.append(on_direct)
    event.listen(sync_engine, "before_cursor_execute", on_execute)
    event.listen(sync_engine, "commit", on_commit)
    event.listen(sync_engine, "rollback", on_rollback)

    def stop() -> None:
        aiosqlite.Connection._execute = hop  # type: ignore[method-assign]
        direct.observers.remove(on_direct)
        event.remove(sync_engine, "before_cursor_execute", on_execute)
        event.remove(sync_engine, "commit", on_commit)
        event.remove(sync_engine, "rollback", on_rollback)

    return stop


async def run_engine(
    url: str, s: Seed, work: list[tuple[int, ev.Event]], log: list[Statement] | None, label: str
) -> float:
    db = Database(url, pool_size=2, sqlite_synchronous=SQLITE_SYNCHRONOUS)
    stop = record(db, log) if log is not None else None
    try:
        # Warm the connection and the statement caches outside the timed loop.
        await service.get_conversation(db, s.app_id, s.conversations[0])
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(label, total=len(work))
            start, cpu = time.perf_counter(), time.process_time()
            for i, (cid, event) in enumerate(work):
                await service.perform(db, s.app_id, cid, event)
                if i % 200 == 0:
                    progress.update(task, completed=i)
            elapsed = time.perf_counter() - start
            CPU[label.split(":")[0] + " engine"] = time.process_time() - cpu
        drift = await service.check(db)
        if drift:
            raise SystemExit(f"engine left drift: {drift[:3]}")
        return elapsed
    finally:
        if stop:
            stop()
        await db.dispose()


async def run_postgres_statements(conn: asyncpg.Connection, statements: list[Statement]) -> None:
    for statement, params in statements:
        if params is None:
            await conn.execute(statement)
        else:
            await conn.fetch(statement, *params)


def _run_trip(conn: sqlite3.Connection, statements: list[Statement]) -> None:
    """In aiosqlite's thread: the statements of one of the engine's trips."""
    for statement, params in statements:
        if statement == "COMMIT":
            conn.commit()
        elif statement == "ROLLBACK":
            conn.rollback()
        else:
            cursor = conn.execute(statement, params or ())
            try:
                cursor.fetchall()
            finally:
                cursor.close()


def trips(statements: list[Statement]) -> list[list[Statement]]:
    """The recorded statements grouped as the engine sent them, one list per trip."""
    grouped: list[list[Statement]] = []
    current: list[Statement] = []
    for statement, params in statements:
        if statement == TRIP:
            grouped.append(current)
            current = []
        else:
            current.append((statement, params))
    if current:
        grouped.append(current)
    return grouped


async def run_sqlite_statements(conn: aiosqlite.Connection, statements: list[Statement]) -> None:
    # The engine's trips to the driver's thread, each with the statements it carried.
    for trip in trips(statements):
        await conn._execute(_run_trip, conn._conn, trip)


async def connect_postgres(url: str) -> asyncpg.Connection:
    parsed = make_url(url)
    return await asyncpg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, database=parsed.database
    )


async def connect_sqlite(path: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", f"synchronous={SQLITE_SYNCHRONOUS}", "foreign_keys=ON"):
        await conn.execute(f"PRAGMA {pragma}")
    return conn


async def replay_postgres(url: str, log: list[Statement], label: str) -> float:
    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, database=parsed.database
    )
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(label, total=len(log))
            start, cpu = time.perf_counter(), time.process_time()
            for i, (statement, params) in enumerate(log):
                if params is None:
                    await conn.execute(statement)
                else:
                    await conn.fetch(statement, *params)
                if i % 1000 == 0:
                    progress.update(task, completed=i)
            CPU["postgres floor"] = time.process_time() - cpu
            return time.perf_counter() - start
    finally:
        await conn.close()


async def replay_sqlite(path: str, log: list[Statement], label: str) -> float:
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        for pragma in ("journal_mode=WAL", f"synchronous={SQLITE_SYNCHRONOUS}", "foreign_keys=ON"):
            await conn.execute(f"PRAGMA {pragma}")
        grouped = trips(log)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(label, total=len(grouped))
            start, cpu = time.perf_counter(), time.process_time()
            for i, trip in enumerate(grouped):
                await conn._execute(_run_trip, conn._conn, trip)
                if i % 1000 == 0:
                    progress.update(task, completed=i)
            CPU["sqlite floor"] = time.process_time() - cpu
            return time.perf_counter() - start


async def pg_admin(base: str, *statements: str) -> None:
    engine = create_async_engine(async_url(base), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


Floor = Callable[[list[Statement]], Awaitable[None]]


async def record_log(
    url: str, s: Seed, work: list[tuple[int, ev.Event]]
) -> tuple[list[Statement], list[int]]:
    """Run the workload once, recording every statement; `bounds[i]` is where event i starts."""
    db = Database(url, pool_size=2, sqlite_synchronous=SQLITE_SYNCHRONOUS)
    log: list[Statement] = []
    stop = record(db, log)
    bounds = [0]
    try:
        await service.get_conversation(db, s.app_id, s.conversations[0])
        log.clear()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("recording the engine's statements", total=len(work))
            for cid, event in work:
                await service.perform(db, s.app_id, cid, event)
                bounds.append(len(log))
                progress.advance(task)
    finally:
        stop()
        await db.dispose()
    return log, bounds


@dataclass
class Pass:
    engine_s: float = 0.0
    floor_s: float = 0.0
    engine_cpu: float = 0.0
    floor_cpu: float = 0.0


async def interleaved_pass(
    engine_url: str,
    floor: Floor,
    s: Seed,
    work: list[tuple[int, ev.Event]],
    log: list[Statement],
    bounds: list[int],
    label: str,
    chunk: int = 50,
) -> Pass:
    """Engine and floor take turns, `chunk` events at a time, so both see the same machine.

    Each runs on its own identical copy of the seeded database; the order alternates per
    chunk so neither always goes first.
    """
    db = Database(engine_url, pool_size=2, sqlite_synchronous=SQLITE_SYNCHRONOUS)
    result = Pass()
    try:
        await service.get_conversation(db, s.app_id, s.conversations[0])

        async def engine_chunk(lo: int, hi: int) -> None:
            for cid, event in work[lo:hi]:
                await service.perform(db, s.app_id, cid, event)

        async def floor_chunk(lo: int, hi: int) -> None:
            await floor(log[bounds[lo] : bounds[hi]])

        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(label, total=len(work))
            for n, lo in enumerate(range(0, len(work), chunk)):
                hi = min(len(work), lo + chunk)
                steps = [("engine", engine_chunk), ("floor", floor_chunk)]
                for name, step in steps if n % 2 == 0 else reversed(steps):
                    wall, cpu = time.perf_counter(), time.process_time()
                    await step(lo, hi)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    if name == "engine":
                        result.engine_s += wall
                        result.engine_cpu += cpu
                    else:
                        result.floor_s += wall
                        result.floor_cpu += cpu
                progress.update(task, completed=hi)
        drift = await service.check(db)
        if drift:
            raise SystemExit(f"engine left drift: {drift[:3]}")
    finally:
        await db.dispose()
    return result


async def bench_postgres(
    base: str, events: int, conversations: int, rounds: int
) -> dict[str, float]:
    names = ["tl_bench_seed", "tl_bench_record", "tl_bench_engine", "tl_bench_floor"]
    await pg_admin(base, *(f"DROP DATABASE IF EXISTS {n} WITH (FORCE)" for n in names))
    await pg_admin(base, f"CREATE DATABASE {names[0]}")

    def url_of(name: str) -> str:
        return make_url(base).set(database=name).render_as_string(hide_password=False)

    async def fresh(name: str) -> str:
        await pg_admin(
            base,
            f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
            f"CREATE DATABASE {name} TEMPLATE {names[0]}",
        )
        return url_of(name)

    try:
        await asyncio.to_thread(upgrade, url_of(names[0]))
        s = await seed(url_of(names[0]), conversations)
        work = workload(s, events)
        log, bounds = await record_log(await fresh(names[1]), s, work)
        passes = []
        for r in range(rounds):
            engine_url, floor_url = await fresh(names[2]), await fresh(names[3])
            conn = await connect_postgres(floor_url)
            try:

                async def floor(statements: list[Statement], conn: Any = conn) -> None:
                    await run_postgres_statements(conn, statements)

                passes.append(
                    await interleaved_pass(
                        engine_url, floor, s, work, log, bounds, f"postgres: pass {r + 1}"
                    )
                )
            finally:
                await conn.close()
        return summarise("postgres", events, log, passes)
    finally:
        await pg_admin(base, *(f"DROP DATABASE IF EXISTS {n} WITH (FORCE)" for n in names))


async def bench_sqlite(events: int, conversations: int, rounds: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="tl-bench-"))
    try:
        template = folder / "seed.db"
        await asyncio.to_thread(upgrade, f"sqlite:///{template}")
        s = await seed(f"sqlite:///{template}", conversations)
        work = workload(s, events)

        def fresh(name: str) -> Path:
            path = folder / name
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(template, path)
            return path

        log, bounds = await record_log(f"sqlite:///{fresh('record.db')}", s, work)
        passes = []
        for r in range(rounds):
            engine_url = f"sqlite:///{fresh('engine.db')}"
            conn = await connect_sqlite(str(fresh("floor.db")))
            try:

                async def floor(statements: list[Statement], conn: Any = conn) -> None:
                    await run_sqlite_statements(conn, statements)

                passes.append(
                    await interleaved_pass(
                        engine_url, floor, s, work, log, bounds, f"sqlite: pass {r + 1}"
                    )
                )
            finally:
                await conn.close()
        return summarise("sqlite", events, log, passes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def summarise(name: str, events: int, log: list[Statement], passes: list[Pass]) -> dict[str, float]:
    ratios = sorted(p.floor_s / p.engine_s for p in passes)
    ratio = statistics.median(ratios)
    engine_eps = events / statistics.median(p.engine_s for p in passes)
    floor_eps = events / statistics.median(p.floor_s for p in passes)
    engine_cpu = statistics.median(p.engine_cpu for p in passes) / events * 1e6
    floor_cpu = statistics.median(p.floor_cpu for p in passes) / events * 1e6
    load = os.getloadavg()[0]
    console.print(
        f"[bold]{name:8}[/] engine {engine_eps:7.0f} events/s   floor {floor_eps:7.0f} events/s"
        f"   ratio {ratio:.2f} (passes: {', '.join(f'{r:.2f}' for r in ratios)})"
    )
    trips_per_event = (
        f", {trip_count(log) / events:.2f} trips to the driver's thread/event (engine and floor)"
        if trip_count(log)
        else ""
    )
    console.print(
        f"{'':8} {statement_count(log) / events:.1f} statements/event{trips_per_event}; "
        "this process's CPU per event: "
        f"engine {engine_cpu:.0f} µs, floor {floor_cpu:.0f} µs; load average {load:.1f}"
    )
    return {"engine_eps": engine_eps, "floor_eps": floor_eps, "ratio": ratio}


async def main() -> None:
    global SQLITE_SYNCHRONOUS  # read by every SQLite connection the benchmark opens
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("THREADLINE_TEST_POSTGRES_URL", DEFAULT_PG),
        help="a server where the benchmark may create and drop its own databases",
    )
    parser.add_argument(
        "--synchronous",
        type=str.upper,
        choices=SQLITE_SYNCHRONOUS_MODES,
        default=SQLITE_SYNCHRONOUS,
        help="SQLite's PRAGMA synchronous (default: THREADLINE_SQLITE_SYNCHRONOUS, else FULL)",
    )
    args = parser.parse_args()
    SQLITE_SYNCHRONOUS = args.synchronous
    if args.db in ("sqlite", "both"):
        console.print(f"SQLite synchronous={SQLITE_SYNCHRONOUS}")
        await bench_sqlite(args.events, args.conversations, args.rounds)
    if args.db in ("postgres", "both"):
        await bench_postgres(args.postgres_url, args.events, args.conversations, args.rounds)


if __name__ == "__main__":
    asyncio.run(main())
