"""No bad input ever gets a 500: every parameter of every endpoint, with hostile values.

The parameter names come from the OpenAPI document, so a new parameter is covered as soon
as it is declared. The client raises on any unhandled error in the app.
"""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.api.helpers import assigned
from tests.conftest import World
from threadline.apps import service as apps
from threadline.db.engine import Database

HOSTILE = [
    "",
    "\x00",
    "a\x00b",
    "-1",
    "0",
    "9" * 40,
    "1e309",
    "NaN",
    "[",
    '{"a": [1, {"b": null}]}',
    "[[], {}]",
    "é😀" * 300,
    "x" * 70_000,
]
JSON_HOSTILE = [None, True, -1, 2**70, 1.5e308, [], {}, [1, "a", None], {"\x00": 1}, "\x00"]
MISSING = 987_654_321


async def test_no_parameter_value_causes_a_server_error(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await assigned(app_db, world)
    fuzz_user = await apps.create_user(app_db, world.app_id, site_user_id="fuzz")

    def fill(path: str) -> dict[str, str]:
        """The path's `{id}` names the conversation, the user, or an unknown object."""
        if path.startswith("/conversations/") or path.startswith("/ext/conversations/"):
            ident = str(cid)
        elif path.startswith(("/users/", "/ext/users/")):
            ident = str(fuzz_user)
        else:
            ident = str(MISSING)
        return {"app": "$self_app", "id": ident}

    seen_statuses: set[int] = set()
    for path, operations in app.openapi()["paths"].items():
        url = path.format(**fill(path))
        for method, operation in operations.items():
            names = [
                p["name"]
                for p in operation.get("parameters", [])
                if p["in"] == "query" and p["name"] not in ("auth_token", "id")
            ]
            for name in names:
                for i, value in enumerate(HOSTILE):
                    if len(value) > 4000 and method == "get":
                        value = value[:4000]
                    if method == "get" or (i % 2 and len(value) <= 4000):
                        r = await api.request(method.upper(), url, params={name: value})
                    else:
                        r = await api.request(method.upper(), url, json={name: value})
                    assert r.status_code < 500, (method, url, name, value[:20], r.text[:300])
                    assert r.json()["meta"]["status"] == r.status_code
                    seen_statuses.add(r.status_code)
                if method != "get":
                    for value in JSON_HOSTILE:
                        r = await api.request(method.upper(), url, json={name: value})
                        assert r.status_code < 500, (method, url, name, value, r.text[:300])
                        seen_statuses.add(r.status_code)
    assert {200, 400, 404} <= seen_statuses
    # The world's token is still in place (nothing hostile revoked it).
    assert (await api.get(f"/conversations/{cid}")).status_code == 200
