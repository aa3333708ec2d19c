"""The fault suite's own services and tools: a private PostgreSQL cluster and Redis on free
ports, a TCP proxy that can cut or freeze traffic, a real `threadline serve` process, and
bounded clients that record every acknowledged write.

Never the machine's shared services: everything here is started (and stopped) by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class PrivatePostgres:
    """A temporary cluster made with `initdb`, served by `pg_ctl` on a free port."""

    def __init__(self) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="threadline-faults-pg-"))
        self.data = self.dir / "data"
        # PostgreSQL refuses to run as root: then it runs as the `postgres` user.
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self.bindir / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", options, "-w", *args
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def url(self, port: int | None = None, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{port or self.port}/{database}"

    def create_database(self, name: str) -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ctl("stop", "-m", "immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


SCRATCH_REDIS = ("--save", "", "--appendonly", "no")


class PrivateRedis:
    """A redis-server of the test's own on a free port; `stop()` shuts it down and
    `start()` starts it again on the same port (empty: it keeps nothing on disk)."""

    def __init__(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("no redis-server on this machine")
        self.server = server
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.server, "--port", str(self.port), "--bind", "127.0.0.1", *SCRATCH_REDIS],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def url(self, port: int | None = None) -> str:
        return f"redis://127.0.0.1:{port or self.port}/0"

    def close(self) -> None:
        self.stop()


class TcpProxy:
    """Forwards a free port to `upstream`; `cut()` closes every connection and refuses new
    ones, `freeze()` holds every byte (connections stay open, nothing arrives), `restore()`
    lets traffic through again."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.mode = "pass"
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._flowing = asyncio.Event()
            self._flowing.set()
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            ready.set()

        self._loop.run_until_complete(main())
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pump(reader, up_writer, writer), self._pump(up_reader, writer, up_writer)
        )
        self._writers -= {writer, up_writer}

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, other: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await source.read(65536):
                await self._flowing.wait()
                if self.mode == "cut":
                    break
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.transport.abort()
            other.transport.abort()

    def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    def cut(self) -> None:
        self.mode = "cut"
        self._loop.call_soon_threadsafe(self._abort_all)
        self._loop.call_soon_threadsafe(self._flowing.set)

    def freeze(self) -> None:
        self.mode = "freeze"
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def restore(self) -> None:
        self.mode = "pass"
        self._loop.call_soon_threadsafe(self._flowing.set)

    def close(self) -> None:
        self.cut()

        async def stop() -> None:
            self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def threadline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "threadline"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )


