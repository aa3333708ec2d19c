"""Roles: the role-by-route matrix, and one test per finding of the security review.

Beside the tenancy matrix (test_tenancy.py), which calls every route with another app's
token: here every route is called, in the token's own app, by every kind of caller (an
owner's, an administrator's and an operator's inbox session; the command line's token
with every scope and one token per single scope; an administrator's token; a token whose
issuer was removed; no token), and each answer must be what the table below says: refused
(401 without a valid token, 403 `PermissionDenied` without the scope or the role) or let
through to the route (any other status). Paths name ids that do not exist, so a call let
through answers 404 or creates an object of its own, and changes nothing else.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Route, WebSocketRoute

from tests.api.conftest import client_for
from tests.api.helpers import error, ok, started
from tests.conftest import World
from threadline.apps import manage
from threadline.apps import service as apps
from threadline.apps.repository import AppRepository
from threadline.apps.service import ALL_SCOPES, issue_token_with_id, session_token_name, utcnow
from threadline.conversations import service
from threadline.core.access import Actor, ActorKind, Role
from threadline.db.engine import Database
from threadline.ui.service import SESSION_SCOPES

READ, WRITE, USER_READ, AS_USER, SEND, ADMIN = (
    "conversations-read",
    "conversations-write",
    "user-read",
    "as-user",
    "messages-manual-send-one",
    "admin",
)
OWNER, ADMINISTRATOR, OPERATOR = Role.OWNER, Role.ADMINISTRATOR, Role.OPERATOR
NO = 999_999  # an id nothing has

# (method, path shape) -> (the scopes it needs, the least role it needs: None for any).
# Written out by hand from the threat model (SECURITY.md), not read from the code.
EXPECTED: dict[tuple[str, str], tuple[tuple[str, ...], Role | None]] = {
    ("GET", "/apps/*/conversations"): ((READ,), None),
    ("GET", "/conversations/*"): ((READ,), None),
    ("GET", "/conversations/*/parts"): ((READ,), None),
    ("POST", "/conversations/*/reply"): ((WRITE,), None),
    ("POST", "/conversations/*/assign"): ((WRITE,), None),
    ("POST", "/conversations/*/close"): ((WRITE,), None),
    ("POST", "/conversations/*/tag"): ((WRITE,), None),
    ("DELETE", "/conversations/*/tag"): ((WRITE,), None),
    ("POST", "/conversations/*/markread"): ((WRITE,), None),
    ("POST", "/conversations/*/settyping"): ((WRITE,), None),
    ("GET", "/users/*/conversations"): ((READ,), None),
    ("POST", "/users/*/startconversation"): ((WRITE, AS_USER), None),
    ("POST", "/users/*/sendmessage"): ((SEND,), None),
    ("GET", "/apps/*/channels"): ((READ,), None),
    ("POST", "/ext/conversations/*/read"): ((WRITE,), None),
    ("POST", "/ext/conversations/*/reopen"): ((WRITE,), None),
    ("POST", "/ext/conversations/*/delay"): ((WRITE,), None),
    ("POST", "/ext/conversations/*/channel"): ((WRITE,), None),
    ("POST", "/ext/conversations/*/typing"): ((WRITE,), None),
    ("POST", "/ext/conversations/*/status"): ((WRITE,), None),
    ("POST", "/ext/conversations/*/assistant"): ((WRITE,), None),
    ("GET", "/ext/conversations/*/deliveries"): ((READ,), None),
    ("DELETE", "/ext/users/*"): ((ADMIN,), ADMINISTRATOR),
    ("GET", "/ext/apps/*/admins"): ((ADMIN,), None),
    ("POST", "/ext/apps/*/admins"): ((ADMIN,), ADMINISTRATOR),
    ("DELETE", "/ext/apps/*/admins"): ((ADMIN,), ADMINISTRATOR),
    ("DELETE", "/ext/apps/*/admins/*"): ((ADMIN,), ADMINISTRATOR),
    ("POST", "/ext/apps/*/admins/*/role"): ((ADMIN,), ADMINISTRATOR),
    ("DELETE", "/ext/apps/*/admins/*/two-factor"): ((ADMIN,), ADMINISTRATOR),
    ("GET", "/ext/apps/*/channels"): ((ADMIN,), None),
    ("POST", "/ext/apps/*/channels"): ((ADMIN,), ADMINISTRATOR),
    ("DELETE", "/ext/apps/*/channels"): ((ADMIN,), ADMINISTRATOR),
    ("DELETE", "/ext/apps/*/channels/*"): ((ADMIN,), ADMINISTRATOR),
    ("GET", "/ext/apps/*/tokens"): ((ADMIN,), ADMINISTRATOR),
    ("POST", "/ext/apps/*/tokens"): ((ADMIN,), ADMINISTRATOR),
    ("DELETE", "/ext/apps/*/tokens"): ((ADMIN,), ADMINISTRATOR),
    ("DELETE", "/ext/apps/*/tokens/*"): ((ADMIN,), ADMINISTRATOR),
    ("POST", "/ext/apps/*/tokens/*/owner"): ((ADMIN,), ADMINISTRATOR),
    ("GET", "/ext/apps/*/audit"): ((ADMIN,), OWNER),
    ("GET", "/ext/apps/*/inbox"): ((READ,), None),
    ("GET", "/ext/apps/*/search"): ((READ,), None),
    ("GET", "/ext/attachments/*"): ((READ,), None),
    ("GET", "/ext/apps/*/events"): ((READ,), None),
    ("GET", "/ext/apps/*/webhooks"): ((ADMIN,), ADMINISTRATOR),
    ("POST", "/ext/apps/*/webhooks"): ((ADMIN,), ADMINISTRATOR),
    ("DELETE", "/ext/apps/*/webhooks"): ((ADMIN,), ADMINISTRATOR),
    ("GET", "/ext/apps/*/webhooks/deliveries"): ((ADMIN,), ADMINISTRATOR),
    ("POST", "/ext/apps/*/webhooks/replay"): ((ADMIN,), ADMINISTRATOR),
    ("GET", "/ext/apps/*/widget"): ((ADMIN,), ADMINISTRATOR),
    ("POST", "/ext/apps/*/widget/secret"): ((ADMIN,), ADMINISTRATOR),
    ("POST", "/ext/apps/*/email/inbound"): ((WRITE, AS_USER), ADMINISTRATOR),
    ("GET", "/ext/apps/*/email/addresses"): ((ADMIN,), None),
    ("POST", "/ext/apps/*/email/addresses"): ((ADMIN,), ADMINISTRATOR),
    ("DELETE", "/ext/apps/*/email/addresses/*"): ((ADMIN,), ADMINISTRATOR),
}

# Routes outside the OpenAPI document, and how tokens bear on them.
PUBLIC = "public"  # answers alike to every caller: no token is read
SESSION_ONLY = "session"  # an inbox session's own (any role); other tokens 403, none 401
STREAM = "stream"  # by token and channel, never by role: tests/events/test_stream_roles.py
NON_API: dict[str, str] = {
    "/": PUBLIC,
    "/health": PUBLIC,
    "/health/live": PUBLIC,
    "/health/ready": PUBLIC,
    "/openapi.json": PUBLIC,
    "/docs": PUBLIC,
    "/docs/oauth2-redirect": PUBLIC,
    "/widget.js": PUBLIC,
    "/demo/site": PUBLIC,
    "/ui/static/{digest}/{path:path}": PUBLIC,
    "/ui/session": SESSION_ONLY,
    "/ui/password": SESSION_ONLY,
    "/ui/password/reset": PUBLIC,
    "/ui/two-factor": SESSION_ONLY,
    "/ui/two-factor/confirm": SESSION_ONLY,
    "/sse/{channels:path}": STREAM,
    "/websocket/{channels:path}": STREAM,
}


# The widget's visitor API, every route but opening a visitor session (open to anyone).
WIDGET_VISITOR_CALLS = [
    ("GET", "/widget/api/conversations"),
    ("POST", "/widget/api/conversations"),
    ("GET", f"/widget/api/conversations/{NO}"),
    ("POST", f"/widget/api/conversations/{NO}/reply"),
    ("POST", f"/widget/api/conversations/{NO}/read"),
    ("POST", f"/widget/api/conversations/{NO}/typing"),
    ("GET", f"/widget/api/conversations/{NO}/attachments/{NO}"),
]


def shape(path: str) -> str:
    return "/".join(
        "*" if p.startswith("{") or p.isdigit() or p == "$self_app" else p for p in path.split("/")
    )


def calls(world: World) -> list[tuple[str, str, dict[str, Any]]]:
    """One call per route, at ids that do not exist (or harmless creations)."""
    a, c, u = world.app_id, NO, NO
    return [
        ("GET", f"/apps/{a}/conversations", {}),
        ("GET", f"/conversations/{c}", {}),
        ("GET", f"/conversations/{c}/parts", {}),
        ("POST", f"/conversations/{c}/reply", {"body": "x"}),
        ("POST", f"/conversations/{c}/assign", {"admin": world.admin_id}),
        ("POST", f"/conversations/{c}/close", {}),
        ("POST", f"/conversations/{c}/tag", {"tag": "new"}),
        ("DELETE", f"/conversations/{c}/tag", {"tag": "new"}),
        ("POST", f"/conversations/{c}/markread", {}),
        ("POST", f"/conversations/{c}/settyping", {"body": "x"}),
        ("GET", f"/users/{u}/conversations", {}),
        ("POST", f"/users/{u}/startconversation", {"body": "x"}),
        ("POST", f"/users/{u}/sendmessage", {"body": "x"}),
        ("GET", f"/apps/{a}/channels", {}),
        ("POST", f"/ext/conversations/{c}/read", {"by": "admin"}),
        ("POST", f"/ext/conversations/{c}/reopen", {}),
        ("POST", f"/ext/conversations/{c}/delay", {"until": 4102444800}),
        ("POST", f"/ext/conversations/{c}/channel", {"channel": 0}),
        ("POST", f"/ext/conversations/{c}/typing", {"body": "x"}),
        ("POST", f"/ext/conversations/{c}/status", {"status": "sent"}),
        ("POST", f"/ext/conversations/{c}/assistant", {"assistant_type": "lead_bot"}),
        ("GET", f"/ext/conversations/{c}/deliveries", {}),
        ("DELETE", f"/ext/users/{u}", {}),
        ("GET", f"/ext/apps/{a}/admins", {}),
        ("POST", f"/ext/apps/{a}/admins", {"name": "Mallory"}),
        ("DELETE", f"/ext/apps/{a}/admins", {"id": NO}),
        ("DELETE", f"/ext/apps/{a}/admins/{NO}", {}),
        ("POST", f"/ext/apps/{a}/admins/{NO}/role", {"role": "operator"}),
        ("DELETE", f"/ext/apps/{a}/admins/{NO}/two-factor", {}),
        ("GET", f"/ext/apps/{a}/channels", {}),
        ("POST", f"/ext/apps/{a}/channels", {"name": "Side"}),
        ("DELETE", f"/ext/apps/{a}/channels", {"id": NO}),
        ("DELETE", f"/ext/apps/{a}/channels/{NO}", {}),
        ("GET", f"/ext/apps/{a}/tokens", {}),
        ("POST", f"/ext/apps/{a}/tokens", {"name": "made", "scopes": "user-read"}),
        ("DELETE", f"/ext/apps/{a}/tokens", {"id": NO}),
        ("DELETE", f"/ext/apps/{a}/tokens/{NO}", {}),
        ("POST", f"/ext/apps/{a}/tokens/{NO}/owner", {"admin": world.admin_id}),
        ("GET", f"/ext/apps/{a}/audit", {}),
        ("GET", f"/ext/apps/{a}/inbox", {}),
        ("GET", f"/ext/apps/{a}/search", {"q": "hello"}),
        ("GET", f"/ext/attachments/{NO}", {}),
        ("GET", f"/ext/apps/{a}/events", {}),
        ("GET", f"/ext/apps/{a}/webhooks", {}),
        ("POST", f"/ext/apps/{a}/webhooks", {"url": "https://receiver.example/x"}),
        ("DELETE", f"/ext/apps/{a}/webhooks", {"webhook": NO}),
        ("GET", f"/ext/apps/{a}/webhooks/deliveries", {}),
        ("POST", f"/ext/apps/{a}/webhooks/replay", {"delivery": NO}),
        ("GET", f"/ext/apps/{a}/widget", {}),
        ("POST", f"/ext/apps/{a}/widget/secret", {}),
        ("POST", f"/ext/apps/{a}/email/inbound", {}),
        ("GET", f"/ext/apps/{a}/email/addresses", {}),
        ("POST", f"/ext/apps/{a}/email/addresses", {"address": "help@acme.test"}),
        ("DELETE", f"/ext/apps/{a}/email/addresses/{NO}", {}),
    ]


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    token: str | None
    scopes: frozenset[str]
    role: Role
    valid: bool = True
    session: bool = False


async def session_of(db: Database, app_id: int, role: Role, email: str) -> tuple[int, str]:
    """A new admin with `role` and an inbox session of theirs (as signing in makes one)."""
    admin_id = await apps.create_admin(db, app_id, f"{role.value} {email}", email=email, role=role)
    now = utcnow()
    async with db.write() as conn:
        _, token = await issue_token_with_id(
            AppRepository(conn),
            app_id,
            session_token_name(admin_id),
            list(SESSION_SCOPES),
            now,
            now + timedelta(hours=1),
            issuer=Actor(ActorKind.ADMIN, role, admin_id),
            session=True,
        )
    return admin_id, token


async def token_of(db: Database, app_id: int, scopes: list[str], issuer: Actor) -> str:
    _row, token = await manage.add_token(db, app_id, name="t", scopes=scopes, actor=issuer)
    assert token is not None
    return token


async def principals(db: Database, world: World) -> list[Principal]:
    found: list[Principal] = [Principal("no token", None, frozenset(), OPERATOR, valid=False)]
    for role in Role:
        _, token = await session_of(db, world.app_id, role, f"{role.value}@acme.test")
        found.append(
            Principal(f"{role.value} session", token, frozenset(SESSION_SCOPES), role, session=True)
        )
    found.append(Principal("cli all scopes", world.token, frozenset(ALL_SCOPES), OWNER))
    cli = Actor(ActorKind.CLI, OWNER)
    for scope in ALL_SCOPES:
        token = await token_of(db, world.app_id, [scope], cli)
        found.append(Principal(f"cli {scope}", token, frozenset([scope]), OWNER))
    administrator_id = await apps.create_admin(db, world.app_id, "Ada", role=ADMINISTRATOR)
    by_administrator = Actor(ActorKind.TOKEN, ADMINISTRATOR, administrator_id)
    token = await token_of(db, world.app_id, list(ALL_SCOPES), by_administrator)
    found.append(Principal("administrator's token", token, frozenset(ALL_SCOPES), ADMINISTRATOR))
    gone_id = await apps.create_admin(db, world.app_id, "Gone", role=OWNER)
    gone = await token_of(
        db, world.app_id, list(ALL_SCOPES), Actor(ActorKind.TOKEN, OWNER, gone_id)
    )
    await manage.remove_admin(db, world.app_id, gone_id)
    found.append(Principal("removed owner's token", gone, frozenset(ALL_SCOPES), OWNER, False))
    return found


def allowed(principal: Principal, scopes: tuple[str, ...], role: Role | None) -> bool:
    if not principal.valid or not set(scopes) <= principal.scopes:
        return False
    ranks = {OPERATOR: 0, ADMINISTRATOR: 1, OWNER: 2}
    return role is None or ranks[principal.role] >= ranks[role]


async def test_role_by_route_matrix(
    app: FastAPI, app_db: Database, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    everyone = await principals(app_db, world)
    table = calls(world)
    documented = app.openapi()["paths"]
    # The table is complete, and agrees with what the document announces.
    listed = {(m.upper(), shape(p)) for p, ops in documented.items() for m in ops}
    assert listed == set(EXPECTED) == {(m, shape(p)) for m, p, _ in table}
    for path, operations in documented.items():
        for method, operation in operations.items():
            role = EXPECTED[(method.upper(), shape(path))][1]
            assert operation.get("x-tl-role") == (role.value if role else None), (method, path)
    tried = refusals = leaks = 0
    for principal in everyone:
        async with client_for(app, principal.token) as client:
            for method, path, params in table:
                scopes, role = EXPECTED[(method, shape(path))]
                kwargs: dict[str, Any] = {"params": params} if method == "GET" else {"json": params}
                r = await client.request(method, path, **kwargs)
                tried += 1
                where = (principal.name, method, path, r.status_code, r.text[:200])
                if allowed(principal, scopes, role):
                    assert r.status_code not in (401, 403), where
                    continue
                refusals += 1
                if r.status_code not in (401, 403):
                    leaks += 1
                if not principal.valid:
                    assert r.status_code == 401, where
                    error(r, 401, "AuthenticationFailed")
                else:
                    assert r.status_code == 403, where
                    error(r, 403, "PermissionDenied")
    assert leaks == 0
    # The figures of the closing note: routes by callers tried, refusals, leaks.
    assert tried == len(everyone) * len(EXPECTED)
    with capsys.disabled():
        sys.stderr.write(f"\nrole matrix: {tried} requests, {refusals} refused, {leaks} leaks\n")


def test_every_route_outside_the_document_is_classified(app: FastAPI) -> None:
    documented = set(app.openapi()["paths"])
    outside = set()
    for route in app.routes:
        if isinstance(route, Route | WebSocketRoute) and route.path not in documented:
            if route.path.startswith("/widget/api/"):
                visitor = {shape(p) for _, p in WIDGET_VISITOR_CALLS}
                assert route.path in ("/widget/api/session", "/widget/api/{path:path}") or (
                    shape(route.path) in visitor
                ), route.path
                continue  # the visitor API: tried below with every caller's token
            if route.path.startswith("/v1/") or route.path.startswith("/v2/"):
                continue  # the versioned aliases of documented routes
            outside.add(route.path)
    assert outside <= set(NON_API), outside - set(NON_API)


async def test_routes_outside_the_document_ignore_roles(
    app: FastAPI, app_db: Database, world: World
) -> None:
    everyone = await principals(app_db, world)
    reset = {"token": "not-a-reset-token", "new_password": "a long new secret 42"}
    async with client_for(app) as anon:
        public = {p: await anon.get(p) for p in ("/", "/health", "/widget.js", "/demo/site")}
        reset_answer = await anon.post("/ui/password/reset", json=reset)
    assert reset_answer.status_code in (400, 404)
    for principal in everyone:
        async with client_for(app, principal.token) as client:
            for path, first in public.items():
                again = await client.get(path)
                assert (again.status_code, again.content) == (first.status_code, first.content)
            r = await client.get("/ui/session")
            if not principal.valid:
                error(r, 401, "AuthenticationFailed")
            elif principal.session:
                assert ok(r)["role"] == principal.role.value
            else:
                error(r, 403, "PermissionDenied")
            if not principal.session:  # DELETE signs a session out: sessions not tried
                r = await client.delete("/ui/session")
                assert r.status_code == (401 if not principal.valid else 403)
                # Only a session changes its own admin's password.
                change = {"current_password": "x", "new_password": "a long new secret 42"}
                r = await client.post("/ui/password", json=change)
                assert r.status_code == (401 if not principal.valid else 403), r.text
                # Only a session enrols, confirms or turns off its own admin's second factor.
                for method, path, body in (
                    ("POST", "/ui/two-factor", {}),
                    ("POST", "/ui/two-factor/confirm", {"code": "123456"}),
                    ("DELETE", "/ui/two-factor", {"password": "x"}),
                ):
                    r = await client.request(method, path, json=body)
                    assert r.status_code == (401 if not principal.valid else 403), r.text
            # A reset link's token is the only credential there: the caller's is never read.
            again = await client.post("/ui/password/reset", json=reset)
            assert (again.status_code, again.content) == (
                reset_answer.status_code,
                reset_answer.content,
            )
            # The visitor API takes visitor tokens only: no API token or session is one.
            for method, path in WIDGET_VISITOR_CALLS:
                r = await client.request(method, path, json={"body": "x"})
                error(r, 401, "AuthenticationFailed")


# ---------------------------------------------------------------------------
# Finding 1: an operator cannot take over the app


@pytest.fixture
async def operator_session(app_db: Database, world: World) -> tuple[int, str]:
    return await session_of(app_db, world.app_id, OPERATOR, "olivia@acme.test")


async def _state(api: httpx.AsyncClient) -> list[Any]:
    return [
        ok(await api.get(path))
        for path in (
            "/ext/apps/$self_app/admins",
            "/ext/apps/$self_app/tokens",
            "/ext/apps/$self_app/webhooks",
            "/ext/apps/$self_app/channels",
        )
    ]


async def test_an_operator_session_cannot_take_over_the_app(
    app: FastAPI, api: httpx.AsyncClient, world: World, operator_session: tuple[int, str]
) -> None:
    (cli_token,) = [t for t in ok(await api.get("/ext/apps/$self_app/tokens")) if not t["session"]]
    before = await _state(api)
    _, token = operator_session
    async with client_for(app, token) as operator:
        for method, path, params in [
            ("POST", "/ext/apps/$self_app/tokens", {"name": "mine", "scopes": "admin"}),
            ("GET", "/ext/apps/$self_app/widget", {}),
            ("POST", "/ext/apps/$self_app/admins", {"name": "Backdoor", "password": "pw12345678"}),
            ("POST", "/ext/apps/$self_app/webhooks", {"url": "https://receiver.example/x"}),
            ("DELETE", f"/ext/apps/$self_app/tokens/{cli_token['id']}", {}),
            ("POST", f"/ext/apps/$self_app/admins/{world.admin_id}/role", {"role": "owner"}),
            ("GET", "/ext/apps/$self_app/audit", {}),
        ]:
            kwargs: dict[str, Any] = {"params": params} if method == "GET" else {"json": params}
            message = error(await operator.request(method, path, **kwargs), 403, "PermissionDenied")
            assert "role" in message
        # Inbox work goes on: the lists of admins and channels, conversations.
        assert ok(await operator.get("/ext/apps/$self_app/admins"))
        assert ok(await operator.get("/ext/apps/$self_app/channels"))
        assert ok(await operator.get("/apps/$self_app/conversations")) == []
    assert await _state(api) == before


async def test_administrators_manage_operators_only_and_owners_everyone(
    app: FastAPI, app_db: Database, api: httpx.AsyncClient, world: World
) -> None:
    owner_id, owner = await session_of(app_db, world.app_id, OWNER, "own@acme.test")
    _, administrator = await session_of(app_db, world.app_id, ADMINISTRATOR, "adm@acme.test")
    async with client_for(app, administrator) as adm, client_for(app, owner) as own:
        made = ok(await adm.post("/ext/apps/$self_app/admins", json={"name": "Op"}))
        assert made["role"] == "operator"
        for role in ("administrator", "owner"):
            r = await adm.post("/ext/apps/$self_app/admins", json={"name": "X", "role": role})
            error(r, 403, "PermissionDenied")
            r = await adm.post(f"/ext/apps/$self_app/admins/{made['id']}/role", json={"role": role})
            error(r, 403, "PermissionDenied")
        error(await adm.delete(f"/ext/apps/$self_app/admins/{owner_id}"), 403, "PermissionDenied")
        # The command line's token acts as an owner: an administrator cannot revoke it.
        tokens = ok(await adm.get("/ext/apps/$self_app/tokens"))
        cli = next(t for t in tokens if t["issuer_admin"] is None)
        error(await adm.delete(f"/ext/apps/$self_app/tokens/{cli['id']}"), 403, "PermissionDenied")
        promoted = ok(
            await own.post(
                f"/ext/apps/$self_app/admins/{made['id']}/role", json={"role": "administrator"}
            )
        )
        assert promoted["role"] == "administrator"
        r = await own.post("/ext/apps/$self_app/admins", json={"name": "Co", "role": "owner"})
        assert ok(r)["role"] == "owner"
        assert ok(await adm.delete(f"/ext/apps/$self_app/admins/{world.other_admin_id}")) == {}
        assert await adm.get("/ext/apps/$self_app/tokens")  # still works


async def test_the_last_owner_can_be_neither_removed_nor_demoted(
    app: FastAPI, app_db: Database, api: httpx.AsyncClient, world: World
) -> None:
    owner_id, owner = await session_of(app_db, world.app_id, OWNER, "own@acme.test")
    async with client_for(app, owner) as own:
        r = await own.post(f"/ext/apps/$self_app/admins/{owner_id}/role", json={"role": "operator"})
        assert "last owner" in error(r, 403, "PermissionDenied")
        error(await api.delete(f"/ext/apps/$self_app/admins/{owner_id}"), 403, "PermissionDenied")
        second = ok(
            await own.post("/ext/apps/$self_app/admins", json={"name": "B", "role": "owner"})
        )
        assert ok(await api.delete(f"/ext/apps/$self_app/admins/{owner_id}")) == {}
        r = await api.post(
            f"/ext/apps/$self_app/admins/{second['id']}/role", json={"role": "operator"}
        )
        error(r, 403, "PermissionDenied")


async def test_a_role_change_applies_to_open_sessions_at_once(
    app: FastAPI, app_db: Database, api: httpx.AsyncClient, world: World
) -> None:
    admin_id, token = await session_of(app_db, world.app_id, ADMINISTRATOR, "a@acme.test")
    async with client_for(app, token) as session:
        assert ok(await session.get("/ext/apps/$self_app/tokens"))
        r = await api.post(f"/ext/apps/$self_app/admins/{admin_id}/role", json={"role": "operator"})
        assert ok(r)["role"] == "operator"
        error(await session.get("/ext/apps/$self_app/tokens"), 403, "PermissionDenied")
        assert ok(await session.get("/ui/session"))["role"] == "operator"


async def test_tokens_die_with_their_issuer_unless_re_owned(
    app: FastAPI, app_db: Database, api: httpx.AsyncClient, world: World
) -> None:
    admin_id, session = await session_of(app_db, world.app_id, ADMINISTRATOR, "a@acme.test")
    async with client_for(app, session) as adm:
        minted = ok(
            await adm.post("/ext/apps/$self_app/tokens", json={"name": "m", "scopes": "admin"})
        )
        kept = ok(
            await adm.post("/ext/apps/$self_app/tokens", json={"name": "k", "scopes": "admin"})
        )
    assert minted["issuer_admin"] == kept["issuer_admin"] == admin_id
    assert not minted["session"]
    # Re-owned by the world's Ann (made an owner): it lives on after its issuer goes.
    ok(await api.post(f"/ext/apps/$self_app/admins/{world.admin_id}/role", json={"role": "owner"}))
    r = await api.post(
        f"/ext/apps/$self_app/tokens/{kept['id']}/owner", json={"admin": world.admin_id}
    )
    assert ok(r)["issuer_admin"] == world.admin_id
    error(
        await api.post(f"/ext/apps/$self_app/tokens/{kept['id']}/owner", json={"admin": NO}),
        404,
        "NotFound",
    )
    async with client_for(app, minted["token"]) as by_minted:
        assert ok(await by_minted.get("/ext/apps/$self_app/admins"))
    assert ok(await api.delete(f"/ext/apps/$self_app/admins/{admin_id}")) == {}
    for dead in (minted["token"], session):
        async with client_for(app, dead) as client:
            error(await client.get("/ext/apps/$self_app/admins"), 401, "AuthenticationFailed")
    async with client_for(app, kept["token"]) as client:
        assert ok(await client.get("/ext/apps/$self_app/admins"))
    ids = {t["id"] for t in ok(await api.get("/ext/apps/$self_app/tokens"))}
    assert kept["id"] in ids
    assert minted["id"] not in ids


async def test_a_token_acts_with_its_issuers_role(
    app: FastAPI, app_db: Database, world: World
) -> None:
    """An administrator's all-scope token cannot do what only owners do."""
    admin_id = await apps.create_admin(app_db, world.app_id, "Ada", role=ADMINISTRATOR)
    token = await token_of(
        app_db, world.app_id, list(ALL_SCOPES), Actor(ActorKind.TOKEN, ADMINISTRATOR, admin_id)
    )
    async with client_for(app, token) as client:
        error(await client.get("/ext/apps/$self_app/audit"), 403, "PermissionDenied")
        r = await client.post("/ext/apps/$self_app/admins", json={"name": "O", "role": "owner"})
        error(r, 403, "PermissionDenied")
        assert ok(await client.get("/ext/apps/$self_app/tokens"))


