"""Events per second through the storage layer, against the raw-SQL floor.

The workload is a realistic operator-inbox mix on many conversations: user replies, admin
replies, reads by the operator and (re)assignments, each through `service.perform` (lock,
reference checks, pure rules, part insert, derived-field update, one transaction).

The floor is measured by recording every SQL statement and parameter set the engine sent
(BEGIN and COMMIT included) and replaying exactly those statements with the same driver
(asyncpg or aiosqlite) in the same process, on an identical copy of the seeded database.
The ratio engine/floor says how much of the database's speed the engine keeps.

    python -m bench.engine [--events 4000] [--db sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
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
from threadline.db.engine import Database, async_url
from threadline.db.migrate import upgrade

console = Console()
# Seconds of this process's CPU spent in each timed loop: the engine's own cost, apart from
# the database server's (which runs in other processes).
CPU: dict[str, float] = {}
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


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


def record(db: Database, log: list[Statement]) -> Callable[[], None]:
    """Record what the engine sends to the driver, including transaction control."""
    sync_engine = db.write_engine.sync_engine

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
        direct.observers.remove(on_direct)
        event.remove(sync_engine, "before_cursor_execute", on_execute)
        event.remove(sync_engine, "commit", on_commit)
        event.remove(sync_engine, "rollback", on_rollback)

    return stop


async def run_engine(
    url: str, s: Seed, work: list[tuple[int, ev.Event]], log: list[Statement] | None, label: str
) -> float:
    db = Database(url, pool_size=2)
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
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            await conn.execute(f"PRAGMA {pragma}")
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(label, total=len(log))
            start, cpu = time.perf_counter(), time.process_time()
            for i, (statement, params) in enumerate(log):
                if statement == "COMMIT":
                    await conn.commit()
                elif statement == "ROLLBACK":
                    await conn.rollback()
                else:
                    await conn.execute_fetchall(statement, params or ())
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


async def bench_postgres(
    base: str, events: int, conversations: int, rounds: int
) -> dict[str, float]:
    names = ["tl_bench_seed", "tl_bench_record", "tl_bench_engine", "tl_bench_floor"]
    template_url = make_url(base).set(database=names[0]).render_as_string(hide_password=False)
    await pg_admin(base, *(f"DROP DATABASE IF EXISTS {n} WITH (FORCE)" for n in names))
    await pg_admin(base, f"CREATE DATABASE {names[0]}")
    await asyncio.to_thread(upgrade, template_url)
    s = await seed(template_url, conversations)
    work = workload(s, events)

    def url_of(name: str) -> str:
        return make_url(base).set(database=name).render_as_string(hide_password=False)

    async def fresh(name: str) -> str:
        await pg_admin(
            base,
            f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
            f"CREATE DATABASE {name} TEMPLATE {names[0]}",
        )
        return url_of(name)

    log: list[Statement] = []
    await run_engine(await fresh(names[1]), s, work, log, "postgres: recording")
    engine_times, floor_times = [], []
    for r in range(rounds):
        engine_times.append(
            await run_engine(await fresh(names[2]), s, work, None, f"postgres: engine {r + 1}")
        )
        floor_times.append(
            await replay_postgres(await fresh(names[3]), log, f"postgres: floor {r + 1}")
        )
    await pg_admin(base, *(f"DROP DATABASE IF EXISTS {n} WITH (FORCE)" for n in names))
    return summarise("postgres", events, log, engine_times, floor_times)


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

        log: list[Statement] = []
        await run_engine(f"sqlite:///{fresh('record.db')}", s, work, log, "sqlite: recording")
        engine_times, floor_times = [], []
        for r in range(rounds):
            path = fresh("engine.db")
            engine_times.append(
                await run_engine(f"sqlite:///{path}", s, work, None, f"sqlite: engine {r + 1}")
            )
            floor_times.append(
                await replay_sqlite(str(fresh("floor.db")), log, f"sqlite: floor {r + 1}")
            )
        return summarise("sqlite", events, log, engine_times, floor_times)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def summarise(
    name: str,
    events: int,
    log: list[Statement],
    engine_times: list[float],
    floor_times: list[float],
) -> dict[str, float]:
    engine_eps = events / statistics.median(engine_times)
    floor_eps = events / statistics.median(floor_times)
    ratio = engine_eps / floor_eps
    console.print(
        f"[bold]{name:8}[/] engine {engine_eps:8.0f} events/s   floor {floor_eps:8.0f} events/s   "
        f"ratio {ratio:.2f}   ({len(log) / events:.1f} statements/event, "
        f"median of {len(engine_times)} rounds of {events} events)"
    )
    engine_cpu = CPU[f"{name} engine"] / events * 1e6
    floor_cpu = CPU[f"{name} floor"] / events * 1e6
    console.print(
        f"{'':8} client CPU per event: engine {engine_cpu:.0f} µs, floor {floor_cpu:.0f} µs "
        f"(last round)"
    )
    return {"engine_eps": engine_eps, "floor_eps": floor_eps, "ratio": ratio}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("THREADLINE_TEST_POSTGRES_URL", DEFAULT_PG),
        help="a server where the benchmark may create and drop its own databases",
    )
    args = parser.parse_args()
    if args.db in ("sqlite", "both"):
        await bench_sqlite(args.events, args.conversations, args.rounds)
    if args.db in ("postgres", "both"):
        await bench_postgres(args.postgres_url, args.events, args.conversations, args.rounds)


if __name__ == "__main__":
    asyncio.run(main())
