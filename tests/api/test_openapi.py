"""The OpenAPI document (`/openapi.json`, shown at `/docs`) against the app itself.

Every route is documented; every documented parameter is read by the endpoint (a valid
value is taken, a wrong one is a 400 naming it); the token schemes, scopes, path types
and error answers are described as the API behaves.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI

from tests.api.helpers import assigned, ok, started
from tests.conftest import World
from threadline.api.openapi import route_scopes, served_routes
from threadline.apps.service import ALL_SCOPES
from threadline.db.engine import Database

# Served outside the API and its document (the root redirects to the API explorer).
UNDOCUMENTED = {
    "/",
    "/health",
    "/health/live",
    "/health/ready",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}
ERRORS = {"400", "401", "403", "404", "409", "429", "503"}
# Read by the old pagination only (`version=1` or /v1/), as their descriptions say.
V1_ONLY = {"after", "count"}


@pytest.fixture
async def document(api: httpx.AsyncClient) -> dict[str, Any]:
    schema: dict[str, Any] = ok_json(await api.get("/openapi.json"))
    return schema


def ok_json(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


async def test_every_route_is_documented(app: FastAPI, document: dict[str, Any]) -> None:
    documented = {(m.upper(), p) for m, p, _ in operations(document)}
    served = set()
    for route in served_routes(app):
        for method in route.methods:
            if route.include_in_schema:
                served.add((method, route.path))
            else:
                assert route.path in UNDOCUMENTED, route.path
    assert served == documented
    assert len(documented) >= 33


async def test_docs_page_and_a_valid_document(
    api: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    page = await api.get("/docs")
    assert page.status_code == 200
    assert "/openapi.json" in page.text
    assert document["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(document).validate()
    assert [s["url"] for s in document["servers"]] == ["/", "/v2", "/v1"]


async def test_three_token_schemes_and_the_scopes_of_each_operation(
    app: FastAPI, document: dict[str, Any]
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["TokenHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": schemes["TokenHeader"]["description"],
    }
    assert schemes["Bearer"]["type"] == "http"
    assert schemes["Bearer"]["scheme"] == "bearer"
    assert (schemes["AuthToken"]["in"], schemes["AuthToken"]["name"]) == ("query", "auth_token")
    scopes = {
        (method.lower(), served.path): route_scopes(served.route)
        for served in served_routes(app)
        if served.include_in_schema
        for method in served.methods
    }
    for method, path, operation in operations(document):
        wanted = scopes[(method, path)]
        assert wanted is not None, (method, path)
        assert set(wanted) <= set(ALL_SCOPES)
        assert operation["security"] == [
            {"TokenHeader": list(wanted)},
            {"Bearer": list(wanted)},
            {"AuthToken": list(wanted)},
        ], (method, path)
        assert "Token scopes:" in operation["description"]
    # Spot checks against api.md.
    assert scopes[("get", "/apps/{app}/conversations")] == ("conversations-read",)
    assert scopes[("post", "/users/{id}/startconversation")] == ("conversations-write", "as-user")
    assert scopes[("post", "/users/{id}/sendmessage")] == ("messages-manual-send-one",)
    assert scopes[("post", "/ext/apps/{app}/tokens")] == ("admin",)
    assert scopes[("get", "/ext/attachments/{id}")] == ("conversations-read",)


async def test_answers_and_errors_are_described_in_the_envelope(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    assert "HTTPValidationError" not in components
    error_meta = components["ErrorMeta"]
    assert set(error_meta["required"]) == {"status", "error", "error_message"}
    assert components["NoData"]["additionalProperties"] is False
    for method, path, operation in operations(document):
        responses = operation["responses"]
        assert "422" not in responses, (method, path)
        assert set(responses) >= ERRORS, (method, path)
        for status in ERRORS:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}
        if path == "/ext/attachments/{id}":
            continue
        ok_schema = responses["200"]["content"]["application/json"]["schema"]
        envelope = components[ok_schema["$ref"].rsplit("/", 1)[1]]
        assert envelope["required"] == ["meta", "data"], (method, path)


async def test_every_parameter_is_described(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for parameter in operation["parameters"]:
            where = (method, path, parameter["name"])
            assert parameter["description"].strip(), where
            assert "schema" in parameter or "content" in parameter, where
            if parameter["in"] == "path":
                assert parameter["required"] is True
                if not path.startswith(("/users/", "/ext/users/")):
                    ids = parameter["schema"].get("anyOf", [parameter["schema"]])
                    assert any(s.get("type") == "integer" and s["minimum"] == 1 for s in ids)
        body = operation.get("requestBody")
        if body is None:
            assert method in ("get", "delete"), (method, path)
            continue
        assert set(body["content"]) == {
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        }
        properties = body["content"]["application/json"]["schema"]["properties"]
        query = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
        # Any body parameter may come in the query string as well.
        assert set(properties) == query, (method, path)
        for name, prop in properties.items():
            assert prop["description"].strip(), (method, path, name)


async def test_hand_parsed_types_are_described(document: dict[str, Any]) -> None:
    def parameter(path: str, method: str, name: str) -> dict[str, Any]:
        found = [p for p in document["paths"][path][method]["parameters"] if p["name"] == name]
        assert len(found) == 1, (path, method, name)
        return found[0]

    listing = "/apps/{app}/conversations"
    closed = parameter(listing, "get", "closed")
    assert "Vendor boolean" in closed["description"]
    tags = parameter(listing, "get", "tags")
    assert (tags["style"], tags["explode"]) == ("form", False)
    assert tags["schema"]["type"] == "array"
    position = parameter(listing, "get", "paginate_position")
    assert (position["style"], position["explode"]) == ("form", False)
    assert position["schema"]["anyOf"][0]["type"] == "array"
    assert "comma-separated" in position["description"]
    count = parameter(listing, "get", "paginate_count")["schema"]
    assert (count["minimum"], count["maximum"], count["default"]) == (1, 50, 20)
    direction = parameter(listing, "get", "paginate_direction")["schema"]
    assert direction["enum"] == ["before", "after", "around"]
    app = parameter(listing, "get", "app")["schema"]
    assert {"type": "string", "enum": ["$self_app"]} in app["anyOf"]

    reply = document["paths"]["/conversations/{id}/reply"]["post"]
    multipart = reply["requestBody"]["content"]["multipart/form-data"]
    assert multipart["schema"]["properties"]["attachment"]["format"] == "binary"
    assert multipart["encoding"]["body_json"]["contentType"] == "application/json"
    body = reply["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert body["body"]["maxLength"] == 65_536
    assert body["type"]["enum"] == ["reply_admin", "note", "article"]
    random_id = body["random_id"]["anyOf"][0]
    assert (random_id["minimum"], random_id["maximum"]) == (-(2**63), 2**63 - 1)
    start = document["paths"]["/users/{id}/startconversation"]["post"]
    start_form = start["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert start_form["properties"]["file"]["format"] == "binary"
    assert start_form["dependentRequired"] == {"file": ["filename"]}
    token = document["paths"]["/ext/apps/{app}/tokens"]["post"]["requestBody"]
    scopes = token["content"]["application/json"]["schema"]["properties"]["scopes"]
    assert scopes["items"]["enum"] == list(ALL_SCOPES)
    assert token["content"]["application/json"]["schema"]["required"] == ["name", "scopes"]


# ---------------------------------------------------------------------------
# Every documented parameter is read by its endpoint.


def _types(schema: dict[str, Any]) -> set[str]:
    branches = schema.get("anyOf", [schema])
    return {str(b.get("type")) for b in branches}


def _valid(name: str, schema: dict[str, Any], path: str, world: World, spare: int | None) -> Any:
    """A value the endpoint must take without blaming the parameter."""
    by_name: dict[str, Any] = {
        "admin": world.admin_id,
        "auto_assign": world.admin_id,
        "assigned": world.admin_id,
        "from_admin": world.admin_id,
        "from_user": world.user_id,
        "channel": world.channel_id,
        "id": spare,
        "email": "new.admin@acme.test",
        "paginate_position": [1] if path.endswith("/parts") else [1_700_000_000.5, 1],
        "after": "1",
        "body_json": {"text": "hi"},
        "actions": READ_BACK_ACTIONS,
        "referrer": "https://shop.test/page?from=docs",
        "scopes": ["conversations-read"],
        "password": "correct horse battery staple",
    }
    if name in by_name:
        return by_name[name]
    if "examples" in schema:
        return schema["examples"][0]
    if "enum" in schema:
        return schema["enum"][0]
    branches = schema.get("anyOf", [schema])
    first = branches[0]
    if "enum" in first:
        return first["enum"][0]
    kind = first.get("type")
    if kind == "integer":
        return first.get("minimum", 1)
    if kind == "number":
        return 0
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    return "x"


def _invalid(schema: dict[str, Any], in_body: bool) -> Any:
    """A value the endpoint must refuse naming the parameter, or None when any text goes."""
    types = _types(schema)
    if in_body:
        # Text fields, numbers, ids, enums and booleans refuse an array; arrays an object.
        return {} if "array" in types else []
    if "boolean" in types:
        return None  # a vendor boolean takes any text
    if "integer" in types or "number" in types:
        return "not-a-number"
    branches = schema.get("anyOf", [schema])
    if any("enum" in b for b in branches) and "boolean" not in types:
        return "no-such-choice"
    if "maxLength" in schema:
        return "x" * (schema["maxLength"] + 1)
    if schema.get("minLength") == 1:
        return ""
    return None


READ_BACK_ACTIONS = [{"type": "button", "text": "Yes", "payload": {"answer": 1}}]
# Parameters that only carry a value to keep (nothing to refuse beyond their form): a valid
# one is read back from storage, on the part the write created.
READ_BACK = {
    ("/conversations/{id}/reply", "referrer"),
    ("/conversations/{id}/reply", "actions"),
    ("/users/{id}/startconversation", "referrer"),
}


async def _read_back(api: httpx.AsyncClient, path: str, data: dict[str, Any], name: str) -> Any:
    """The stored value of `name` on the part the write answered (reply: the part itself;
    startconversation: the new conversation's first part)."""
    if path == "/users/{id}/startconversation":
        [part] = ok(await api.get(f"/conversations/{data['id']}/parts"))
        return part[name]
    parts = ok(await api.get(f"/conversations/{data['conversation']}/parts"))
    [part] = [p for p in parts if p["id"] == data["id"]]
    return part[name]


async def test_every_documented_parameter_is_read(
    api: httpx.AsyncClient, app_db: Database, world: World, document: dict[str, Any]
) -> None:
    by_message = ok(
        await api.post(f"/users/{world.user_id}/sendmessage", json={"body": "Can we help?"})
    )["conversation"]
    attachment = ok(
        await api.post(
            f"/conversations/{await assigned(app_db, world)}/reply",
            data={"body": "file"},
            files={"attachment": ("a.txt", b"hello", "text/plain")},
        )
    )["attachments"][0]["id"]
    ok(await api.post("/users/to-erase/startconversation", json={"body": "hi", "by_user_id": True}))

    async def create(kind: str) -> int:
        params: dict[str, Any] = {"name": "Spare"}
        if kind == "tokens":
            params["scopes"] = ["conversations-read"]
        ident: int = ok(await api.post(f"/ext/apps/$self_app/{kind}", json=params))["id"]
        return ident

    checked = 0
    read_back: set[tuple[str, str]] = set()
    for method, path, operation in operations(document):
        # DELETE /ext/apps/{app}/admins (the id a parameter) deletes a fresh object each time.
        kind = path.split("/")[-1] if method == "delete" else ""
        cid = by_message if path.endswith("/status") else await started(app_db, world)
        ident = (
            cid
            if "/conversations/{id}" in path
            else world.user_id
            if path.startswith("/users/")
            else attachment
        )
        fill = {"app": "$self_app", "id": ident}
        query_params = [p for p in operation["parameters"] if p["in"] == "query"]
        body_schema = (
            operation.get("requestBody", {})
            .get("content", {})
            .get("application/json", {})
            .get("schema")
        )
        required = set(body_schema.get("required", [])) if body_schema else set()
        required |= {p["name"] for p in query_params if p["required"]}
        for parameter in query_params:
            name = parameter["name"]
            schema = parameter.get("schema") or parameter["content"]["application/json"]["schema"]
            in_body = body_schema is not None
            if in_body:
                schema = body_schema["properties"][name]
            for validity in ("valid", "invalid"):
                spare = await create(kind) if kind in ("admins", "channels", "tokens") else None
                url = path.format(**{**fill, **await _fresh_path_ids(path, create)})
                if path == "/ext/users/{id}":
                    url = "/ext/users/to-erase"
                values = {
                    other: _valid(other, _schema_of(operation, other), path, world, spare)
                    for other in required
                    if other != name
                }
                if path == "/ext/users/{id}":
                    values["by_user_id"] = True
                value = _valid(name, schema, path, world, spare)
                if validity == "invalid":
                    value = _invalid(schema, in_body)
                    if value is None:
                        continue
                if name == "by_user_id" and path == "/ext/users/{id}":
                    continue
                values[name] = value
                if name in V1_ONLY:
                    values["version"] = 1
                if (path, name) in READ_BACK:
                    values.setdefault("body", "read back")  # a write needs some content
                response = await _send(api, method, url, values, in_body)
                if response.status_code == 200 and path == "/ext/attachments/{id}":
                    assert response.content == b"hello"
                    continue
                body = response.json()
                assert body["meta"]["status"] == response.status_code
                message = str(body["meta"].get("error_message", ""))
                blamed = response.status_code == 400 and message.startswith(f"{name}:")
                where = (method, path, name, value if len(str(value)) < 80 else "...", body)
                if validity == "valid":
                    assert not blamed, where
                    if (path, name) in READ_BACK:
                        assert response.status_code == 200, where
                        stored = await _read_back(api, path, body["data"], name)
                        assert stored == value, where
                        read_back.add((path, name))
                else:
                    assert blamed, where
                checked += 1
    assert checked > 200
    assert read_back == READ_BACK


async def _fresh_path_ids(path: str, create: Callable[[str], Awaitable[int]]) -> dict[str, int]:
    """For DELETE by path, a role change or a re-owning: a new object to change (never the
    world's admins or the test's own token)."""
    parts = path.split("/")
    if parts[-1] in ("role", "owner"):
        parts = parts[:-1]
    if parts[-1] != "{id}" or parts[-2] not in ("admins", "channels", "tokens"):
        return {}
    return {"id": await create(parts[-2])}


def _schema_of(operation: dict[str, Any], name: str) -> dict[str, Any]:
    body = operation.get("requestBody")
    if body is not None:
        schema: dict[str, Any] = body["content"]["application/json"]["schema"]["properties"][name]
        return schema
    for parameter in operation["parameters"]:
        if parameter["name"] == name:
            found: dict[str, Any] = (
                parameter.get("schema") or parameter["content"]["application/json"]["schema"]
            )
            return found
    raise KeyError(name)


async def _send(
    api: httpx.AsyncClient, method: str, url: str, values: dict[str, Any], in_body: bool
) -> httpx.Response:
    if in_body:
        return await api.request(method.upper(), url, json=values)
    query = {
        k: (
            _json_text(v)
            if isinstance(v, list | dict)
            else ("true" if v is True else "false" if v is False else v)
        )
        for k, v in values.items()
    }
    return await api.request(method.upper(), url, params=query)


def _json_text(value: Any) -> str:
    return json.dumps(value)
