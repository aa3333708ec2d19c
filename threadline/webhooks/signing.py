"""Signatures in the Standard Webhooks form (https://www.standardwebhooks.com).

Each delivery carries `webhook-id` (the delivery id, the same on every retry, so that a
receiver can drop duplicates), `webhook-timestamp` (Unix seconds) and `webhook-signature`:
`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` keyed with the endpoint's secret,
written `whsec_<base64 key>`. Receivers should refuse timestamps far from their clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"  # noqa: S105  (a marker, not a secret)
# A receiver should refuse a delivery signed longer ago than this (replay protection).
TOLERANCE_SECONDS = 5 * 60


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


def verify(
    secret: str, message_id: str, timestamp: str, signatures: str, body: bytes, now: int
) -> bool:
    """What a receiver does: any `v1` signature matching, timestamp within the tolerance."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > TOLERANCE_SECONDS:
        return False
    expected = sign(secret, message_id, sent, body)
    return any(hmac.compare_digest(expected, s) for s in signatures.split())