def unmeasured(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment without coverage's subprocess start-up (THREADLINE_COVERAGE=1): a
    server measured line by line answers several times slower, and the fault tests hold
    its answers to the bounds a client is promised."""
    return {k: v for k, v in environ.items() if k not in COVERAGE_START_VARIABLES}


COVERAGE_START_VARIABLES = frozenset({"COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START"})


class Server:
    """`threadline serve` in a process group of its own; its log goes to a file."""

    def __init__(self, database_url: str, workdir: Path, *, workers: int = 1, **env: str) -> None:
        self.port = free_port()
        self.log_path = workdir / f"server-{self.port}.log"
        self.env = {
            "THREADLINE_DATABASE_URL": database_url,
            "THREADLINE_RATE_LIMIT": "",
            "THREADLINE_WIDGET_NEW_VISITOR_LIMIT": "",
            "THREADLINE_DATA_DIR": str(workdir / "data"),
            "THREADLINE_WEBHOOK_WORKER": "off",
            "THREADLINE_DB_CONNECT_TIMEOUT": "1",
            "THREADLINE_DB_STATEMENT_TIMEOUT": "2",
            "THREADLINE_DB_POOL_TIMEOUT": "2",
            **env,
        }
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def _workers(self) -> tuple[str, str]:
        return ("--workers", str(self.workers))

    def start(self) -> None:
        log = self.log_path.open("ab")
        out = self.log_path.with_suffix(".out").open("ab")
        self.process = subprocess.Popen(
            [str(BIN / "threadline"), "serve", *("--port", str(self.port)), *self._workers],
            env={**unmeasured(os.environ), **self.env},
            stdout=out,
            stderr=log,
            start_new_session=True,
        )
        # Generous: worker processes of a loaded machine take tens of seconds to start.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/health/live", timeout=1).status_code == 200:
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        self.kill9()  # no server left behind, restarting its workers
        raise TimeoutError("the server did not start")

    def kill9(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


# A request is answered within this (statement, pool and connect timeouts and some slack).
ANSWER_BOUND_SECONDS = 8.0


@dataclass
class Tally:
    """What bounded clients saw."""

    acknowledged: dict[int, int] = field(default_factory=dict)  # random_id -> part id
    pending: set[int] = field(default_factory=set)  # random_ids sent, not acknowledged yet
    statuses: list[int] = field(default_factory=list)
    refused: int = 0  # 503 in the envelope
    # Anything else: no answer, an answer late or outside the contract (with what it was).
    bad: list[str] = field(default_factory=list)
    slowest: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def check_refusal(response: httpx.Response) -> str | None:
    """None when `response` is a 503 in the envelope with a Retry-After, else what is wrong."""
    try:
        meta = response.json()["meta"]
    except Exception:
        return f"503 outside the envelope: {response.text[:100]}"
    if meta.get("error") != "ServiceUnavailable" or meta.get("status") != 503:
        return f"503 with {meta}"
    if not response.headers.get("Retry-After"):
        return "503 without Retry-After"
    return None


class Writers:
    """Threads that each reply to one conversation over one keep-alive connection, with a
    new random_id per reply (a refused or unanswered one is retried with the same id)."""

    def __init__(
        self, base_url: str, token: str, conversation_id: int, *, threads: int = 4, first: int = 1
    ) -> None:
        self.base_url = base_url
        self.token = token
        self.cid = conversation_id
        self.tally = Tally()
        self._stop = threading.Event()
        self._next = first
        self._threads = [
            threading.Thread(target=self._run, daemon=True, name=f"writer-{i}")
            for i in range(threads)
        ]
        # While the server lives, an unanswered request is a failure; `server_down` marks
        # a time when it is killed on purpose.
        self.server_down = False

    def _take(self) -> int:
        with self.tally.lock:
            self._next += 1
            return self._next

    def send(self, client: httpx.Client, random_id: int) -> bool:
        """One reply; True when it was acknowledged."""
        tally = self.tally
        with tally.lock:
            tally.pending.add(random_id)
        started = time.monotonic()
        try:
            response = client.post(
                f"/conversations/{self.cid}/reply",
                json={"body": f"reply {random_id}", "random_id": random_id},
            )
        except httpx.HTTPError as exc:
            if not self.server_down:
                with tally.lock:
                    tally.bad.append(f"no answer: {type(exc).__name__}: {exc}")
            return False
        took = time.monotonic() - started
        with tally.lock:
            tally.slowest = max(tally.slowest, took)
            tally.statuses.append(response.status_code)
            if took > ANSWER_BOUND_SECONDS:
                tally.bad.append(f"answered after {took:.1f} s")
            if response.status_code == 200:
                part_id = int(response.json()["data"]["id"])
                known = tally.acknowledged.setdefault(random_id, part_id)
                if known != part_id:
                    tally.bad.append(f"random_id {random_id}: parts {known} and {part_id}")
                tally.pending.discard(random_id)
                return True
            if response.status_code == 503:
                problem = check_refusal(response)
                if problem:
                    tally.bad.append(problem)
                else:
                    tally.refused += 1
                return False
            tally.bad.append(f"{response.status_code}: {response.text[:200]}")
            return False

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Token {self.token}"},
            timeout=ANSWER_BOUND_SECONDS + 5,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    def _run(self) -> None:
        with self.client() as client:
            random_id = self._take()
            while not self._stop.is_set():
                if self.send(client, random_id):
                    random_id = self._take()
                else:
                    time.sleep(0.05)

    def __enter__(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def settle(self) -> None:
        """Retry every write that was sent and not acknowledged, with its random_id, until
        acknowledged: afterwards, each random_id sent is a part exactly once."""
        with self.client() as client:
            for random_id in sorted(self.tally.pending):
                deadline = time.monotonic() + 30
                while not self.send(client, random_id):
                    assert time.monotonic() < deadline, f"random_id {random_id} never acknowledged"
                    time.sleep(0.2)


def acknowledged_count(tally: Tally) -> int:
    with tally.lock:
        return len(tally.acknowledged)


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


@contextlib.contextmanager
def timed(bound: float, what: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    took = time.monotonic() - started
    assert took <= bound, f"{what} took {took:.2f} s (bound {bound} s)"


class Watcher:
    """A WebSocket client on a thread of its own, subscribed to an app's replies: it records
    the random_id of every reply the stream delivers, and reconnects with the last tag it
    saw when the stream ends (so it misses nothing the server delivers)."""

    def __init__(self, base_url: str, token: str, app_id: int) -> None:
        host = base_url.removeprefix("http://")
        self.url = f"ws://{host}/websocket/conversation_reply.{app_id}?auth_token={token}"
        self.seen: set[int] = set()
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def seen_now(self) -> set[int]:
        with self._lock:
            return set(self.seen)

    def _record(self, raw: str | bytes) -> str | None:
        message = json.loads(raw)
        if message.get("channel") == "ping":
            return None
        part = (message.get("message") or {}).get("part") or {}
        random_id = part.get("random_id")
        if random_id:
            with self._lock:
                self.seen.add(int(random_id))
        tag = message.get("tag")
        return str(tag) if tag else None

    async def _run(self) -> None:
        from websockets.asyncio.client import connect

        tag: str | None = None
        while not self._stop.is_set():
            url = f"{self.url}&tag={tag}" if tag else self.url
            try:
                async with connect(url, open_timeout=5) as ws:
                    self.connections += 1
                    while not self._stop.is_set():
                        try:
                            raw = await asyncio.wait_for(ws.recv(), 0.5)
                        except TimeoutError:
                            continue
                        tag = self._record(raw) or tag
            except Exception:  # closed or refused: connect again from the last tag
                await asyncio.sleep(0.2)

    def __enter__(self) -> Watcher:
        self._thread.start()
        wait_until(lambda: self.connections > 0, 30, "the WebSocket connected")
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(30)
