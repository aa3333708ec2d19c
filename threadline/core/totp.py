"""One-time codes of an authenticator app (TOTP, RFC 6238), the optional second factor of
an inbox sign-in: pure rules, no I/O.

A code is the 6 digits of one 30-second time step. A code of the step before or after is
accepted too (a phone's clock a little off, a code typed at the turn of a step), and each
step works once per admin: the caller stores the step a code was accepted for and accepts
only later ones afterwards, so a code seen over a shoulder or in a log cannot be replayed.
"""

from __future__ import annotations

import hmac
import re
from datetime import datetime

import pyotp

DIGITS = 6
STEP_SECONDS = 30
# Steps either side of now whose codes are accepted.
WINDOW = 1
ISSUER = "Threadline"
_CODE = re.compile(r"[0-9]{6}")


def new_secret() -> str:
    """A random base32 secret of 160 bits (RFC 4226's recommended length)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, account: str) -> str:
    """The `otpauth://` URI an authenticator app reads (typed, pasted or as a QR code)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=account, issuer_name=ISSUER
    )


def normalize(code: str) -> str | None:
    """The code's 6 digits (spaces and dashes people type between groups dropped), or None
    when it cannot be a code."""
    digits = re.sub(r"[\s-]", "", code)
    return digits if _CODE.fullmatch(digits) else None


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).generate_otp(step)


def step_of(now: datetime) -> int:
    return int(now.timestamp()) // STEP_SECONDS


def matching_step(secret: str, code: str, now: datetime, last_step: int | None) -> int | None:
    """The time step `code` belongs to, within `WINDOW` steps of `now` and after
    `last_step` (the one last accepted: a code works once); None when it matches none."""
    digits = normalize(code)
    if digits is None:
        return None
    current = step_of(now)
    for step in range(current - WINDOW, current + WINDOW + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(code_at(secret, step), digits):
            return step
    return None
