"""E-mail throughput on PostgreSQL: inbound messages by SMTP and outbound replies to a relay.

Inbound: `threadline smtp` runs as its own process on a fresh database; `--clients` SMTP
clients (aiosmtplib, one connection each, over loopback) send `--inbound` messages to the
app's address, each from its own sender (each starts an `incoming_email` conversation:
the user found or created, the files and the original stored, the conversation written).
Measured from the first message to the last one answered `250`; every message must have
become a conversation.

Outbound: an operator's reply in `--outbound` of those conversations (round robin) is
written through the conversation service while no worker runs, then `threadline worker`
starts with a relay configured: an `aiosmtpd` sink in this process that accepts
everything. Measured from the first reply queued to the last one `sent` (the deliveries'
own times, so the worker's start-up is left out); every reply must reach the sink.

CPU per message: the listener's (or the worker's) processes, the database's backends and
this process (the SMTP clients, or the sink and the progress polling), from /proc.
Targets on a 2-core machine: >= 100 inbound messages/s, >= 200 outbound replies/s.

    .venv/bin/python -m bench.email
    .venv/bin/python -m bench.email --inbound 3000 --outbound 3000 --clients 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.controller import Controller
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bench import engine as engine_bench
from bench.api import BackendWatch, cpu_of, free_port, load, process_tree, stop_group, tail_of
from threadline.apps import service as apps
from threadline.channels.email import inbound, outbound
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AuthorKind
from threadline.core.model import Author
from threadline.db.engine import Database
from threadline.db.migrate import upgrade
from threadline.db.schema import conversations, email_deliveries

console = Console(soft_wrap=True, highlight=False)
HOST = "127.0.0.1"
DB_NAME = "tl_emailbench"
DOMAIN = "threadline.localhost"
TARGET_INBOUND = 100.0
TARGET_OUTBOUND = 200.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
# A phase that has not finished in this time ends the run with an error.
PHASE_TIMEOUT = 600.0


def cli_command(*args: str) -> list[str]:
    """`threadline ...` with this interpreter (the project's virtualenv)."""
    return [sys.executable, "-c", "from threadline.cli import main; main()", *args]


class Process:
    """A `threadline` command in its own process group, always stopped."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603  (our own interpreter and arguments)
                cli_command(*self.args),
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu(self) -> float:
        return sum(cpu_of(process_tree(self.proc.pid)).values()) if self.proc else 0.0

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_group(proc, signal.SIGINT, STOP_TIMEOUT)

    def log_tail(self, lines: int = 20) -> str:
        return tail_of(self.log_path, lines)


@contextmanager
def running(process: Process) -> Iterator[Process]:
    process.start()
    try:
        yield process
    finally:
        process.stop()


def wait_for_port(process: Process, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not process.alive():
            raise SystemExit(f"the listener exited at start:\n{process.log_tail()}")
        with suppress(OSError), socket.create_connection((HOST, port), timeout=1.0) as s:
            if s.recv(3) == b"220":
                return
        time.sleep(0.1)
    raise SystemExit(f"the listener did not answer:\n{process.log_tail()}")


@dataclass
class Figures:
    name: str
    count: int
    seconds: float
    server_cpu: float
    postgres_cpu: float
    local_cpu: float
    target: float
    server_label: str
    local_label: str

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def show(self) -> bool:
        n = max(self.count, 1)
        per = [
            (self.server_label, self.server_cpu / n * 1e6),
            ("postgres", self.postgres_cpu / n * 1e6),
            (self.local_label, self.local_cpu / n * 1e6),
        ]
        total = sum(v for _, v in per)
        met = self.rate >= self.target
        verdict = "[green]met[/]" if met else "[red]not met[/]"
        console.print(
            f"{self.name}: {self.count} in {self.seconds:.2f} s = [bold]{self.rate:.0f}/s[/] "
            f"(target >= {self.target:.0f}/s: {verdict}); CPU per message (µs): "
            + ", ".join(f"{k} {v:.0f}" for k, v in per)
            + f" = {total:.0f} (all {os.cpu_count()} cores on it alone: "
            f"~{(os.cpu_count() or 1) / total * 1e6 if total else 0:.0f}/s)  ({load()})"
        )
        return met


def message(i: int, to: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {i} <customer{i}@example.com>"
    msg["To"] = to
    msg["Subject"] = f"Order {i} has not arrived"
    msg["Message-ID"] = make_msgid(f"bench{i}", "example.com")
    msg.set_content(
        f"Hello,\n\nmy order {i} has not arrived yet. Could you look into it?\n\n"
        "Thanks,\nA customer\n\n-- \nSent from my phone\n"
    )
    return msg.as_bytes()


async def count_conversations(url: str, app_id: int) -> int:
    db = Database(url)
    try:
        async with db.read() as conn:
            query = select(func.count()).where(conversations.c.app_id == app_id)
            return int((await conn.execute(query)).scalar_one())
    finally:
        await db.dispose()


async def send_inbound(
    port: int, to: str, total: int, clients: int, progress: Progress, task: Any
) -> float:
    """Send `total` messages over `clients` connections; the wall time."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    bodies = {i: message(i, to) for i in range(total)}

    async def client() -> None:
        smtp = aiosmtplib.SMTP(hostname=HOST, port=port, timeout=60)
        await smtp.connect()
        try:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                errors, _ = await smtp.sendmail(f"customer{i}@example.com", [to], bodies[i])
                if errors:
                    raise SystemExit(f"message {i} refused: {errors}")
                progress.advance(task)
        finally:
            with suppress(aiosmtplib.SMTPException):
                await smtp.quit()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - start


def bench_inbound(args: argparse.Namespace, url: str, app_id: int, data_dir: Path) -> Figures:
    to = asyncio.run(app_address(url, app_id))
    port = free_port()
    env = {
        "THREADLINE_DATABASE_URL": url,
        "THREADLINE_DATA_DIR": str(data_dir),
        "THREADLINE_MAIL_SENDER_LIMIT": "",  # each sender writes once; no limit to meet
        "THREADLINE_MAIL_DOMAIN": DOMAIN,
    }
    listener = Process(["smtp", "--host", HOST, "--port", str(port)], env, data_dir / "smtp.log")
    with running(listener):
        wait_for_port(listener, port)
        watch = BackendWatch([DB_NAME])
        server0, local0 = listener.cpu(), time.process_time()
        with progress_bar() as progress:
            task = progress.add_task("inbound by SMTP", total=args.inbound)
            seconds = asyncio.run(
                send_inbound(port, to, args.inbound, args.clients, progress, task)
            )
        server, local = listener.cpu() - server0, time.process_time() - local0
        pg = watch.used()
    stored = asyncio.run(count_conversations(url, app_id))
    if stored != args.inbound:
        raise SystemExit(f"{args.inbound} messages sent, {stored} conversations stored")
    return Figures(
        "inbound messages", args.inbound, seconds, server, pg, local, TARGET_INBOUND,
        "listener", "clients",
    )  # fmt: skip


async def app_address(url: str, app_id: int) -> str:
    db = Database(url)
    try:
        return inbound.default_address(await inbound.app_key(db, app_id), DOMAIN)
    finally:
        await db.dispose()


class Sink:
    """An SMTP relay that accepts everything, counting what it took."""

    def __init__(self) -> None:
        self.port = free_port()
        self.count = 0
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.count += 1
        return "250 2.0.0 Ok: queued"

    def start(self) -> None:
        self._controller = Controller(self, hostname=HOST, port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()


async def write_replies(url: str, app_id: int, admin_id: int, total: int) -> None:
    """Start the e-mail cursor at the log's head (as a worker would), then write `total`
    operators' replies round robin over the app's conversations."""
    db = Database(url)
    try:
        await outbound.begin(db)
        async with db.read() as conn:
            query = (
                select(conversations.c.id)
                .where(conversations.c.app_id == app_id)
                .order_by(conversations.c.id)
            )
            ids = [int(i) for i in (await conn.execute(query)).scalars()]
        author = Author(AuthorKind.ADMIN, admin_id)
        with progress_bar() as progress:
            task = progress.add_task("writing replies", total=total)
            for n in range(total):
                cid = ids[n % len(ids)]
                body = f"We are looking into it (reply {n})."
                await service.perform(db, app_id, cid, ev.AdminReply(author, body))
                progress.advance(task)
    finally:
        await db.dispose()


async def delivery_counts(url: str) -> tuple[int, int, float]:
    """(deliveries, sent, seconds from the first queued to the last sent)."""
    db = Database(url)
    try:
        async with db.read() as conn:
            d = email_deliveries.c
            row = (
                await conn.execute(
                    select(
                        func.count(),
                        func.count().filter(d.status == "sent"),
                        func.min(d.created),
                        func.max(d.sent_at),
                    )
                )
            ).one()
    finally:
        await db.dispose()
    seconds = (row[3] - row[2]).total_seconds() if row[2] and row[3] else 0.0
    return int(row[0]), int(row[1]), seconds


def bench_outbound(
    args: argparse.Namespace, url: str, app_id: int, admin_id: int, data_dir: Path
) -> Figures:
    asyncio.run(write_replies(url, app_id, admin_id, args.outbound))
    sink = Sink()
    sink.start()
    env = {
        "THREADLINE_DATABASE_URL": url,
        "THREADLINE_DATA_DIR": str(data_dir),
        "THREADLINE_MAIL_DOMAIN": DOMAIN,
        "THREADLINE_SMTP_RELAY_HOST": HOST,
        "THREADLINE_SMTP_RELAY_PORT": str(sink.port),
        "THREADLINE_SMTP_RELAY_SECURITY": "none",
        "THREADLINE_EMAIL_CONCURRENCY": str(args.concurrency),
    }
    worker = Process(["worker"], env, data_dir / "worker.log")
    try:
        with running(worker), progress_bar() as progress:
            task = progress.add_task("outbound to the sink", total=args.outbound)
            deadline = time.monotonic() + PHASE_TIMEOUT
            # CPU from the first queued reply on (the worker's start-up left out).
            while asyncio.run(delivery_counts(url))[0] == 0:
                if not worker.alive() or time.monotonic() > deadline:
                    raise SystemExit(f"the worker queued nothing:\n{worker.log_tail()}")
                time.sleep(0.02)
            watch = BackendWatch([DB_NAME])
            server0, local0 = worker.cpu(), time.process_time()
            while True:
                _, sent, _ = asyncio.run(delivery_counts(url))
                progress.update(task, completed=sent)
                if sent >= args.outbound:
                    break
                if not worker.alive() or time.monotonic() > deadline:
                    raise SystemExit(f"{sent} of {args.outbound} sent:\n{worker.log_tail()}")
                time.sleep(0.1)
            server, local = worker.cpu() - server0, time.process_time() - local0
            pg = watch.used()
    finally:
        sink.stop()
    _, sent, seconds = asyncio.run(delivery_counts(url))
    if sink.count != args.outbound:
        raise SystemExit(f"{args.outbound} replies, {sink.count} reached the sink")
    return Figures(
        "outbound replies", sent, seconds, server, pg, local, TARGET_OUTBOUND, "worker", "sink",
    )  # fmt: skip


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


async def seed(url: str) -> tuple[int, int]:
    db = Database(url)
    try:
        app = await apps.create_app(db, "Email bench")
        admin = await apps.create_admin(db, app.app_id, "Ann")
        return app.app_id, admin
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("THREADLINE_TEST_POSTGRES_URL", engine_bench.DEFAULT_PG),
    )
    parser.add_argument("--inbound", type=int, default=2000, help="messages sent by SMTP")
    parser.add_argument("--outbound", type=int, default=2000, help="replies sent to the sink")
    parser.add_argument("--clients", type=int, default=4, help="concurrent SMTP clients")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="THREADLINE_EMAIL_CONCURRENCY of the worker"
    )
    args = parser.parse_args()
    if args.inbound < 1 or args.outbound < 1 or args.clients < 1 or args.concurrency < 1:
        parser.error("counts must be positive")
    base = args.postgres_url
    url = make_url(base).set(database=DB_NAME).render_as_string(hide_password=False)
    drop = f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)"
    asyncio.run(engine_bench.pg_admin(base, drop, f"CREATE DATABASE {DB_NAME}"))
    try:
        upgrade(url)
        app_id, admin_id = asyncio.run(seed(url))
        with tempfile.TemporaryDirectory(prefix="tl-emailbench-") as tmp:
            data_dir = Path(tmp)
            console.print(
                f"e-mail on PostgreSQL: {args.inbound} inbound messages over {args.clients} "
                f"SMTP clients, {args.outbound} outbound replies (worker concurrency "
                f"{args.concurrency})  ({load()})"
            )
            results = [bench_inbound(args, url, app_id, data_dir)]
            results.append(bench_outbound(args, url, app_id, admin_id, data_dir))
        met = [r.show() for r in results]
    finally:
        asyncio.run(engine_bench.pg_admin(base, drop))
    if not all(met):
        sys.exit(1)


if __name__ == "__main__":
    main()
