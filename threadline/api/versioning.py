"""`/v1/<path>` and `/v2/<path>` are `/<path>` with the API version fixed by the path; a
trailing slash changes nothing (`/v1/apps/1/conversations/` is `/v1/apps/1/conversations`).

A higher major version (`/v3/`, announced by the vendor) is served as the newest Threadline
knows, as the `version` parameter is (`threadline.api.params.parse_version`).
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from threadline.api.auth import VERSION_SCOPE_KEY
from threadline.api.params import NEWEST_VERSION

# `/v<major>` and what follows it: the major version is not 0 and has at most 9 digits.
_PREFIX = re.compile(r"/v([1-9][0-9]{0,8})(?=/|$)")


def _version_of(prefix: str) -> int:
    return 1 if int(prefix) == 1 else NEWEST_VERSION


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
            found = _PREFIX.match(path)
            if found is not None:
                prefix = found.group(0)
                scope = dict(scope)
                scope["path"] = path[len(prefix) :] or "/"
                raw_path = scope.get("raw_path")
                if isinstance(raw_path, bytes) and raw_path.startswith(prefix.encode()):
                    scope["raw_path"] = raw_path[len(prefix) :] or b"/"
                scope[VERSION_SCOPE_KEY] = _version_of(found.group(1))
            scope = _without_trailing_slash(scope)
        await self.app(scope, receive, send)
