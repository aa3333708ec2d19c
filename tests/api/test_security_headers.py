"""Every HTML answer carries security headers; the inbox keeps its own strict policy."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.conftest import World

HEADERS = (
    "content-security-policy",
    "x-content-type-options",
    "referrer-policy",
    "x-frame-options",
)


async def test_every_html_answer_has_security_headers(
    app: FastAPI, anon: httpx.AsyncClient, world: World
) -> None:
    html_paths = [
        "/",
        "/docs",
        "/docs/oauth2-redirect",
        f"/demo/site?app={world.app_id}",
        "/demo/site?app=999999",  # the no-such-app page (404)
        "/demo/site?app=nonsense",  # a bad id (400)
    ]
    for path in html_paths:
        r = await anon.get(path)
        assert r.headers["content-type"].startswith("text/html"), path
        missing = [h for h in HEADERS if h not in r.headers]
        assert missing == [], (path, r.status_code)
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
    # The inbox's page keeps its own policy (no inline script, this origin only).
    page = await anon.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    # Every GET route without path parameters: whatever answers HTML has the headers.
    html: set[str] = set()
    for route in app.routes:
        path = getattr(route, "path", "")
        if "GET" not in (getattr(route, "methods", None) or ()) or "{" in path:
            continue
        r = await anon.get(path)
        if r.headers.get("content-type", "").startswith("text/html"):
            html.add(path)
            assert all(h in r.headers for h in HEADERS), path
    assert html == {"/", "/docs", "/docs/oauth2-redirect", "/demo/site"}
    # JSON answers are left as they are.
    assert "x-frame-options" not in (await anon.get("/health")).headers
