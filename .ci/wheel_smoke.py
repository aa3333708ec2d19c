"""The newcomer's path, run by .ci/run with the Python of a fresh virtualenv that holds only the
built wheel and its locked runtime dependencies (no dev extras, no checkout on the path).

`threadline demo`, then `threadline serve` on a free port, then over HTTP: /health, a
vendor-style reply, the inbox, the widget, the demo site and the API docs with their assets
(package data inside the wheel), and a webhook delivered to a receiver on loopback. Then
Ctrl-C (SIGINT) must stop the server cleanly. Standard library only: nothing of the test
tools is installed here. Exits 1 with one line saying what failed.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

WAIT_SECONDS = 60.0


class SmokeFailure(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def request(
    url: str, *, data: dict[str, str] | None = None, method: str | None = None
) -> tuple[int, bytes]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def expect_ok(url: str, what: str, **kwargs: Any) -> bytes:
    status, body = request(url, **kwargs)
    if status != 200:
        raise SmokeFailure(f"{what}: {url} answered {status}: {body[:300]!r}")
    return body


class Receiver(BaseHTTPRequestHandler):
    deliveries: queue.Queue[bytes] = queue.Queue()

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.deliveries.put(self.rfile.read(length))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def run(threadline: str, work: Path) -> None:
    env = {
        **os.environ,
        "THREADLINE_DATABASE_URL": f"sqlite:///{work / 'threadline.db'}",
        "THREADLINE_DATA_DIR": str(work / "data"),
        # The receiver below listens on loopback, which webhooks refuse by default.
        "THREADLINE_WEBHOOK_ALLOW_PRIVATE": "true",
        "PYTHONWARNINGS": "error::DeprecationWarning:threadline",
    }
    env.pop("THREADLINE_REDIS_URL", None)
    version = subprocess.run(
        [threadline, "--version"], env=env, capture_output=True, text=True, check=True
    )
    print(f"installed: {version.stdout.strip()}")
    made = subprocess.run(
        [threadline, "demo", "-n", "20", "--json", "--reuse"],
        env=env,
        capture_output=True,
        text=True,
        cwd=work,
    )
    if made.returncode != 0:
        raise SmokeFailure(f"threadline demo failed: {made.stderr.strip()[-500:]}")
    demo = json.loads(made.stdout.strip().splitlines()[-1])
    app, token = int(demo["app"]), str(demo["token"])

    receiver = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = work / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [threadline, "serve", "--port", str(port)],
            env=env,
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            if server.poll() is not None:
                raise SmokeFailure(f"threadline serve exited: {log_path.read_text()[-800:]}")
            try:
                if request(f"{base}/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SmokeFailure("threadline serve did not answer /health within 60 s")
            time.sleep(0.2)
        print("/health: 200")

        for path in ("/", "/widget.js", f"/demo/site?app={app}", "/docs", "/openapi.json"):
            expect_ok(f"{base}{path}", "a page")
        docs = expect_ok(f"{base}/docs", "the API docs").decode()
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
            if f"/docs/assets/{asset}" not in docs:
                raise SmokeFailure(f"/docs does not load {asset} from the server itself")
            expect_ok(f"{base}/docs/assets/{asset}", "a docs asset")
        print("/, /widget.js, /demo/site, /docs and its assets: 200")

        auth = {"auth_token": token}
        hook = json.loads(
            expect_ok(
                f"{base}/ext/apps/{app}/webhooks",
                "webhook registration",
                data={**auth, "url": f"http://127.0.0.1:{receiver.server_port}/hook"},
            )
        )["data"]
        listed = json.loads(
            expect_ok(f"{base}/apps/{app}/conversations?{urllib.parse.urlencode(auth)}", "list")
        )["data"]
        if not listed:
            raise SmokeFailure("the demo app's inbox list is empty")
        conversation = listed[0]["id"]
        part = json.loads(
            expect_ok(
                f"{base}/conversations/{conversation}/reply",
                "a vendor-style reply",
                data={**auth, "body": "Hello from the smoke test", "random_id": "424242"},
            )
        )["data"]
        print(f"reply: part {part['id']} in conversation {conversation}")

        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                delivered = json.loads(Receiver.deliveries.get(timeout=1))
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise SmokeFailure(f"webhook {hook['id']}: nothing delivered in 60 s") from None
                continue
            if "Hello from the smoke test" in json.dumps(delivered):
                break
        print("webhook: the reply was delivered to the receiver")
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)  # what Ctrl-C sends
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
                raise SmokeFailure("the server did not stop within 20 s of Ctrl-C") from None
        receiver.shutdown()
    output = log_path.read_text()
    if server.returncode != 0 or "Traceback" in output:
        raise SmokeFailure(f"Ctrl-C: exit {server.returncode}, log ends: {output[-800:]}")
    print("Ctrl-C: the server stopped cleanly")


def main() -> int:
    threadline = shutil.which("threadline", path=str(Path(sys.executable).parent))
    if threadline is None:
        print("wheel smoke: no threadline command beside this Python", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="threadline-smoke-"))
    try:
        run(threadline, work)
    except (SmokeFailure, subprocess.CalledProcessError, OSError, KeyError, ValueError) as exc:
        print(f"wheel smoke: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("wheel smoke: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
