"""The app's API routes as served (with their routers' prefixes), for the OpenAPI document
and for the `Allow` header of a 405."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import compile_path


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


def allowed_methods(app: FastAPI, path: str) -> set[str]:
    """Every method some route serves at `path` (Starlette names only the first route's)."""
    patterns: list[tuple[re.Pattern[str], frozenset[str]]] | None = getattr(
        app.state, "route_patterns", None
    )
    if patterns is None:
        patterns = [(compile_path(route.path)[0], route.methods) for route in served_routes(app)]
        app.state.route_patterns = patterns
    allowed: set[str] = set()
    for pattern, methods in patterns:
        if pattern.match(path):
            allowed |= methods
    return allowed
