"""`/v1/<path>` and `/v2/<path>` are `/<path>` with the API version fixed by the path; a
trailing slash changes nothing (`/v1/apps/1/conversations/` is `/v1/apps/1/conversations`)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from threadline.api.auth import VERSION_SCOPE_KEY

_PREFIXES = {"/v1": 1, "/v2": 2}


def _without_trailing_slash(scope: Scope) -> Scope:
    """The same request without the trailing slash of its path (the root stays `/`).

    Clients that always append `/` must reach the same endpoint, with the same version, and
    not a redirect: a redirected POST loses its body in some clients, and the redirect's
    `Location` would have to carry the version prefix back.
    """
    path: str = scope["path"]
    if len(path) <= 1 or not path.endswith("/"):
        return scope
    scope = dict(scope)
    scope["path"] = path.rstrip("/") or "/"
    raw_path = scope.get("raw_path")
    if isinstance(raw_path, bytes) and raw_path.endswith(b"/"):
        scope["raw_path"] = raw_path.rstrip(b"/") or b"/"
    return scope


class VersionPrefix:
    """Pure ASGI middleware: strips the version prefix and records the version in the scope;
    strips a trailing slash."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            prefix = path[:3]
            version = _PREFIXES.get(prefix)
            if version is not None and (len(path) == 3 or path[3] == "/"):
                scope = dict(scope)
                scope["path"] = path[3:] or "/"
                raw_path = scope.get("raw_path")
                if isinstance(raw_path, bytes) and raw_path[:3] == prefix.encode():
                    scope["raw_path"] = raw_path[3:] or b"/"
                scope[VERSION_SCOPE_KEY] = version
            scope = _without_trailing_slash(scope)
        await self.app(scope, receive, send)
