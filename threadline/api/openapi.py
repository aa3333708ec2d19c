"""The OpenAPI document at `/openapi.json` (shown at `/docs`), completed by hand.

FastAPI sees only what a signature declares. Tokens, path ids and the merged parameters are
read by hand, so this module finishes the generated document: the three ways to send a
token and the scopes each operation needs, the real types of path parameters, the version
prefixes, and no trace of FastAPI's 422 answer (a bad parameter is a 400 here).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from threadline.api.auth import SCOPES_ATTRIBUTE
from threadline.api.params import MAX_ID

_ID = {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID}

# Path parameters are read as text and parsed by hand (a bad one is a 400 naming it).
PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "app": {"anyOf": [{"type": "string", "enum": ["$self_app"]}, _ID]},
    "conversation_id": _ID,
    "admin_id": _ID,
    "channel_id": _ID,
    "token_id": _ID,
    "attachment_id": _ID,
    # Threadline's user id; with `by_user_id=true` the site's own id, any text.
    "user": {"type": "string", "minLength": 1, "maxLength": 255},
}

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "TokenHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`Authorization: Token <token>`.",
    },
    "Bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <token>`.",
    },
    "AuthToken": {
        "type": "apiKey",
        "in": "query",
        "name": "auth_token",
        "description": "The `auth_token` parameter: in the query string, or as a field of "
        "a JSON or form body.",
    },
}

# Scopes an operation asks for only with some parameters.
CONDITIONAL_SCOPES: dict[tuple[str, str], str] = {
    ("post", "/conversations/{conversation_id}/reply"): "`as-user` with `from_user`",
    ("post", "/ext/conversations/{conversation_id}/read"): "`as-user` with `by=user`",
    ("post", "/ext/conversations/{conversation_id}/typing"): "`as-user` with `from_user`",
}

SERVERS = [
    {"url": "/", "description": "Current pagination (`paginate_*`), unless `version=1`."},
    {"url": "/v2", "description": "Current pagination (`paginate_*`)."},
    {"url": "/v1", "description": "Old pagination (`after`, `count`)."},
]

_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


@dataclass(frozen=True, slots=True)
class ServedRoute:
    """An API route as the app serves it: with the prefixes of the routers it is in."""

    route: APIRoute
    path: str
    methods: frozenset[str]
    include_in_schema: bool


def served_routes(app: FastAPI) -> Iterator[ServedRoute]:
    # FastAPI >= 0.16x keeps included routers as such and resolves their routes lazily;
    # older releases copy each route into `app.routes`.
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    contexts: Iterable[Any] = iterate(app.routes) if iterate is not None else app.routes
    for context in contexts:
        original = getattr(context, "original_route", context)
        if isinstance(original, APIRoute):
            yield ServedRoute(
                route=original,
                path=str(context.path_format),
                methods=frozenset(context.methods or ()),
                include_in_schema=bool(context.include_in_schema),
            )


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def route_scopes(route: APIRoute) -> tuple[str, ...] | None:
    """The scopes the route's token dependency demands, or None when it takes no token."""
    for dependant in _dependants(route.dependant):
        scopes = getattr(dependant.call, SCOPES_ATTRIBUTE, None)
        if scopes is not None:
            return tuple(scopes)
    return None


def _security(scopes: tuple[str, ...]) -> list[dict[str, list[str]]]:
    # For schemes other than OAuth2, OpenAPI 3.1 lists the roles a call needs: the scopes.
    return [{name: list(scopes)} for name in SECURITY_SCHEMES]


def _scope_text(scopes: tuple[str, ...], conditional: str | None) -> str:
    named = ", ".join(f"`{scope}`" for scope in scopes) if scopes else "any"
    text = f"Token scopes: {named}"
    return f"{text}; also {conditional}." if conditional else f"{text}."


def finish(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    """Complete the generated document in place (see the module's docstring)."""
    components = schema.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    for name in _VALIDATION_SCHEMAS:
        components.get("schemas", {}).pop(name, None)
    schema.pop("security", None)
    schema["servers"] = SERVERS
    scopes_of = {
        (method.lower(), served.path): route_scopes(served.route)
        for served in served_routes(app)
        for method in served.methods
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            operation.get("responses", {}).pop("422", None)
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in PATH_SCHEMAS:
                    parameter["schema"] = PATH_SCHEMAS[parameter["name"]]
            scopes = scopes_of.get((method, path))
            if scopes is None:
                continue
            operation["security"] = _security(scopes)
            text = _scope_text(scopes, CONDITIONAL_SCOPES.get((method, path)))
            description = operation.get("description", "").strip()
            operation["description"] = f"{description}\n\n{text}" if description else text
    return schema


def install(app: FastAPI) -> None:
    """Serve the finished document. FastAPI builds it once and keeps it (rebuilding it when
    routes are added); it is finished once per build."""
    generate = app.openapi
    finished: set[int] = set()

    def openapi() -> dict[str, Any]:
        schema = generate()
        if id(schema) not in finished:
            finished.clear()
            finished.add(id(finish(app, schema)))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