# ---------------------------------------------------------------------------
# The audit log


async def test_the_audit_log_says_who_did_what(
    app: FastAPI, app_db: Database, api: httpx.AsyncClient, world: World
) -> None:
    owner_id, owner = await session_of(app_db, world.app_id, OWNER, "own@acme.test")
    async with client_for(app, owner) as own:
        token = ok(
            await own.post("/ext/apps/$self_app/tokens", json={"name": "n", "scopes": "admin"})
        )
        ok(await own.delete(f"/ext/apps/$self_app/tokens/{token['id']}"))
        admin = ok(await own.post("/ext/apps/$self_app/admins", json={"name": "Al"}))
        ok(
            await own.post(
                f"/ext/apps/$self_app/admins/{admin['id']}/role", json={"role": "administrator"}
            )
        )
        ok(await own.delete(f"/ext/apps/$self_app/admins/{admin['id']}"))
        hook = ok(
            await own.post("/ext/apps/$self_app/webhooks", json={"url": "https://r.example/x"})
        )
        ok(await own.delete("/ext/apps/$self_app/webhooks", params={"webhook": hook["id"]}))
        entries = ok(await own.get("/ext/apps/$self_app/audit"))
    mine = [
        (e["action"], e["object_id"]) for e in reversed(entries) if e["actor_admin"] == owner_id
    ]
    assert mine == [
        ("token.create", token["id"]),
        ("token.revoke", token["id"]),
        ("admin.create", admin["id"]),
        ("admin.role", admin["id"]),
        ("admin.remove", admin["id"]),
        ("webhook.create", hook["id"]),
        ("webhook.remove", hook["id"]),
    ]
    by_owner = [e for e in entries if e["actor_admin"] == owner_id]
    assert {e["actor_kind"] for e in by_owner} == {"admin"}
    role_change = next(e for e in by_owner if e["action"] == "admin.role")
    assert role_change["details"] == {"old": "operator", "new": "administrator"}
    # The command line's deeds: the app's first token, the admins it added.
    cli = [e for e in entries if e["actor_kind"] == "cli"]
    assert {e["action"] for e in cli} == {"token.create", "admin.create"}
    assert all(e["actor_admin"] is None and e["actor_token"] is None for e in cli)


