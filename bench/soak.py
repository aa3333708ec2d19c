"""Soak: a long mixed load at half the measured capacity; is latency and memory flat?

Seeds a PostgreSQL database of its own (like bench.api: an app, five admins, a few hundred
conversations, a token with every scope), starts the real server with `--workers` processes
(bench.api's server command) on Redis as the bus, opens `--sockets` WebSockets from
`--clients` processes (operators, half on `conversation.{app}`, half on
`conversation_reply.{app}`; a socket the server closes reconnects with its last tag), then:

1. **capacity**: a closed loop of the mix below over `--concurrency` keep-alive connections
   for `--capacity-seconds`: operations answered per second, with the sockets open;
2. **soak**: the same mix, open loop at `--load` (0.5) times that capacity (or `--rate`),
   for `--duration` minutes. Latency counts from each operation's *scheduled* time, so
   queueing cannot hide. The mix: replies (user and admin, as bench.api), reads (a
   conversation, or its parts), assignments (to an admin or to nobody), and inbox lists
   (the inbox's first page with every count, or the vendor's conversation list).

Every minute it prints p50 / p99 / max per kind of operation and over all, errors, socket
messages received, and the RSS of each process: the server's supervisor and workers, the
PostgreSQL backends of the database (summed; anonymous memory, as their RSS also counts
the shared buffers they touched), the socket clients and this driver.

Pass, over the minutes after `--warmup` minutes: the overall p99 of every minute within 2 times
of the lowest one; each server process's RSS never above the first measured minute's by more
than 10 %; no error, nothing unanswered, and `check` finds no drift at the end. The exit
status is 0 only then.

    python -m bench.soak                              # 30 minutes, 500 sockets, 2 workers
    python -m bench.soak --duration 3 --warmup 1      # a short run

See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import shutil
import signal
import tempfile
import time
import urllib.parse
import uuid
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import uvloop
from rich.console import Console
from sqlalchemy.engine import make_url

from bench import api as api_bench
from bench import engine as engine_bench
from bench import realtime as rt_bench

console = Console(soft_wrap=True, highlight=False)
HOST = api_bench.HOST
DATABASE = "tl_soakbench"
# The mix: kind, share, and how each operation is chosen (see `Mix`).
MIX = {"reply": 0.4, "read": 0.3, "assign": 0.1, "inbox": 0.2}
PASS_P99_RATIO = 2.0
PASS_RSS_GROWTH = 0.10
MINUTE = 60.0
# How long the driver waits for operations in flight once the schedule ended.
DRAIN_TIMEOUT = 10.0
# Seconds of the capacity loop before it counts.
CAPACITY_WARMUP = 3.0
TICK_SECONDS = 1.0
KB = 1024


def load() -> str:
    return api_bench.load()


# -- memory ---------------------------------------------------------------------------------


def memory_of(pid: int) -> tuple[int, int] | None:
    """(VmRSS, RssAnon) of `pid` in bytes; None once it is gone."""
    rss = anon = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * KB
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * KB
    except OSError:
        return None
    return rss, anon


# -- the socket clients (in their own processes) ----------------------------------------------


class CountingSocket(rt_bench.Socket):
    """bench.realtime's WebSocket client that only counts messages (and keeps the last
    event id to resume from): a soak of hours must not keep what it received."""

    count = 0

    def _message(self, buf: bytearray, start: int, end: int, now: float) -> None:
        comma = buf.find(b",", start + 6, end)
        self.last_id = max(self.last_id, int(buf[start + 6 : comma]))
        self.count += 1


def socket_process(pipe: Connection, specs: list[rt_bench.SocketSpec]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops us
    uvloop.run(_socket_main(pipe, specs))


async def _socket_main(pipe: Connection, specs: list[rt_bench.SocketSpec]) -> None:
    sockets = [CountingSocket(spec) for spec in specs]

    def counts(kind: str) -> tuple[str, int, int]:
        return kind, sum(s.count for s in sockets), sum(s.reconnects for s in sockets)

    await rt_bench.run_sockets(
        pipe,
        sockets,
        name=lambda s: s.spec.channel,
        tick=lambda: counts("tick"),
        last=lambda: counts("done"),
        tick_seconds=TICK_SECONDS,
    )


@dataclass
class Sockets:
    procs: list[multiprocessing.process.BaseProcess] = field(default_factory=list)
    pipes: list[Connection] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    reconnects: list[int] = field(default_factory=list)

    def start(self, specs: list[rt_bench.SocketSpec], processes: int) -> list[str]:
        context = multiprocessing.get_context("spawn")
        for i in range(processes):
            mine, theirs = context.Pipe()
            proc = context.Process(
                target=socket_process, args=(theirs, specs[i::processes]), daemon=True
            )
            proc.start()
            theirs.close()
            self.procs.append(proc)
            self.pipes.append(mine)
            self.received.append(0)
            self.reconnects.append(0)
        failures: list[str] = []
        for pipe in self.pipes:
            if not pipe.poll(rt_bench.CONNECT_TIMEOUT * 4):
                raise SystemExit("a socket process did not open its sockets in time")
            kind, found = pipe.recv()
            assert kind == "ready"
            failures += found
        return failures

    def poll(self) -> tuple[int, int]:
        for i, pipe in enumerate(self.pipes):
            while pipe.poll():
                _, self.received[i], self.reconnects[i] = pipe.recv()
        return sum(self.received), sum(self.reconnects)

    def stop(self) -> None:
        for pipe in self.pipes:
            with suppress(OSError):
                pipe.send("stop")
        for i, pipe in enumerate(self.pipes):
            with suppress(OSError, EOFError):
                while pipe.poll(30):
                    kind, self.received[i], self.reconnects[i] = pipe.recv()
                    if kind == "done":
                        break

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(5)


# -- the mix ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Op:
    kind: str
    request: api_bench.Request


def _get(path: str, port: int, token: str) -> api_bench.Request:
    head = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Token {token}\r\n\r\n"
    return api_bench.Request(path, b"", head.encode())


def _post(path: str, fields: dict[str, str], port: int, token: str) -> api_bench.Request:
    body = urllib.parse.urlencode(fields).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Token {token}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return api_bench.Request(path, body, head.encode() + body)


def mix(target: api_bench.Target, count: int, port: int, seed: int = 17) -> list[Op]:
    """`count` operations drawn by MIX's shares; the load cycles through them."""
    rng = random.Random(seed)
    replies = api_bench.requests_for(api_bench.replies(target, count, seed), port, target.token)
    conversations = list(target.users)
    app = target.app_id
    kinds, weights = list(MIX), list(MIX.values())
    out: list[Op] = []
    for i in range(count):
        kind = rng.choices(kinds, weights)[0]
        cid = rng.choice(conversations)
        if kind == "reply":
            request = replies[i]
        elif kind == "read":
            path = f"/conversations/{cid}" + ("/parts" if rng.random() < 0.5 else "")
            request = _get(path, port, target.token)
        elif kind == "assign":
            admin = rng.choice([0, *target.admins])
            fields = {"admin": str(admin), "from_admin": str(rng.choice(target.admins))}
            request = _post(f"/conversations/{cid}/assign", fields, port, target.token)
        else:
            path = (
                f"/ext/apps/{app}/inbox?status=open"
                if rng.random() < 0.5
                else f"/apps/{app}/conversations?count=20"
            )
            request = _get(path, port, target.token)
        out.append(Op(kind, request))
    return out


