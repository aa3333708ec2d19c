"""The outermost request middleware: a request id, and an answer for every failure.

Every HTTP request gets an id (the client's `X-Request-Id` when it is a sane token, else a
new one), bound to the log records written while it runs and returned in the
`X-Request-Id` header. An exception no handler took is answered here, in the envelope:
a storage fault (`threadline.db.faults`) with 503 `ServiceUnavailable` and a `Retry-After`,
anything else with 500 `InternalError`. The exception is not raised further: Starlette's
outermost middleware would re-raise it to the server, which then closes the connection,
and the client's next request on it would go unanswered.

Each failed request is logged as one line; the traceback is logged once per distinct cause
and interval, with how many requests that cause refused since ("database unavailable since
..., 2272 requests refused").
"""

from __future__ import annotations

import logging
import re
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadline.api.envelope import error_response
from threadline.db.faults import Fault, classify

log = logging.getLogger("threadline.requests")

REQUEST_ID_HEADER = "X-Request-Id"
# Seconds a client is asked to wait before retrying a request refused for a storage fault.
RETRY_AFTER_SECONDS = 2
# A cause's traceback is logged at most once per this many seconds.
TRACEBACK_INTERVAL_SECONDS = 60.0

_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@dataclass(slots=True)
class _Cause:
    since: datetime
    last_seen: float
    last_traceback: float
    refused: int = 0


@dataclass(frozen=True, slots=True)
class Report:
    """What to log for one failed request."""

    with_traceback: bool
    since: datetime
    # Requests this cause failed since its last traceback (this one included).
    refused: int


class FailureLog:
    """Counts failures per cause, and says when a cause's traceback is due."""

    def __init__(
        self,
        interval: float = TRACEBACK_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._causes: dict[str, _Cause] = {}

    def record(self, cause: str) -> Report:
        now = self.clock()
        found = self._causes.get(cause)
        if found is None or now - found.last_seen > self.interval:
            # New, or back after a quiet interval: a new episode, with its traceback.
            self._causes[cause] = _Cause(datetime.now(UTC), now, now, refused=0)
            return Report(True, self._causes[cause].since, 1)
        found.last_seen = now
        found.refused += 1
        if now - found.last_traceback < self.interval:
            return Report(False, found.since, found.refused)
        found.last_traceback = now
        refused, found.refused = found.refused, 0
        return Report(True, found.since, refused)


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = bytes(value).decode("latin-1")
            if _SANE_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def _bug_cause(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{where}"


class RequestGuard:
    """Pure ASGI middleware (see the module's doc)."""

    def __init__(self, app: ASGIApp, failures: FailureLog | None = None) -> None:
        self.app = app
        self.failures = failures or FailureLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                fault = classify(exc)
                self._log(scope, exc, fault, answered=not started)
                if started:
                    raise  # the answer is under way: nothing else can be sent
                if fault is None:
                    response = error_response("InternalError", "internal error", 500)
                else:
                    response = error_response("ServiceUnavailable", fault.message, 503)
                    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
                await response(scope, receive, send_with_id)

    def _log(self, scope: Scope, exc: Exception, fault: Fault | None, *, answered: bool) -> None:
        cause = fault.cause if fault is not None else _bug_cause(exc)
        status = 503 if fault is not None else 500
        report = self.failures.record(cause)
        log.warning(
            "%s %s failed: %s",
            scope.get("method"),
            scope.get("path"),
            fault.message if fault is not None else "internal error",
            extra={
                "status": status if answered else None,
                "cause": cause,
                "error": f"{type(exc).__name__}: {exc}"[:300],
            },
        )
        if report.with_traceback:
            what = fault.message if fault is not None else f"unhandled error ({cause})"
            log.error(
                "%s since %s, %d requests refused",
                what,
                report.since.isoformat(timespec="seconds"),
                report.refused,
                exc_info=exc,
                extra={"cause": cause},
            )
