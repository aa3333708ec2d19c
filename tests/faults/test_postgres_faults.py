"""PostgreSQL cut, frozen and restarted under a real `threadline serve`, with bounded clients.

The server reaches its own private cluster through a TCP proxy the test cuts or freezes.
Each test asserts: every request answered (2xx, or 503 in the envelope with Retry-After)
within a bound and never a dropped keep-alive connection, `/health/ready` truthful within
1 s, recovery without a restart, no acknowledged write lost or duplicated, and a clean
`threadline check`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import Target, assert_writes_kept
from tests.faults.infra import (
    PrivatePostgres,
    Server,
    TcpProxy,
    Writers,
    acknowledged_count,
    wait_until,
)


@pytest.fixture
def proxied(private_postgres: PrivatePostgres) -> Iterator[TcpProxy]:
    proxy = TcpProxy(private_postgres.port)
    try:
        yield proxy
    finally:
        proxy.close()


def ready(server: Server) -> httpx.Response:
    """/health/ready, which must answer within a second whatever is wrong."""
    started = time.monotonic()
    response = httpx.get(f"{server.base_url}/health/ready", timeout=5)
    took = time.monotonic() - started
    assert took < 1.0, f"/health/ready took {took:.2f} s"
    return response


def assert_quiet_log(server: Server, failed: int) -> None:
    """Every record is one JSON line; a failed request costs one line, and tracebacks come
    once per cause and interval, not per request."""
    lines = [line for line in server.log_lines() if line.strip()]
    records = [json.loads(line) for line in lines]
    tracebacks = [r for r in records if "exception" in r]
    assert len(tracebacks) <= 6, [r["event"] for r in tracebacks]
    failures = [r for r in records if r.get("logger") == "threadline.requests" and "cause" in r]
    assert all(r.get("request_id") for r in failures)
    # One line per failed request, plus each worker's start-up, shutdown and once-per-cause
    # warnings, and the tracebacks.
    assert len(records) <= failed + len(tracebacks) + 10 + 20 * server.workers, [
        (r.get("logger"), r["event"]) for r in records
    ]
    total = sum(len(line) for line in lines)
    assert total <= 2_000 * (failed + 10) + 20_000 * len(tracebacks)


def test_cut_database_answers_503_keeps_the_connection_and_recovers(
    pg_target: Target, private_postgres: PrivatePostgres, proxied: TcpProxy, tmp_path: Path
) -> None:
    url = private_postgres.url(port=proxied.port, database=pg_target.url.rsplit("/", 1)[1])
    server = Server(url, tmp_path)
    try:
        assert ready(server).status_code == 200
        with Writers(server.base_url, pg_target.token, pg_target.conversation_id) as writers:
            wait_until(lambda: acknowledged_count(writers.tally) >= 20, 30, "writes before")
            proxied.cut()
            wait_until(lambda: writers.tally.refused >= 20, 30, "refusals during the cut")
            down = ready(server)
            assert down.status_code == 503
            assert down.json()["status"] == "unavailable"
            assert "database" in down.json()["error"]
            time.sleep(2)
            before = acknowledged_count(writers.tally)
            proxied.restore()
            wait_until(lambda: acknowledged_count(writers.tally) >= before + 20, 30, "recovery")
            assert ready(server).status_code == 200
        writers.settle()
        tally = writers.tally
        assert tally.bad == []
        assert tally.refused >= 20
        assert set(tally.statuses) <= {200, 503}
        assert_writes_kept(pg_target, tally)
        answer = httpx.get(f"{server.base_url}/health/ready", headers={"X-Request-Id": "abc-1"})
        assert answer.headers["X-Request-Id"] == "abc-1"
    finally:
        server.stop()
    assert_quiet_log(server, tally.refused)


def test_frozen_database_answers_within_the_timeouts_and_recovers(
    pg_target: Target, private_postgres: PrivatePostgres, proxied: TcpProxy, tmp_path: Path
) -> None:
    url = private_postgres.url(port=proxied.port, database=pg_target.url.rsplit("/", 1)[1])
    server = Server(url, tmp_path)
    try:
        with Writers(server.base_url, pg_target.token, pg_target.conversation_id) as writers:
            wait_until(lambda: acknowledged_count(writers.tally) >= 20, 30, "writes before")
            proxied.freeze()
            down = ready(server)
            assert down.status_code == 503
            assert "database" in down.json()["error"]
            wait_until(lambda: writers.tally.refused >= 8, 30, "refusals during the freeze")
            before = acknowledged_count(writers.tally)
            proxied.restore()
            wait_until(lambda: acknowledged_count(writers.tally) >= before + 20, 30, "recovery")
            wait_until(lambda: ready(server).status_code == 200, 10, "ready again")
        writers.settle()
        tally = writers.tally
        assert tally.bad == []
        assert set(tally.statuses) <= {200, 503}
        assert_writes_kept(pg_target, tally)
    finally:
        server.stop()
    assert_quiet_log(server, tally.refused)


def test_restarted_database_fails_no_request(
    pg_target: Target, private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    """An idle server's connections all die with a PostgreSQL restart: each is replaced
    before use, so not one request fails because of it."""
    server = Server(pg_target.url, tmp_path)
    try:
        with Writers(server.base_url, pg_target.token, pg_target.conversation_id) as writers:
            # Several writers at once: several kept write connections and pooled ones.
            wait_until(lambda: acknowledged_count(writers.tally) >= 40, 30, "writes before")
        private_postgres.restart()
        time.sleep(0.5)
        with writers.client() as client:
            for n in range(60):
                assert writers.send(client, 10**6 + n), writers.tally.bad
                read = client.get(f"/conversations/{pg_target.conversation_id}")
                assert read.status_code == 200, read.text
        assert ready(server).status_code == 200
        assert writers.tally.bad == []
        assert_writes_kept(pg_target, writers.tally)
    finally:
        server.stop()
