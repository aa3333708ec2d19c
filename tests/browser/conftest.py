"""Browser tests: a real `threadline serve` process and Debian's Chromium driven by Playwright.

Each test module gets its own server on a free port, over a fresh database filled by
`threadline demo` (SQLite in a temporary folder; PostgreSQL for the `postgres` variant).
Chromium is the system's (`/usr/bin/chromium`, or `THREADLINE_CHROMIUM`): nothing here
downloads a browser. Without Chromium the tests are skipped, except under CI, where that
is an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Playwright, sync_playwright
from sqlalchemy import make_url

from tests.browser.chromium import CHROMIUM_ARGS, chromium_path
from tests.conftest import BACKENDS, _admin_execute, _worker, postgres_base_url

# Seconds a test waits for something the screen should show (generous: the machine is shared).
WAIT_MS = 15_000


@dataclass(frozen=True)
class LiveServer:
    """A running server and the demo app it serves."""

    base_url: str
    database_url: str
    app_id: int
    token: str
    operator_email: str
    operator_password: str

    def api(self) -> httpx.Client:
        """An API client with the demo app's token."""
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Token {self.token}"},
            timeout=WAIT_MS / 1000,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _threadline(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )


_databases = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist, each browser module runs in one process: one server per module."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


def _in_thread(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` to the end in a thread of its own: Playwright's loop runs in this one."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work).result()


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty database of this module's own (the server creates its tables)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('browser') / 'threadline.db'}"
        return
    base = postgres_base_url()
    if not base:
        pytest.skip("THREADLINE_TEST_POSTGRES_URL is not set")
    name = f"threadline_browser_{_worker()}_{os.getpid()}_{next(_databases)}"
    drop = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    _in_thread(_admin_execute(base, drop, f"CREATE DATABASE {name}"))
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    _in_thread(_admin_execute(base, drop))


@pytest.fixture(scope="module")
def live_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """`threadline demo` into the module's database, then `threadline serve` on a free port."""
    env = {
        **os.environ,
        "THREADLINE_DATABASE_URL": database_url,
        "THREADLINE_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "THREADLINE_RATE_LIMIT": "",
        # Every test's browser is a new anonymous visitor, all from 127.0.0.1.
        "THREADLINE_WIDGET_NEW_VISITOR_LIMIT": "",
    }
    made = _threadline(
        "demo", "-n", "12", "--seed", "7", "--password", "demo-pass", "--json", env=env
    )
    demo = json.loads(made.stdout.strip().splitlines()[-1])
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "threadline.cli", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"the server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield LiveServer(
            base_url=base_url,
            database_url=database_url,
            app_id=int(demo["app"]),
            token=demo["token"],
            operator_email=demo["email"],
            operator_password=demo["password"],
        )
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# Module scope: sync Playwright keeps an event loop running in this thread while it is
# started, and the asyncio tests that follow in this process need the thread back.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI=true but Chromium is not installed (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


def _person(browser: Browser, width: int, height: int, timezone: str) -> BrowserContext:
    ctx = browser.new_context(viewport={"width": width, "height": height}, timezone_id=timezone)
    ctx.set_default_timeout(WAIT_MS)
    return ctx


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (cookies, local storage) for one person: a desktop in Berlin."""
    with contextlib.closing(_person(browser, 1280, 800, "Europe/Berlin")) as ctx:
        yield ctx


@pytest.fixture
def second_context(browser: Browser) -> Iterator[BrowserContext]:
    """Another person's browser, apart from `context`: a phone (375 px) in Tokyo."""
    with contextlib.closing(_person(browser, 375, 740, "Asia/Tokyo")) as ctx:
        yield ctx
