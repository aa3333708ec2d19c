"""`/v1/<path>` and `/v2/<path>` are `/<path>` with the API version fixed by the path."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from threadline.api.auth import VERSION_SCOPE_KEY

_PREFIXES = {"/v1": 1, "/v2": 2}


class VersionPrefix:
    """Pure ASGI middleware: strips the version prefix and records the version in the scope."""

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
        await self.app(scope, receive, send)