async def test_the_audit_log_pages_newest_first(
    app: FastAPI, api: httpx.AsyncClient, world: World
) -> None:
    for n in range(5):
        ok(await api.post("/ext/apps/$self_app/channels", json={"name": f"c{n}"}))
        ok(await api.post("/ext/apps/$self_app/tokens", json={"name": f"t{n}", "scopes": "admin"}))
    seen: list[int] = []
    after = None
    while True:
        r = await api.get("/ext/apps/$self_app/audit", params={"count": 3, "after": after or 0})
        body = r.json()
        assert r.status_code == 200
        seen += [e["id"] for e in body["data"]]
        after = body["meta"]["next_after"]
        if after is None:
            break
        assert after == seen[-1]
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == len(set(seen))
    everything = ok(await api.get("/ext/apps/$self_app/audit", params={"count": 100}))
    assert [e["id"] for e in everything] == seen
    error(await api.get("/ext/apps/$self_app/audit", params={"count": 0}), 400, "BadRequest")


# ---------------------------------------------------------------------------
# Finding 6: an operator replies only as themself


async def test_a_session_writes_only_as_its_own_admin(
    app: FastAPI,
    app_db: Database,
    api: httpx.AsyncClient,
    world: World,
    operator_session: tuple[int, str],
) -> None:
    admin_id, token = operator_session
    cid = await started(app_db, world)
    before = ok(await api.get(f"/conversations/{cid}/parts"))
    async with client_for(app, token) as operator:
        for other in (world.admin_id, "default_admin"):
            r = await operator.post(
                f"/conversations/{cid}/reply", json={"body": "I am Ann", "from_admin": other}
            )
            assert "its own admin" in error(r, 403, "PermissionDenied")
            r = await operator.post(f"/conversations/{cid}/close", json={"from_admin": other})
            error(r, 403, "PermissionDenied")
        assert ok(await api.get(f"/conversations/{cid}/parts")) == before
        ok(await operator.post(f"/conversations/{cid}/reply", json={"body": "me"}))
        ok(
            await operator.post(
                f"/conversations/{cid}/reply", json={"body": "me", "from_admin": admin_id}
            )
        )
    state = await service.get_conversation(app_db, world.app_id, cid)
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    mine = [p for p in parts if p.get("body") == "me"]
    assert len(mine) == 2
    assert all(p["from"]["id"] == admin_id and p["from"]["type"] == "admin" for p in mine)
    assert state.id == cid


async def test_a_token_may_write_as_an_admin_and_the_audit_log_says_which(
    app: FastAPI, app_db: Database, api: httpx.AsyncClient, world: World
) -> None:
    cid = await started(app_db, world)
    ok(
        await api.post(
            f"/conversations/{cid}/reply", json={"body": "hi", "from_admin": world.admin_id}
        )
    )
    (cli_token,) = [
        t for t in ok(await api.get("/ext/apps/$self_app/tokens")) if t["name"] == "default"
    ]
    # Naming another app's admin is refused, and leaves no note.
    r = await api.post(
        f"/conversations/{cid}/reply", json={"body": "x", "from_admin": world.foreign_admin_id}
    )
    assert r.status_code in (400, 404)
    entries = ok(await api.get("/ext/apps/$self_app/audit"))
    noted = [e for e in entries if e["action"] == "conversation.as_admin"]
    assert [(e["actor_kind"], e["actor_token"], e["object_id"]) for e in noted] == [
        ("token", cli_token["id"], world.admin_id)
    ]
