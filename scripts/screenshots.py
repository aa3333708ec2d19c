"""Screenshots of the operators' inbox and of the chat widget, from a demo server.

Usage: scripts/screenshots [FOLDER]   (default: ./screenshots/)

Starts `threadline serve` over a temporary SQLite database filled by `threadline demo`,
drives Debian's Chromium (/usr/bin/chromium, or THREADLINE_CHROMIUM) with Playwright,
and writes:
  inbox.png           the inbox at 1280 px, a conversation open
  widget.png          the widget open on /demo/site at 375 px, with a short chat
  widget-desktop.png  the same page at 1280 px
  widget-unread.png   the widget closed at 375 px, with its unread badge
Prints one line per step; on failure, one line starting with "error:" and exit status 1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, expect, sync_playwright

# The repository's root, for the Chromium settings the browser tests use.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.browser.chromium import CHROMIUM_ARGS, chromium_path

WAIT_MS = 20_000
SERVER_START_SECONDS = 60


class Failed(Exception):
    """A step failed; the message says which and why."""


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def chromium() -> str:
    path = chromium_path()
    if path is None:
        raise Failed("Chromium is not installed (apt-get install chromium)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def threadline(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(  # noqa: S603  (our own command, fixed arguments)
        [sys.executable, "-m", "threadline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise Failed(f"threadline {args[0]} failed: {last}")
    return done.stdout


def wait_for_server(base_url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
            raise Failed(f"the server exited: {tail[0]}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise Failed(f"the server did not answer on {base_url} within {SERVER_START_SECONDS} s")


def shoot_inbox(browser: Browser, base_url: str, demo: dict[str, Any], folder: Path) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(base_url + "/")
    page.get_by_test_id("login-email").fill(demo["email"])
    page.get_by_test_id("login-password").fill(demo["password"])
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("inbox")).to_be_visible()
    say("  signed in to the inbox")
    page.get_by_test_id("conversation-row").first.click()
    expect(page.get_by_test_id("conversation")).to_be_visible()
    expect(page.get_by_test_id("part").first).to_be_visible()
    page.wait_for_timeout(500)  # let the list and the conversation settle
    page.screenshot(path=str(folder / "inbox.png"))
    say(f"  wrote {folder / 'inbox.png'}")
    context.close()


def open_widget(page: Page) -> None:
    page.get_by_test_id("tl-launcher").click()
    expect(page.get_by_test_id("tl-panel")).to_be_visible()


def shoot_widget(browser: Browser, base_url: str, demo: dict[str, Any], folder: Path) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(base_url + "/demo/site")
    open_widget(page)
    page.get_by_test_id("tl-input").fill("Hi! Did my order #1042 ship yet?")
    page.get_by_test_id("tl-input").press("Enter")
    expect(page.get_by_test_id("tl-message-time")).to_have_count(1)
    say("  the visitor wrote in the widget")
    api = httpx.Client(
        base_url=base_url, headers={"Authorization": f"Token {demo['token']}"}, timeout=10
    )
    saved = page.evaluate(
        "() => JSON.parse(Object.entries(localStorage)"
        ".find(([k]) => k.startsWith('threadline:'))[1])"
    )
    conversations = api.get(f"/users/{saved['user']}/conversations").json()["data"]
    cid = conversations[0]["id"]
    api.post(
        f"/conversations/{cid}/reply",
        json={"body": "Hello! Yes, it left our roastery this morning."},
    ).raise_for_status()
    expect(page.get_by_test_id("tl-message")).to_have_count(2)
    api.post(f"/ext/conversations/{cid}/typing", json={"body": "tracking"}).raise_for_status()
    expect(page.get_by_test_id("tl-typing")).to_be_visible()
    page.screenshot(path=str(folder / "widget.png"))
    say(f"  wrote {folder / 'widget.png'}")

    page.get_by_test_id("tl-launcher").or_(page.get_by_label("Close chat")).first.click()
    expect(page.get_by_test_id("tl-panel")).to_be_hidden()
    api.post(
        f"/conversations/{cid}/reply",
        json={"body": "Here is the tracking number: NW-88412."},
    ).raise_for_status()
    expect(page.get_by_test_id("tl-unread")).to_have_text("1")
    page.screenshot(path=str(folder / "widget-unread.png"))
    say(f"  wrote {folder / 'widget-unread.png'}")
    storage = context.storage_state()
    context.close()

    desktop = browser.new_context(viewport={"width": 1280, "height": 800}, storage_state=storage)
    desktop.set_default_timeout(WAIT_MS)
    page = desktop.new_page()
    page.goto(base_url + "/demo/site")
    open_widget(page)
    expect(page.get_by_test_id("tl-message")).to_have_count(3)
    page.wait_for_timeout(300)
    page.screenshot(path=str(folder / "widget-desktop.png"))
    say(f"  wrote {folder / 'widget-desktop.png'}")
    desktop.close()
    api.close()


def run(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    executable = chromium()
    with tempfile.TemporaryDirectory(prefix="threadline-screenshots-") as tmp:
        env = {
            **os.environ,
            "THREADLINE_DATABASE_URL": f"sqlite:///{Path(tmp) / 'threadline.db'}",
            "THREADLINE_DATA_DIR": str(Path(tmp) / "data"),
            "THREADLINE_RATE_LIMIT": "",
        }
        say("Loading demo data into a temporary SQLite database")
        made = threadline("demo", "-n", "24", "--seed", "7", "--json", env=env)
        demo = json.loads(made.strip().splitlines()[-1])
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        log = Path(tmp) / "server.log"
        say(f"Starting the server on {base_url}")
        with log.open("wb") as out:
            server = subprocess.Popen(  # noqa: S603  (our own command)
                [sys.executable, "-m", "threadline.cli", "serve", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_server(base_url, server, log)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
                try:
                    say("Inbox (1280 px)")
                    shoot_inbox(browser, base_url, demo, folder)
                    say("Widget on /demo/site (375 px and 1280 px)")
                    shoot_widget(browser, base_url, demo, folder)
                finally:
                    browser.close()
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    say(f"Done: screenshots in {folder}")


def main() -> int:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "screenshots")
    try:
        run(folder)
    except Failed as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except Exception as exc:  # a browser step that timed out, a refused request ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        sys.stderr.write(f"error: {type(exc).__name__}: {first}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