# -- the loops --------------------------------------------------------------------------------


@dataclass
class Minute:
    latencies: dict[str, list[float]] = field(default_factory=dict)  # kind -> seconds
    errors: Counter[str] = field(default_factory=Counter)
    rss: dict[str, tuple[int, int]] = field(default_factory=dict)  # process -> (rss, anon)
    backends: int = 0  # PostgreSQL backends of the database at the minute's end
    received: int = 0  # socket messages in the minute
    reconnects: int = 0


async def capacity(
    conns: list[api_bench.Sender], ops: list[Op], seconds: float, warmup: float
) -> float:
    """Operations answered per second by a closed loop over `conns`, after `warmup`
    seconds of the same loop (connections opened, statements prepared)."""
    tally = api_bench.Tally()
    counted = time.perf_counter() + warmup
    deadline = counted + seconds
    answered = 0

    async def client(sender: api_bench.Sender) -> None:
        nonlocal answered
        while time.perf_counter() < deadline:
            op = ops[tally.next_index % len(ops)]
            tally.next_index += 1
            if await api_bench.exchange(sender, op.request, tally) and (
                time.perf_counter() >= counted
            ):
                answered += 1

    await asyncio.gather(*(client(c) for c in conns))
    if tally.errors:
        raise SystemExit(f"errors while measuring the capacity: {dict(tally.errors)}")
    return answered / (time.perf_counter() - counted)


