"""Redis frozen, and Redis shut down, under a real `threadline serve` on PostgreSQL that uses
it as its bus and for its rate limits, with bounded clients and a WebSocket client.

The server reaches a private redis-server through a TCP proxy the test freezes; the
shut-down case stops that redis-server and starts it again on its port. The event log is
read only on the bus's wake-ups here (THREADLINE_REALTIME_POLL_SECONDS is an hour), so the
WebSocket client gets its events through Redis: when they arrive after the fault, the bus
came back by itself. Each test asserts: every request answered (2xx, or 503 in the
envelope) within a bound, `/health/ready` naming Redis within 1 s and ready again after,
recovery without a restart, realtime delivery of every acknowledged write, no acknowledged
write lost or duplicated, a clean `threadline check`, and quiet logs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import Target, assert_writes_kept
from tests.faults.infra import (
    ANSWER_BOUND_SECONDS,
    PrivateRedis,
    Server,
    TcpProxy,
    Watcher,
    Writers,
    acknowledged_count,
    wait_until,
)
from tests.faults.test_postgres_faults import assert_quiet_log, ready

# A key none of the writers takes (they count up from 2).
LATE_RANDOM_ID = 10**9


@pytest.fixture
def proxied_redis() -> Iterator[tuple[PrivateRedis, TcpProxy]]:
    redis = PrivateRedis()
    proxy = TcpProxy(redis.port)
    try:
        yield redis, proxy
    finally:
        proxy.close()
        redis.close()


def delivered_everything(watcher: Watcher, writers: Writers) -> bool:
    with writers.tally.lock:
        acknowledged = set(writers.tally.acknowledged)
    return acknowledged <= watcher.seen_now()


@pytest.mark.parametrize("fault", ["frozen", "shut down"])
def test_redis_fault_answers_every_request_and_the_bus_comes_back(
    pg_target: Target,
    proxied_redis: tuple[PrivateRedis, TcpProxy],
    tmp_path: Path,
    fault: str,
) -> None:
    redis, proxy = proxied_redis
    url = redis.url(proxy.port)
    server = Server(
        pg_target.url,
        tmp_path,
        THREADLINE_REDIS_URL=url,
        THREADLINE_RATE_LIMIT="100000/minute",
        THREADLINE_RATE_LIMIT_STORAGE=url,
        THREADLINE_REALTIME_POLL_SECONDS="3600",
    )
    try:
        assert ready(server).status_code == 200
        with Watcher(server.base_url, pg_target.token, pg_target.app_id) as watcher:
            writers = Writers(server.base_url, pg_target.token, pg_target.conversation_id)
            with writers:
                wait_until(lambda: acknowledged_count(writers.tally) >= 20, 30, "writes before")
                wait_until(lambda: delivered_everything(watcher, writers), 30, "realtime before")
                if fault == "frozen":
                    proxy.freeze()
                else:
                    redis.stop()
                down = ready(server)
                assert down.status_code == 503
                checks = down.json()["checks"]
                assert checks["database"] == "ok"
                assert checks["redis"] != "ok"
                assert "redis" in down.json()["error"].lower()
                # Writes go on: Redis carries wake-ups and counters, never the data.
                during = acknowledged_count(writers.tally)
                wait_until(lambda: acknowledged_count(writers.tally) >= during + 20, 30, "writes")
                # Longer than any request may take: a request waiting on Redis would show.
                time.sleep(ANSWER_BOUND_SECONDS + 2)
                assert ready(server).status_code == 503
                if fault == "frozen":
                    proxy.restore()
                else:
                    redis.start()
                wait_until(lambda: ready(server).status_code == 200, 15, "ready again")
                before = acknowledged_count(writers.tally)
                wait_until(lambda: acknowledged_count(writers.tally) >= before + 20, 30, "after")
            writers.settle()
            # Every acknowledged write reaches the WebSocket, those of the fault's time too.
            wait_until(lambda: delivered_everything(watcher, writers), 30, "realtime after")
            # And a write now comes through the bus alone, as before the fault.
            with writers.client() as client:
                assert writers.send(client, LATE_RANDOM_ID)
            wait_until(lambda: LATE_RANDOM_ID in watcher.seen_now(), 15, "a live event after")
        tally = writers.tally
        assert tally.bad == []
        assert set(tally.statuses) <= {200, 503}
        assert_writes_kept(pg_target, tally)
    finally:
        server.stop()
    assert_quiet_log(server, tally.refused)
