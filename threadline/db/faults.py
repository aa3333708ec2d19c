"""What a storage failure means for the client: the database is down, slow, full or read-only.

`classify` looks at an exception raised while serving a request (and at the exceptions it
was raised from) and says whether storage is to blame. Such a failure is not a bug: the
request is refused with 503 (and can be retried), not answered with 500.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import exc as sa_exc

FaultKind = Literal["unavailable", "timeout", "storage_full", "read_only"]

MESSAGES: dict[FaultKind, str] = {
    "unavailable": "database unavailable",
    "timeout": "database did not answer in time",
    "storage_full": "storage full",
    "read_only": "database is read-only",
}


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    # What exactly failed (an exception class, an SQLSTATE or errno): failures with the same
    # cause are logged with one traceback per interval.
    cause: str

    @property
    def message(self) -> str:
        return MESSAGES[self.kind]


class StorageUnavailable(Exception):
    """Refused without asking the database: it has just failed (see `Database.write`)."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(f"{fault.message} (a write is already probing whether it is back)")
        self.fault = fault


# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html).
_SQLSTATE_KIND: dict[str, FaultKind] = {
    "53100": "storage_full",  # disk_full
    "25006": "read_only",  # read_only_sql_transaction
    "57014": "timeout",  # query_canceled (statement_timeout)
    "55P03": "timeout",  # lock_not_available (lock_timeout)
    "53300": "unavailable",  # too_many_connections
    "53200": "unavailable",  # out_of_memory
}
# Whole classes: 08 connection exception, 57P operator intervention (shutdown, cannot
# connect now), 58 system error (I/O).
_SQLSTATE_CLASSES: dict[str, FaultKind] = {"08": "unavailable", "57": "unavailable"}

_SQLITE_KIND: dict[int, FaultKind] = {
    sqlite3.SQLITE_FULL: "storage_full",
    sqlite3.SQLITE_READONLY: "read_only",
    sqlite3.SQLITE_BUSY: "timeout",
    sqlite3.SQLITE_LOCKED: "timeout",
    sqlite3.SQLITE_IOERR: "unavailable",
    sqlite3.SQLITE_CANTOPEN: "unavailable",
}

_ERRNO_KIND: dict[int, FaultKind] = {
    errno.ENOSPC: "storage_full",
    errno.EDQUOT: "storage_full",
    errno.EROFS: "read_only",
}


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, the driver's exception it wraps, and what they were raised from."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 10:
        current = todo.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return seen


def _asyncpg_fault(exc: BaseException) -> Fault | None:
    module = type(exc).__module__
    if not module.startswith("asyncpg"):
        return None
    name = type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        kind = _SQLSTATE_KIND.get(sqlstate) or _SQLSTATE_CLASSES.get(sqlstate[:2])
        if kind is not None:
            return Fault(kind, f"postgresql {sqlstate} {name}")
    # The client side: a closed or lost connection, one still busy with a cancelled query.
    if name in ("ConnectionDoesNotExistError", "InterfaceError", "InternalClientError"):
        return Fault("unavailable", f"postgresql {name}")
    return None


def classify(exc: BaseException) -> Fault | None:
    """The storage fault behind `exc`, or None when it is something else (a bug)."""
    for current in _chain(exc):
        if isinstance(current, StorageUnavailable):
            return current.fault
        if isinstance(current, sa_exc.TimeoutError):  # no pooled connection came free in time
            return Fault("timeout", "pool wait timeout")
        if isinstance(current, sqlite3.Error):
            code = getattr(current, "sqlite_errorcode", None)
            primary = code & 0xFF if isinstance(code, int) else None
            kind = _SQLITE_KIND.get(primary) if primary is not None else None
            if kind is not None:
                return Fault(kind, f"sqlite {getattr(current, 'sqlite_errorname', primary)}")
        found = _asyncpg_fault(current)
        if found is not None:
            return found
        if isinstance(current, OSError) and current.errno in _ERRNO_KIND:
            return Fault(_ERRNO_KIND[current.errno], f"os {errno.errorcode[current.errno]}")
        if isinstance(current, TimeoutError | asyncio.TimeoutError):
            return Fault("timeout", "timeout")
        if isinstance(current, ConnectionError | OSError):
            return Fault("unavailable", f"os {type(current).__name__}")
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return Fault("unavailable", "connection invalidated")
    return None
