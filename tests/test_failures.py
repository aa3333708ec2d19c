"""Failures answered in the envelope, without the exception reaching the server (which would
close the connection): storage faults 503 with Retry-After, bugs 500; request ids; the log's
one traceback per cause and interval; the fault classification."""

from __future__ import annotations

import errno
import json
import logging
import logging.config
import sqlite3
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from threadline.db.faults import classify
from threadline.logs import logging_config
from threadline.settings import Settings
from threadline.web.app import create_app
from threadline.web.failures import FailureLog, RequestGuard

UNREACHABLE_POSTGRES = "postgresql://postgres@127.0.0.1:1/test"


async def test_an_unreachable_database_is_503_in_the_envelope() -> None:
    app = create_app(Settings(database_url=UNREACHABLE_POSTGRES))
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        response = await client.get(
            "/conversations/1", headers={"Authorization": "Token x", "X-Request-Id": "req-42"}
        )
        assert response.status_code == 503
        assert response.json() == {
            "meta": {
                "status": 503,
                "error": "ServiceUnavailable",
                "error_message": "database unavailable",
            },
            "data": {},
        }
        assert response.headers["Retry-After"] == "2"
        assert response.headers["X-Request-Id"] == "req-42"
        live = await client.get("/health/live")
        assert live.status_code == 200
        assert len(live.headers["X-Request-Id"]) == 32  # a new id when the client sent none


def _app_raising(exc: Exception) -> FastAPI:
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise exc

    app.add_middleware(RequestGuard, failures=FailureLog())
    return app


@pytest.mark.parametrize(
    ("exc", "status", "message"),
    [
        (RuntimeError("a bug"), 500, "internal error"),
        (sqlite3.OperationalError("database or disk is full"), 503, "storage full"),
        (OSError(errno.ENOSPC, "No space left on device"), 503, "storage full"),
        (ConnectionRefusedError(111, "refused"), 503, "database unavailable"),
    ],
)
async def test_every_failure_is_answered_in_the_envelope(
    exc: Exception, status: int, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    if isinstance(exc, sqlite3.OperationalError):
        exc.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    app = _app_raising(exc)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with caplog.at_level(logging.WARNING, logger="threadline.requests"):
            for _ in range(5):
                response = await client.get("/boom")
                assert response.status_code == status
                assert response.json()["meta"]["error_message"] == message
                assert ("Retry-After" in response.headers) == (status == 503)
    lines = [r for r in caplog.records if r.levelno == logging.WARNING]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(lines) == 5  # one line per failed request
    assert len(tracebacks) == 1  # one traceback for the cause, not one per request


def test_failure_log_gives_one_traceback_per_cause_and_interval() -> None:
    now = [0.0]
    log = FailureLog(interval=60, clock=lambda: now[0])
    assert log.record("db").with_traceback
    assert log.record("disk").with_traceback  # another cause has its own
    for second in range(1, 60):
        now[0] = second
        assert not log.record("db").with_traceback
    now[0] = 60.5
    report = log.record("db")
    assert report.with_traceback
    assert report.refused == 60
    now[0] = 500.0  # quiet for long: a new episode
    assert log.record("db").refused == 1


def test_classify() -> None:
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    assert classify(full) is not None
    assert classify(full).kind == "storage_full"  # type: ignore[union-attr]
    read_only = sqlite3.OperationalError("attempt to write a readonly database")
    read_only.sqlite_errorcode = sqlite3.SQLITE_READONLY_DIRECTORY  # type: ignore[attr-defined]
    assert classify(read_only).kind == "read_only"  # type: ignore[union-attr]
    assert classify(OSError(errno.EROFS, "ro")).kind == "read_only"  # type: ignore[union-attr]
    assert classify(TimeoutError()).kind == "timeout"  # type: ignore[union-attr]
    wrapped = RuntimeError("outer")
    wrapped.__cause__ = ConnectionResetError()
    assert classify(wrapped).kind == "unavailable"  # type: ignore[union-attr]
    assert classify(ValueError("a bug")) is None
    assert classify(KeyError("x")) is None


def test_log_records_are_json_lines_with_the_request_id(tmp_path: Path) -> None:
    path = tmp_path / "log"
    config = logging_config(as_json=True)
    config["handlers"]["stderr"] = {
        "class": "logging.FileHandler",
        "filename": str(path),
        "formatter": "structured",
        "filters": ["storage_faults"],
    }
    config["root"]["handlers"] = ["stderr"]
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    logging.config.dictConfig(config)
    try:
        import structlog

        with structlog.contextvars.bound_contextvars(request_id="r-1"):
            try:
                raise RuntimeError("boom")
            except RuntimeError:
                logging.getLogger("threadline.test").exception("it failed", extra={"cause": "c"})
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = saved
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["event"] == "it failed"
    assert record["request_id"] == "r-1"
    assert record["cause"] == "c"
    assert record["level"] == "error"
    frames = record["exception"][0]["frames"]
    assert frames
    assert all("locals" not in f or not f["locals"] for f in frames)
