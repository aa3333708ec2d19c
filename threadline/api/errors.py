"""The API's own refusals, next to the engine's `DomainError`s they extend.

Each class carries the vendor error name and HTTP status; one handler renders them all
into the `{"meta", "data"}` envelope.
"""

from __future__ import annotations

from threadline.core.errors import DomainError, InvalidParameter

__all__ = [
    "AuthenticationFailed",
    "BadRequest",
    "DomainError",
    "InvalidParameter",
    "MethodNotAllowed",
    "PermissionDenied",
    "RouteNotFound",
    "Throttled",
]


class BadRequest(DomainError):
    """A malformed request that no single parameter is to blame for (the body, the encoding)."""


class AuthenticationFailed(DomainError):
    error_name = "AuthenticationFailed"
    status = 401


class PermissionDenied(DomainError):
    error_name = "PermissionDenied"
    status = 403


class RouteNotFound(DomainError):
    error_name = "NotFound"
    status = 404


class MethodNotAllowed(DomainError):
    error_name = "MethodNotAllowed"
    status = 405


class Throttled(DomainError):
    error_name = "Throttled"
    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many requests, retry in {retry_after} s")
        self.retry_after = retry_after
