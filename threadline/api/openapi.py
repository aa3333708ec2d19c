"""The OpenAPI document at `/openapi.json` (shown at `/docs`), completed by hand.

FastAPI sees only what a signature declares. Tokens, path ids and the merged parameters are
read by hand, so this module finishes the generated document: the three ways to send a
token and the scopes each operation needs, the real types of path parameters, the version
prefixes, and no trace of FastAPI's 422 answer (a bad parameter is a 400 here).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from threadline.api.auth import ROLE_ATTRIBUTE, SCOPES_ATTRIBUTE
from threadline.api.params import MAX_ID
from threadline.api.routing import served_routes

_ID = {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID}

# Path parameters are read as text and parsed by hand (a bad one is a 400 naming it).
_APP = {"anyOf": [{"type": "string", "enum": ["$self_app"]}, _ID]}
# Threadline's user id; with `by_user_id=true` the site's own id, any text.
_USER = {"type": "string", "minLength": 1, "maxLength": 255}


def path_schema(path: str, name: str) -> dict[str, Any] | None:
    """The schema of path parameter `name` of `path`."""
    if name == "app":
        return _APP
    if name == "id":
        return _USER if path.startswith(("/users/", "/ext/users/")) else _ID
    return None


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
    ("post", "/conversations/{id}/reply"): "`as-user` with `from_user`",
    ("post", "/ext/conversations/{id}/read"): "`as-user` with `by=user`",
    ("post", "/ext/conversations/{id}/typing"): "`as-user` with `from_user`",
    ("post", "/conversations/{id}/settyping"): "`as-user` with `from_user`",
    ("post", "/conversations/{id}/markread"): "`as-user` with `from_user`",
}

SERVERS = [
    {
        "url": "/",
        "description": "Current pagination (`paginate_*`), unless `version=1` (or `1.x.y`).",
    },
    {
        "url": "/v2",
        "description": "Current pagination (`paginate_*`); a higher version's path "
        "(`/v3`) is served as this one.",
    },
    {"url": "/v1", "description": "Old pagination (`after`, `count`)."},
]

_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


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


def route_role(route: APIRoute) -> str | None:
    """The least role the route's token dependency demands (None: any role)."""
    for dependant in _dependants(route.dependant):
        if getattr(dependant.call, SCOPES_ATTRIBUTE, None) is not None:
            role = getattr(dependant.call, ROLE_ATTRIBUTE, None)
            return str(role) if role is not None else None
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
    role_of = {
        (method.lower(), served.path): route_role(served.route)
        for served in served_routes(app)
        for method in served.methods
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            operation.get("responses", {}).pop("422", None)
            for parameter in operation.get("parameters", []):
                schema_of = path_schema(path, parameter["name"])
                if parameter["in"] == "path" and schema_of is not None:
                    parameter["schema"] = schema_of
            scopes = scopes_of.get((method, path))
            if scopes is None:
                continue
            operation["security"] = _security(scopes)
            text = _scope_text(scopes, CONDITIONAL_SCOPES.get((method, path)))
            role = role_of.get((method, path))
            if role is not None:
                operation["x-tl-role"] = role
                text += (
                    f" Role: {role} or above (an inbox session's admin; a token's issuing"
                    " admin, or owner for tokens issued by the command line)."
                )
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