class Processes:
    """The processes whose memory is followed, found again every minute (a worker that
    uvicorn restarted is a new process: it shows up as one)."""

    def __init__(self, server: api_bench.Server, sockets: Sockets) -> None:
        self.server = server
        self.sockets = sockets

    def sample(self, minute: Minute) -> None:
        tree = self.server.pids()
        if tree:
            named = {f"server supervisor {tree[0]}": tree[0]}
            named |= {f"server process {pid}": pid for pid in tree[1:]}
        else:
            named = {}
        named |= {f"socket client {pid}": pid for pid in self.sockets.pids()}
        named[f"driver {os.getpid()}"] = os.getpid()
        for name, pid in named.items():
            if (found := memory_of(pid)) is not None:
                minute.rss[name] = found
        backends = api_bench.backends_of(DATABASE)
        rss = anon = 0
        for pid in backends:
            if (found := memory_of(pid)) is not None:
                rss += found[0]
                anon += found[1]
        minute.rss["postgres backends (sum)"] = (rss, anon)
        minute.backends = len(backends)


async def soak(
    conns: list[api_bench.Sender],
    ops: list[Op],
    rate: float,
    minutes: int,
    processes: Processes,
    sockets: Sockets,
    warmup: int,
) -> tuple[list[Minute], int]:
    """`rate` operations a second for `minutes`; one `Minute` per minute. Returns the
    minutes and how many operations were still unanswered when the drain time was up."""
    total = int(rate * minutes * MINUTE)
    queue: asyncio.Queue[tuple[float, Op] | None] = asyncio.Queue()
    start = time.perf_counter() + 0.05
    table = [Minute() for _ in range(minutes)]
    done = 0

    async def schedule() -> None:
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((due, ops[i % len(ops)]))
        for _ in conns:
            queue.put_nowait(None)

    async def client(sender: api_bench.Sender) -> None:
        nonlocal done
        while (item := await queue.get()) is not None:
            due, op = item
            tally = api_bench.Tally()
            ok = await api_bench.exchange(sender, op.request, tally)
            index = min(int((due - start) // MINUTE), minutes - 1)
            minute = table[index]
            if ok:
                minute.latencies.setdefault(op.kind, []).append(time.perf_counter() - due)
            else:
                minute.errors.update({f"{op.kind}: {k}": v for k, v in tally.errors.items()})
            done += 1

    async def clock() -> None:
        received_before, reconnects_before = sockets.poll()
        for index in range(minutes):
            await asyncio.sleep(max(0.0, start + (index + 1) * MINUTE - time.perf_counter()))
            minute = table[index]
            processes.sample(minute)
            received, reconnects = sockets.poll()
            minute.received = received - received_before
            minute.reconnects = reconnects - reconnects_before
            received_before, reconnects_before = received, reconnects
            show_minute(index, minute, rate, warmup)

    clients = asyncio.gather(*(client(c) for c in conns))
    watcher = asyncio.create_task(clock())
    try:
        await schedule()
        await watcher
        with suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await clients
    finally:
        watcher.cancel()
        clients.cancel()
        with suppress(asyncio.CancelledError):
            await clients
    return table, total - done


# -- the report ---------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    return api_bench.quantile(sorted(values), q)


def overall(minute: Minute) -> list[float]:
    return [v for values in minute.latencies.values() for v in values]


def show_minute(index: int, m: Minute, rate: float, warmup: int) -> None:
    every = overall(m)
    label = "warm-up" if index < warmup else "measured"
    parts = [f"{kind} p99 {quantile(m.latencies.get(kind, []), 0.99) * 1000:.1f}" for kind in MIX]
    memory = ", ".join(
        f"{rss / KB / KB:.0f}" for name, (rss, _) in m.rss.items() if name.startswith("server")
    )
    console.print(
        f"minute {index + 1:>3} ({label}): {len(every) / MINUTE:.0f} ops/s of {rate:.0f}, "
        f"p50 {quantile(every, 0.5) * 1000:.1f} ms, p99 {quantile(every, 0.99) * 1000:.1f} ms, "
        f"max {max(every, default=float('nan')) * 1000:.0f} ms ({', '.join(parts)}); "
        f"errors {sum(m.errors.values())}; socket messages {m.received / MINUTE:.0f}/s, "
        f"reconnects {m.reconnects}; server RSS MB {memory}; {load()}"
    )


def verdict(table: list[Minute], warmup: int, unanswered: int, drift: int) -> bool:
    measured = table[warmup:]
    console.print()
    console.print("[bold]RSS per minute, MB (PostgreSQL backends: anonymous memory, summed)[/]")
    names = list(dict.fromkeys(name for m in table for name in m.rss))
    for name in names:
        series = []
        for m in table:
            rss, anon = m.rss.get(name, (0, 0))
            series.append(anon if name.startswith("postgres") else rss)
        console.print(f"  {name:<32} " + " ".join(f"{v / KB / KB:6.1f}" for v in series))
    console.print(
        f"  {'postgres backends (count)':<32} " + " ".join(f"{m.backends:6d}" for m in table)
    )
    console.print("[bold]p99 per minute, ms[/]")
    for kind in MIX:
        values = [quantile(m.latencies.get(kind, []), 0.99) * 1000 for m in table]
        console.print(f"  {kind:<32} " + " ".join(f"{v:6.1f}" for v in values))
    p99s = [quantile(overall(m), 0.99) * 1000 for m in table]
    console.print(f"  {'all':<32} " + " ".join(f"{v:6.1f}" for v in p99s))

    checks: list[tuple[str, bool]] = []
    flat = p99s[warmup:]
    ratio = max(flat) / min(flat) if flat and min(flat) > 0 else float("inf")
    checks.append(
        (
            f"p99 flat within {PASS_P99_RATIO:.0f}x after warm-up: "
            f"{min(flat):.1f} to {max(flat):.1f} ms (x{ratio:.2f})",
            ratio <= PASS_P99_RATIO,
        )
    )
    for name in names:
        if not name.startswith("server"):
            continue
        series = [m.rss[name][0] for m in measured if name in m.rss]
        if len(series) < len(measured) or not series:
            checks.append((f"{name}: not alive through the measured minutes", False))
            continue
        growth = max(series) / series[0] - 1
        checks.append(
            (
                f"{name} RSS flat within {PASS_RSS_GROWTH:.0%}: {series[0] / KB / KB:.1f} MB, "
                f"at most {max(series) / KB / KB:.1f} MB ({growth:+.1%})",
                growth <= PASS_RSS_GROWTH,
            )
        )
    errors = sum((m.errors for m in table), Counter[str]())
    checks.append((f"errors: {sum(errors.values())} {dict(errors.most_common(3))}", not errors))
    checks.append((f"unanswered: {unanswered}", unanswered == 0))
    checks.append((f"check: {drift} drifted", drift == 0))
    console.print("[bold]pass criteria[/]")
    for text, ok in checks:
        console.print(f"  {'[green]met[/]' if ok else '[red]missed[/]'}  {text}")
    return all(ok for _, ok in checks)


# -- the run ---------------------------------------------------------------------------------


async def drive(
    args: argparse.Namespace, target: api_bench.Target, server: api_bench.Server, sockets: Sockets
) -> tuple[list[Minute], int]:
    ops = mix(target, api_bench.REQUEST_POOL, server.port)
    conns = api_bench.senders("raw", server.port, target.token, args.concurrency)
    try:
        rate = args.rate
        if rate is None:
            console.print(
                f"capacity: closed loop of the mix, C={args.concurrency}, "
                f"{args.capacity_seconds:.0f} s  ({load()})"
            )
            measured = await capacity(conns, ops, args.capacity_seconds, CAPACITY_WARMUP)
            rate = measured * args.load
            console.print(
                f"capacity {measured:.0f} ops/s; soak at {args.load:.2f} of it: {rate:.0f} ops/s"
            )
        console.print(
            f"soak: {rate:.0f} ops/s for {args.duration} minutes (warm-up {args.warmup})  "
            f"({load()})"
        )
        processes = Processes(server, sockets)
        return await soak(conns, ops, rate, args.duration, processes, sockets, args.warmup)
    finally:
        for conn in conns:
            await conn.close()


def run(args: argparse.Namespace, data_dir: Path) -> bool:
    base = args.postgres_url
    url = make_url(base).set(database=DATABASE).render_as_string(hide_password=False)

    async def drop() -> None:
        await engine_bench.pg_admin(base, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")

    asyncio.run(drop())
    sockets = Sockets()
    try:
        asyncio.run(engine_bench.pg_admin(base, f"CREATE DATABASE {DATABASE}"))
        console.print(f"seeding {args.conversations} conversations  ({load()})")
        target = asyncio.run(api_bench.prepare(url, args.conversations))
        # A bus channel of our own: other servers on the same Redis never hear us.
        os.environ["THREADLINE_BUS"] = "redis"
        os.environ["THREADLINE_REDIS_URL"] = args.redis_url
        os.environ["THREADLINE_BUS_CHANNEL"] = f"threadline_soak_{uuid.uuid4().hex[:8]}"
        # Every socket is one token from one address: the per-token and per-address stream
        # caps would refuse all but the first few.
        os.environ["THREADLINE_REALTIME_MAX_STREAMS_PER_TOKEN"] = "0"  # noqa: S105  (a count)
        os.environ["THREADLINE_REALTIME_MAX_STREAMS_PER_ADDRESS"] = "0"
        server = api_bench.Server(url, args.workers, data_dir, None)
        with api_bench.running(server):
            app = target.app_id
            specs = [
                rt_bench.SocketSpec(
                    i,
                    server.port,
                    f"conversation.{app}" if i % 2 == 0 else f"conversation_reply.{app}",
                    target.token,
                    "all" if i % 2 == 0 else "reply",
                )
                for i in range(args.sockets)
            ]
            failures = sockets.start(specs, args.clients)
            if failures:
                raise SystemExit(f"sockets refused: {failures[:3]}")
            console.print(
                f"server with {args.workers} workers on port {server.port}, {args.sockets} "
                f"sockets open  ({load()})"
            )
            table, unanswered = uvloop.run(drive(args, target, server, sockets))
            sockets.stop()
            problems = [
                line
                for line in server.log_tail(400).splitlines()
                if "ERROR" in line or "Traceback" in line
            ]
            for line in problems[-5:]:
                console.print(f"[yellow]  server: {line}[/]")
        drift = asyncio.run(api_bench.drift(url))
        return verdict(table, args.warmup, unanswered, drift)
    finally:
        sockets.kill()
        asyncio.run(drop())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=30, help="minutes of soak")
    parser.add_argument("--warmup", type=int, default=5, help="first minutes not judged")
    parser.add_argument("--load", type=float, default=0.5, help="share of the capacity")
    parser.add_argument("--rate", type=float, default=None, help="ops/s (skips the capacity)")
    parser.add_argument("--capacity-seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=32, help="HTTP connections")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    parser.add_argument("--sockets", type=int, default=500, help="WebSockets held open")
    parser.add_argument("--clients", type=int, default=1, help="processes holding them")
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("THREADLINE_TEST_POSTGRES_URL", engine_bench.DEFAULT_PG),
        help="a server where the benchmark may create and drop its own database",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("THREADLINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    args = parser.parse_args()
    if args.duration < 1 or not 0 <= args.warmup < args.duration:
        parser.error("--duration must be at least 1 and above --warmup")
    if not 0 < args.load <= 1 or (args.rate is not None and args.rate <= 0):
        parser.error("--load must be in (0, 1] and --rate positive")
    if args.concurrency < 1 or args.clients < 1 or args.sockets < 0 or args.workers < 1:
        parser.error("--concurrency, --clients and --workers must be positive")
    signal.signal(signal.SIGTERM, api_bench._terminate)
    console.print(
        f"bench.soak: {args.duration} min at {args.load:.2f} of the capacity, "
        f"{args.sockets} sockets, {args.workers} workers  ({load()})"
    )
    data_dir = Path(tempfile.mkdtemp(prefix="tl-soak-"))
    try:
        ok = run(args, data_dir)
    except KeyboardInterrupt:
        console.print("[red]interrupted: server and clients stopped, the database dropped[/]")
        raise SystemExit(130) from None
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
