"""Secrets never reach a log line.

The vendor's API takes a token in the query string (`auth_token=`), and uvicorn's access
log writes every request's URL: without this, a log file collects working tokens. Every
log record made in the process (access log included) has its message and arguments
redacted: the values of secret-bearing parameters, and anything shaped like one of
Threadline's tokens or secrets.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[redacted]"
# `name=value` in a query string or form, for names that carry secrets, alone or as the
# last word of a snake_case name (`new_password`, `current_password`); `code` alone (not
# `status_code`) is a one-time code of two-step sign-in.
_SECRET_PARAMETER = re.compile(
    r"(?i)(?<![a-z0-9_])((?:[a-z0-9]+_)*"
    r"(?:auth_token|access_token|token|password|secret|user_hash|ticket|api_key)|code)"
    r"(=|%3D)([^&\s\"'#]+)"
)
# Threadline's own token shapes: API and session (`tl_`), widget visitor (`tlw_`),
# password reset links (`tlr_`), webhook signing secrets (`whsec_`).
_SECRET_VALUE = re.compile(r"\b(tl|tlw|tlr|whsec)_[A-Za-z0-9_\-+/=]{8,}")


def redact(text: str) -> str:
    text = _SECRET_PARAMETER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _SECRET_VALUE.sub(lambda m: f"{m.group(1)}_{REDACTED}", text)


def _redact_value(value: Any) -> Any:
    """A string redacted; another object (a URL, say) replaced by its redacted text when
    that text holds a secret; numbers and the rest untouched (`%d` still formats them)."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, int | float | bytes):
        return value
    text = str(value)
    cleaned = redact(text)
    return cleaned if cleaned != text else value


def _redacting(factory: Any) -> Any:
    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = factory(*args, **kwargs)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_value(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_value(v) for k, v in record.args.items()}
        return record

    make_record.threadline_redacts = True  # type: ignore[attr-defined]
    return make_record


def install_redaction() -> None:
    """Redact every log record made from now on in this process (once is enough)."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "threadline_redacts", False):
        logging.setLogRecordFactory(_redacting(factory))
