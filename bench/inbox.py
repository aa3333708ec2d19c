"""The operators' inbox at scale, over HTTP: views, counts and search at two sizes.

For each size, a database is filled once with `threadline demo --conversations N` (the
time it took is printed; the app and its token are kept in bench/results/ for the next
run). Every size is then served at once by its own uvicorn (one worker, uvloop, httptools,
no access log, no rate limit) and measured one request at a time from this process, after
a warm-up, the sizes in turn request by request (so that a busy moment of a shared machine
weighs on every size alike):

- the first page of each view (`/ext/apps/{app}/inbox?counts=false`), alone and combined;
- a page at depth 100 (the position of the 100th page of the open view);
- the inbox call with every count (`/ext/apps/{app}/inbox`);
- search for a common word, a rare word, part of a word, and a word within a view.

It prints p50 and p95 per size and the ratio of the largest size to the smallest (a keyset
page and an exact count from counters should cost the same at any size), and checks the
targets: at the largest PostgreSQL size, a first page p95 <= 15 ms, the inbox with counts
p95 <= 30 ms, search p95 <= 100 ms, ratios <= 1.5.

    python -m bench.inbox [--db postgres|sqlite] [--sizes 10000,1000000] [--samples 200]
                          [--rebuild] [--database SIZE=URL ...]

PostgreSQL databases are named tl_inbox_<size> on the server of --postgres (default the
local test server), unless `--database SIZE=URL` names one (kept between runs: its app and
token are in bench/results/); SQLite files are bench/results/inbox-<size>.db.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.engine import pg_admin
from threadline.db.engine import async_url
from threadline.db.schema import conversation_tags, conversations, inbox_counts
from threadline.demo_bulk import pseudo_words

console = Console(width=150)
RESULTS = Path(__file__).parent / "results"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
TARGETS = {"page": 15.0, "inbox": 30.0, "search": 100.0}
MAX_RATIO = 1.5
# A word of the demo's free text by Zipf rank: rank 5000 is in a few parts per 10,000
# conversations.
RARE_RANK = 5000


@dataclass
class Target:
    size: int
    url: str
    app: int = 0
    token: str = ""
    fill_seconds: float | None = None
    results: dict[str, tuple[float, float]] = field(default_factory=dict)
    errors: dict[str, Counter[str]] = field(default_factory=dict)


def database_url(kind: str, size: int, postgres: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{RESULTS / f'inbox-{size}.db'}"
    return make_url(postgres).set(database=f"tl_inbox_{size}").render_as_string(False)


def prepare(target: Target, kind: str, postgres: str, rebuild: bool) -> None:
    """Fill the database with the demo, unless a previous run did."""
    where = Path(make_url(target.url).database or "")
    saved = RESULTS / f"inbox-{kind}-{target.size}-{where.stem}.json"
    if saved.exists() and not rebuild:
        known = json.loads(saved.read_text())
        target.app, target.token = known["app"], known["token"]
        target.fill_seconds = known.get("fill_seconds")
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        path = where
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        name = make_url(target.url).database
        asyncio.run(
            pg_admin(
                postgres, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"
            )
        )
    command = [
        str(Path(sys.executable).parent / "threadline"), "demo", "--conversations",
        str(target.size), "--seed", "1", "--json", "--database-url", target.url,
    ]  # fmt: skip
    console.print(f"[bold]{kind} {target.size:,}[/]: threadline demo ...")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    target.fill_seconds = time.perf_counter() - started
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    target.app, target.token = summary["app"], summary["token"]
    saved.write_text(
        json.dumps({"app": target.app, "token": target.token, "fill_seconds": target.fill_seconds})
    )
    console.print(f"  filled in {target.fill_seconds:.0f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve(url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "THREADLINE_DATABASE_URL": url, "THREADLINE_RATE_LIMIT": ""}
    process = subprocess.Popen(  # noqa: S603
        [
            sys.executable, "-m", "uvicorn", "threadline.web.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-access-log",
            "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
        ],
        env=env,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError("the server did not start")


@dataclass
class Picks:
    """Ids and words of the demo data the requests use."""

    assignee: int
    channel: int
    tag: str
    common: str
    rare: str
    partial: str


async def pick(url: str, app: int) -> Picks:
    """The busiest assignee, channel and tag, and words that occur (once or often)."""
    engine = create_async_engine(async_url(url))
    c = inbox_counts.c
    try:
        async with engine.connect() as conn:

            async def busiest(column: Any) -> Any:
                query = (
                    select(column, func.sum(c.n).label("n"))
                    .where(c.app_id == app, c.kind == 0, column != 0)
                    .group_by(column)
                    .order_by(text("n DESC"))
                    .limit(1)
                )
                return (await conn.execute(query)).first()[0]  # type: ignore[index]

            assignee = await busiest(c.assignee_id)
            channel = await busiest(c.channel_id)
            tag = (
                await conn.execute(
                    select(conversation_tags.c.tag, func.count().label("n"))
                    .where(conversation_tags.c.app_id == app)
                    .group_by(conversation_tags.c.tag)
                    .order_by(text("n DESC"))
                    .limit(1)
                )
            ).first()
            assert (await conn.execute(select(func.count()).select_from(conversations))).scalar()
    finally:
        await engine.dispose()
    words = pseudo_words()
    return Picks(
        assignee=int(assignee),
        channel=int(channel),
        tag=str(tag[0]) if tag else "vip",
        common="thanks",
        rare=words[RARE_RANK],
        partial="voic",
    )


def requests_for(app: int, picks: Picks, depth_position: str | None) -> dict[str, dict[str, Any]]:
    page = {"counts": "false"}
    base = f"/ext/apps/{app}"
    cases: dict[str, dict[str, Any]] = {
        "page open": {"path": "inbox", **page},
        "page delayed": {"path": "inbox", **page, "status": "delayed"},
        "page closed": {"path": "inbox", **page, "status": "closed"},
        "page assignee": {"path": "inbox", **page, "assignee": picks.assignee},
        "page unassigned": {"path": "inbox", **page, "assignee": 0},
        "page channel": {"path": "inbox", **page, "channel": picks.channel},
        "page tag": {"path": "inbox", **page, "tag": picks.tag},
        "page important": {"path": "inbox", **page, "important": "true"},
        "page open+unassigned+channel": {
            "path": "inbox", **page, "assignee": 0, "channel": picks.channel,
        },
        "page closed+tag+assignee": {
            "path": "inbox", **page, "status": "closed", "tag": picks.tag,
            "assignee": picks.assignee,
        },
        "inbox + counts": {"path": "inbox"},
        "inbox + counts (tag)": {"path": "inbox", "tag": picks.tag},
        "search common": {"path": "search", "q": picks.common},
        "search rare": {"path": "search", "q": picks.rare},
        "search partial": {"path": "search", "q": picks.partial},
        "search common+view": {
            "path": "search", "q": picks.common, "status": "open", "channel": picks.channel,
        },
    }  # fmt: skip
    if depth_position is not None:
        cases["page depth 100"] = {
            "path": "inbox", **page, "paginate_position": depth_position,
        }  # fmt: skip
    for case in cases.values():
        case["path"] = f"{base}/{case['path']}"
    return cases


def depth_100(client: httpx.Client, app: int) -> str | None:
    """The position of the 100th page (20 rows each) of the open view."""
    position = None
    for _ in range(100):
        params: dict[str, Any] = {"counts": "false"}
        if position is not None:
            params["paginate_position"] = position
        answer = client.get(f"/ext/apps/{app}/inbox", params=params).json()
        found = answer["meta"]["next_before_position"]
        if found is None:
            return None
        position = json.dumps(found)
    return position


# Cases whose answer may have no row: the rare word occurs nowhere at ten thousand
# conversations (about 200 parts at a million). Every other case is chosen to find rows.
MAY_BE_EMPTY = frozenset({"search rare"})


def rows_of(answer: Any) -> int | None:
    """The conversations an inbox page or a search answered, or None: not such an answer."""
    if not isinstance(answer, dict) or answer.get("meta", {}).get("status") != 200:
        return None
    data = answer.get("data")
    if isinstance(data, dict):
        data = data.get("conversations")
    return len(data) if isinstance(data, list) else None


def _timed(
    client: httpx.Client, case: dict[str, Any], errors: Counter[str], empty_ok: bool
) -> float | None:
    """The request's time in ms; None (counted in `errors`) when it failed or found no row
    (unless `empty_ok`): an empty page measures nothing of a view."""
    params = {k: v for k, v in case.items() if k != "path"}
    started = time.perf_counter()
    try:
        response = client.get(case["path"], params=params)
    except httpx.HTTPError as exc:
        errors[f"connection: {type(exc).__name__}"] += 1
        return None
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        errors[f"HTTP {response.status_code}"] += 1
        return None
    try:
        rows = rows_of(response.json())
    except ValueError:
        rows = None
    if rows is None:
        errors["not an inbox or search answer"] += 1
        return None
    if rows == 0 and not empty_ok:
        errors["no rows"] += 1
        return None
    return elapsed


def _summary(timings: list[float]) -> tuple[float, float]:
    if not timings:
        return float("nan"), float("nan")
    timings = sorted(timings)
    return statistics.median(timings), timings[int(len(timings) * 0.95) - 1]


def run(targets: list[Target], samples: int) -> None:
    """Every size served at once, and each case measured on them in turn, request by
    request: whatever else the machine does at a moment weighs on every size alike, so
    the ratios compare like with like on a shared machine."""
    processes = []
    clients: list[httpx.Client] = []
    cases: list[dict[str, dict[str, Any]]] = []
    try:
        for target in targets:
            picks = asyncio.run(pick(target.url, target.app))
            process, base = serve(target.url)
            processes.append(process)
            headers = {"Authorization": f"Token {target.token}"}
            client = httpx.Client(base_url=base, headers=headers, timeout=60)
            clients.append(client)
            cases.append(requests_for(target.app, picks, depth_100(client, target.app)))
        for name in cases[-1]:
            timings: list[list[float]] = [[] for _ in targets]
            errors: list[Counter[str]] = [Counter() for _ in targets]
            for _ in range(max(5, samples // 10)):
                for i, (client, case) in enumerate(zip(clients, cases, strict=True)):
                    _timed(client, case[name], errors[i], name in MAY_BE_EMPTY)
            for _ in range(samples):
                for i, (client, case) in enumerate(zip(clients, cases, strict=True)):
                    took = _timed(client, case[name], errors[i], name in MAY_BE_EMPTY)
                    if took is not None:
                        timings[i].append(took)
            line = [f"  {name:30}"]
            for target, measured, failed in zip(targets, timings, errors, strict=True):
                target.results[name] = _summary(measured)
                if failed:
                    target.errors[name] = failed
                p50, p95 = target.results[name]
                line.append(f"{target.size:>9,}: p50 {p50:6.2f} p95 {p95:6.2f}")
                if failed:
                    line.append(f"[red]errors {dict(failed)}[/]")
            console.print("   ".join(line) + f"   (load {os.getloadavg()[0]:.1f})")
    finally:
        for client in clients:
            client.close()
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def _kind_of(name: str) -> str:
    return "inbox" if name.startswith("inbox") else name.split()[0]


def report(kind: str, targets: list[Target]) -> bool:
    table = Table(title=f"inbox over HTTP, {kind} (ms)")
    table.add_column("request")
    for t in targets:
        table.add_column(f"{t.size:,} p50", justify="right")
        table.add_column(f"{t.size:,} p95", justify="right")
    if len(targets) > 1:
        table.add_column("p50 ratio", justify="right")
        table.add_column("p95 ratio", justify="right")
    ok = True
    big = targets[-1]
    for name in big.results:
        row = [name]
        for t in targets:
            p50, p95 = t.results.get(name, (float("nan"), float("nan")))
            row += [f"{p50:.2f}", f"{p95:.2f}"]
        if kind == "postgres" and big.results[name][1] > TARGETS[_kind_of(name)]:
            ok = False
            row[-1] = f"[red]{row[-1]}[/]"
        if len(targets) > 1:
            row.append(f"{big.results[name][0] / targets[0].results[name][0]:.2f}")
            ratio = big.results[name][1] / targets[0].results[name][1]
            text_ratio = f"{ratio:.2f}"
            if ratio > MAX_RATIO:
                ok = False
                text_ratio = f"[red]{text_ratio}[/]"
            row.append(text_ratio)
        table.add_row(*row)
    console.print(table)
    for t in targets:
        if t.fill_seconds is not None:
            console.print(f"demo fill, {t.size:,} conversations: {t.fill_seconds:.0f} s")
    console.print(f"load average: {os.getloadavg()}")
    for t in targets:
        for name, failed in t.errors.items():
            ok = False
            console.print(
                f"[red]{t.size:,} {name}: {sum(failed.values())} errors {dict(failed)}[/]"
            )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--sizes", default=None, help="comma-separated conversation counts")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument(
        "--postgres", default=os.environ.get("THREADLINE_BENCH_POSTGRES", DEFAULT_PG)
    )
    parser.add_argument("--rebuild", action="store_true", help="fill the databases again")
    parser.add_argument(
        "--database",
        action="append",
        default=[],
        metavar="SIZE=URL",
        help="the database of one size (kept between runs); default tl_inbox_<size>",
    )
    args = parser.parse_args()
    default_sizes = "10000,1000000" if args.db == "postgres" else "10000,100000"
    sizes = [int(s) for s in (args.sizes or default_sizes).split(",")]
    chosen = dict(item.split("=", 1) for item in args.database)
    targets = [
        Target(size, chosen.get(str(size)) or database_url(args.db, size, args.postgres))
        for size in sizes
    ]
    for target in targets:
        prepare(target, args.db, args.postgres, args.rebuild)
    console.print(f"[bold]{args.db}: {', '.join(f'{t.size:,}' for t in targets)} conversations[/]")
    run(targets, args.samples)
    ok = report(args.db, targets)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"inbox-{args.db}-results.json").write_text(
        json.dumps(
            {str(t.size): {"fill_seconds": t.fill_seconds, **t.results} for t in targets}, indent=1
        )
    )
    if not ok:
        console.print("[red]some targets missed or some requests failed[/]")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
