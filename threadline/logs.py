"""Logging: structured records (JSON when stderr is not a terminal), with the request id.

`logging_config` is a `logging.config.dictConfig` dictionary; `threadline serve` hands it
to uvicorn, which applies it in every worker process. Records of the standard `logging`
module (ours, uvicorn's, SQLAlchemy's) go through structlog's formatter, with the request
id bound by the request middleware (`threadline.web.failures`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from threadline.db.faults import classify


class DropStorageFaultTracebacks(logging.Filter):
    """SQLAlchemy's pool logs a traceback of its own when a connection it resets or closes
    turns out lost; the request that met the fault is logged already (one line, and one
    traceback per cause and interval): drop those."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("sqlalchemy.pool") or not record.exc_info:
            return True
        exc = record.exc_info[1]
        return exc is None or classify(exc) is None


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def logging_config(*, as_json: bool | None = None, level: str = "INFO") -> dict[str, Any]:
    """JSON lines when `as_json` (default: when stderr is not a terminal), else for humans."""
    if as_json is None:
        as_json = not sys.stderr.isatty()
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if as_json:
        # A traceback as a list of frames, without each frame's local variables (those made
        # one record of a database failure a megabyte).
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        final += [tracebacks, structlog.processors.JSONRenderer()]
    else:
        final.append(structlog.dev.ConsoleRenderer(colors=False))
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"storage_faults": {"()": DropStorageFaultTracebacks}},
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": final,
                "foreign_pre_chain": _shared_processors(),
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "structured",
                "filters": ["storage_faults"],
            }
        },
        "loggers": {
            name: {"handlers": [], "propagate": True, "level": level}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
        "root": {"handlers": ["stderr"], "level": level},
    }
