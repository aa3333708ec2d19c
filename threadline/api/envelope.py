"""The `{"meta": {"status": N, ...}, "data": ...}` envelope of every answer, errors included."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from threadline.api.errors import (
    AuthenticationFailed,
    BadRequest,
    DomainError,
    MethodNotAllowed,
    PermissionDenied,
    RouteNotFound,
    Throttled,
)
from threadline.api.routing import allowed_methods
from threadline.api.schemas import Envelope, ErrorEnvelope, adapter

JSON = "application/json"


def respond(
    kind: Any,
    data: Any,
    *,
    context: dict[str, Any] | None = None,
    status: int = 200,
    **meta: Any,
) -> Response:
    """Serialise `data` as `kind` inside the envelope, straight to JSON bytes."""
    body = adapter(Envelope[kind]).dump_json(
        {"meta": {"status": status, **meta}, "data": data}, context=context
    )
    return Response(body, status_code=status, media_type=JSON)


def error_response(error_name: str, message: str, status: int) -> Response:
    body = adapter(ErrorEnvelope).dump_json(
        {
            "meta": {"status": status, "error": error_name, "error_message": message},
            "data": {},
        }
    )
    return Response(body, status_code=status, media_type=JSON)


async def _domain_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    response = error_response(exc.error_name, exc.message, exc.status)
    if isinstance(exc, Throttled):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("path", "query", "body")]
    name = ".".join(loc) or "body"
    message = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        message = "is required"
    return error_response("BadRequest", f"{name}: {message}", 400)


_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

_BY_STATUS: dict[int, type[DomainError]] = {
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: RouteNotFound,
    405: MethodNotAllowed,
}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return error_response("NotFound", "no such endpoint", 404)
    if exc.status_code == 405:
        response = error_response("MethodNotAllowed", "method not allowed on this endpoint", 405)
        allowed = allowed_methods(request.app, request.scope["path"])
        if not allowed and exc.headers and "Allow" in exc.headers:
            allowed = {m.strip() for m in exc.headers["Allow"].split(",")}
        if allowed:
            response.headers["Allow"] = ", ".join(m for m in _METHOD_ORDER if m in allowed)
        return response
    kind = _BY_STATUS.get(exc.status_code)
    if kind is not None:
        return error_response(kind.error_name, str(exc.detail), exc.status_code)
    if 400 <= exc.status_code < 500:
        return error_response(BadRequest.error_name, f"body: {exc.detail}", 400)
    return error_response("InternalError", str(exc.detail), exc.status_code)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
