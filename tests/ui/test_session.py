"""Signing in to the inbox (`/ui/session`) over a real server, on SQLite and PostgreSQL.

The right password gives a session token of the admin's app (stored hashed, with the
inbox's scopes); a wrong password and an unknown e-mail are refused alike; signing out
revokes the token everywhere, realtime included; a session never reaches another app.
Also the page at `/` and its static files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.events.live import Live, closed_with, serve
from threadline.api.config import DEFAULT_ATTACHMENT_TYPES
from threadline.apps import service as apps
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db.schema import api_tokens
from threadline.ui.service import SESSION_SCOPES

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def live(db_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    async with serve(db_url, tmp_path) as server:
        yield server


async def operator(live: Live, email: str = "olivia@acme.test", app_id: int | None = None) -> int:
    return await apps.create_admin(
        live.db, app_id or live.world.app_id, "Olivia", email=email, password=PASSWORD
    )


def anonymous(live: Live) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=live.http, timeout=30)


def bearer(live: Live, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=live.http, headers={"Authorization": f"Token {token}"}, timeout=30
    )


def refused(response: httpx.Response, status: int, error: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["data"] == {}
    assert body["meta"]["status"] == status
    assert body["meta"]["error"] == error
    message: str = body["meta"]["error_message"]
    return message


async def sign_in(live: Live, **fields: Any) -> httpx.Response:
    async with anonymous(live) as http:
        return await http.post("/ui/session", json=fields)


async def token_rows(live: Live) -> list[Any]:
    async with live.db.read() as conn:
        return list(await conn.execute(select(api_tokens).order_by(api_tokens.c.id)))


async def test_the_right_password_gives_a_session_of_the_admin(live: Live) -> None:
    w = live.world
    admin_id = await operator(live)
    before = len(await token_rows(live))
    # The e-mail is matched whatever its case and surrounding spaces.
    r = await sign_in(live, email="  Olivia@ACME.test ", password=PASSWORD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["meta"] == {"status": 200}
    token = body["data"].pop("token")
    expires = body["data"].pop("expires")
    assert body["data"] == {
        "app": w.app_id,
        "admin": admin_id,
        "name": "Olivia",
        "email": "olivia@acme.test",
        "role": "operator",
        "two_factor": False,
        # What a file sent from the inbox may be (the settings' defaults here).
        "attachment_max_bytes": 25 * 1024 * 1024,
        "attachment_types": list(DEFAULT_ATTACHMENT_TYPES),
    }
    assert re.fullmatch(r"tl_[A-Za-z0-9_-]{43}", token)
    # Stored hashed, like every token, with the inbox's scopes and no more.
    rows = await token_rows(live)
    assert len(rows) == before + 1
    stored = rows[-1]
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in {str(v) for v in stored._mapping.values()}
    assert sorted(stored.scopes) == sorted(SESSION_SCOPES)
    assert stored.app_id == w.app_id
    # Asking for string ids answers them as strings.
    strings = await sign_in(live, email="olivia@acme.test", password=PASSWORD, id_as_string=True)
    assert strings.json()["data"]["admin"] == str(admin_id)

    started = await service.start_by_user(live.db, w.app_id, w.user_id, ev.UserReply(body="Hi"))
    cid = started.state.id
    async with bearer(live, token) as http:
        who = await http.get("/ui/session")
        assert who.status_code == 200, who.text
        assert who.json()["data"] == {
            "app": w.app_id,
            "admin": admin_id,
            "name": "Olivia",
            "email": "olivia@acme.test",
            "expires": expires,
            "role": "operator",
            "two_factor": False,
            "attachment_max_bytes": 25 * 1024 * 1024,
            "attachment_types": list(DEFAULT_ATTACHMENT_TYPES),
        }
        inbox = await http.get(f"/ext/apps/{w.app_id}/inbox")
        assert inbox.status_code == 200
        assert [c["id"] for c in inbox.json()["data"]["conversations"]] == [cid]
        answer = await http.post(
            f"/conversations/{cid}/reply", json={"body": "Hello!", "from_admin": admin_id}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"]["from"]["id"] == admin_id
        # Written in the inbox: the vendor's `web_panel`.
        assert answer.json()["data"]["sent_via"] == "web_panel"
        # Writing as the user is not the inbox's business.
        as_user = await http.post(
            f"/conversations/{cid}/reply", json={"body": "x", "from_user": w.user_id}
        )
        refused(as_user, 403, "PermissionDenied")
        # Nor is writing as a bot: a session writes as its own admin only.
        as_bot = await http.post(
            f"/conversations/{cid}/reply", json={"body": "x", "bot_name": "Ada"}
        )
        refused(as_bot, 403, "PermissionDenied")


async def test_a_wrong_password_and_an_unknown_email_are_refused_alike(live: Live) -> None:
    await operator(live)
    await apps.create_admin(live.db, live.world.app_id, "No password", email="nopass@acme.test")
    before = len(await token_rows(live))
    messages = set()
    for fields in (
        {"email": "olivia@acme.test", "password": "wrong"},
        {"email": "nobody@acme.test", "password": PASSWORD},
        {"email": "nopass@acme.test", "password": ""},
        {"email": "nopass@acme.test", "password": "anything"},
        {"email": "olivia@acme.test", "password": PASSWORD.upper()},
    ):
        r = await sign_in(live, **fields)
        if fields["password"] == "":
            assert refused(r, 400, "BadRequest").startswith("password:")
            continue
        messages.add(refused(r, 401, "AuthenticationFailed"))
    # One message, naming neither part.
    assert messages == {"wrong e-mail or password"}
    assert len(await token_rows(live)) == before
    # A password never travels in a URL; missing fields are named.
    async with anonymous(live) as http:
        r = await http.post("/ui/session?password=x", json={"email": "olivia@acme.test"})
        assert refused(r, 400, "BadRequest").startswith("password:")
        r = await http.post("/ui/session", json={"password": PASSWORD})
        assert refused(r, 400, "BadRequest") == "email: is required"
        r = await http.get("/ui/session")
        refused(r, 401, "AuthenticationFailed")
        r = await http.put("/ui/session", json={})
        refused(r, 405, "MethodNotAllowed")
    # A form body works as well as JSON.
    async with anonymous(live) as http:
        r = await http.post("/ui/session", data={"email": "olivia@acme.test", "password": PASSWORD})
        assert r.status_code == 200, r.text


async def test_a_removed_admin_cannot_sign_in_and_loses_the_session(live: Live) -> None:
    admin_id = await operator(live)
    token = (await sign_in(live, email="olivia@acme.test", password=PASSWORD)).json()["data"][
        "token"
    ]
    async with live.client() as owner:
        r = await owner.delete(f"/ext/apps/$self_app/admins/{admin_id}")
        assert r.status_code == 200, r.text
    r = await sign_in(live, email="olivia@acme.test", password=PASSWORD)
    refused(r, 401, "AuthenticationFailed")
    async with bearer(live, token) as http:
        refused(await http.get("/ui/session"), 401, "AuthenticationFailed")
        # The session token is revoked for the API too.
        refused(await http.get("/apps/$self_app/conversations"), 401, "AuthenticationFailed")


async def test_signing_out_revokes_the_session_everywhere(live: Live) -> None:
    w = live.world
    await operator(live)
    token = (await sign_in(live, email="olivia@acme.test", password=PASSWORD)).json()["data"][
        "token"
    ]
    other = (await sign_in(live, email="olivia@acme.test", password=PASSWORD)).json()["data"][
        "token"
    ]
    channel = f"conversation.{w.app_id}"
    async with bearer(live, token) as http:
        r = await http.delete("/ui/session")
        assert r.status_code == 200, r.text
        assert r.json() == {"meta": {"status": 200}, "data": {}}
        refused(await http.get(f"/ext/apps/{w.app_id}/inbox"), 401, "AuthenticationFailed")
        refused(await http.get("/ui/session"), 401, "AuthenticationFailed")
        refused(await http.delete("/ui/session"), 401, "AuthenticationFailed")
    assert await closed_with(live.ws_url(channel, token=token)) == 3401
    # Another session of the same admin lives on.
    async with bearer(live, other) as http:
        assert (await http.get(f"/ext/apps/{w.app_id}/inbox")).status_code == 200
    # The app's own API token is not a session: it cannot be ended here.
    async with live.client() as http:
        refused(await http.delete("/ui/session"), 403, "PermissionDenied")
        refused(await http.get("/ui/session"), 403, "PermissionDenied")
        assert (await http.get(f"/ext/apps/{w.app_id}/inbox")).status_code == 200


async def test_a_session_of_one_app_cannot_read_another(live: Live) -> None:
    w = live.world
    ours = await operator(live, "same@example.com")
    theirs = await operator(live, "same@example.com", app_id=w.foreign_app_id)
    # The same e-mail in two apps: the first admin whose password matches, or the app asked.
    r = await sign_in(live, email="same@example.com", password=PASSWORD)
    assert (r.json()["data"]["app"], r.json()["data"]["admin"]) == (w.app_id, ours)
    r = await sign_in(live, email="same@example.com", password=PASSWORD, app=w.foreign_app_id)
    assert (r.json()["data"]["app"], r.json()["data"]["admin"]) == (w.foreign_app_id, theirs)
    token = (await sign_in(live, email="same@example.com", password=PASSWORD)).json()["data"][
        "token"
    ]
    foreign = await service.start_by_user(
        live.db, w.foreign_app_id, w.foreign_user_id, ev.UserReply(body="their secret")
    )
    fid = foreign.state.id
    async with bearer(live, token) as http:
        for path in (
            f"/conversations/{fid}",
            f"/conversations/{fid}/parts",
            f"/ext/apps/{w.foreign_app_id}/inbox",
            f"/ext/apps/{w.foreign_app_id}/admins",
            f"/users/{w.foreign_user_id}/conversations",
        ):
            refused(await http.get(path), 404, "NotFound")
        r = await http.post(f"/conversations/{fid}/reply", json={"body": "x", "from_admin": ours})
        refused(r, 404, "NotFound")
        inbox = (await http.get("/ext/apps/$self_app/inbox", params={"status": "all"})).json()
        assert inbox["data"]["conversations"] == []
        found = (await http.get("/ext/apps/$self_app/search", params={"q": "secret"})).json()
        assert found["data"] == []
    assert await closed_with(live.ws_url(f"conversation.{w.foreign_app_id}", token=token)) == 3403


async def test_repeated_failures_from_one_address_are_throttled(live: Live) -> None:
    await operator(live)
    for _ in range(10):
        r = await sign_in(live, email="olivia@acme.test", password="guess")
        refused(r, 401, "AuthenticationFailed")
    r = await sign_in(live, email="olivia@acme.test", password=PASSWORD)
    assert refused(r, 429, "Throttled").startswith("too many requests")
    assert 1 <= int(r.headers["Retry-After"]) <= 60


async def test_the_page_and_its_static_files(live: Live) -> None:
    async with anonymous(live) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "object-src 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert '<div id="root"></div>' in page.text  # the screens render into it
        scripts = re.findall(r'src="(/ui/static/[0-9a-f]{16}/app\.js)"', page.text)
        styles = re.findall(r'href="(/ui/static/[0-9a-f]{16}/inbox\.css)"', page.text)
        assert len(scripts) == len(styles) == 1
        again = await http.get("/", headers={"If-None-Match": page.headers["etag"]})
        assert again.status_code == 304
        root = scripts[0].rsplit("/", 1)[0]
        for name, content_type in (
            ("app.js", "text/javascript; charset=utf-8"),
            ("api.js", "text/javascript; charset=utf-8"),
            ("dom.js", "text/javascript; charset=utf-8"),
            ("realtime.js", "text/javascript; charset=utf-8"),
            ("store.js", "text/javascript; charset=utf-8"),
            ("screens/conversation.js", "text/javascript; charset=utf-8"),
            ("screens/settings.js", "text/javascript; charset=utf-8"),
            ("vendor/preact/index.js", "text/javascript; charset=utf-8"),
            ("inbox.css", "text/css; charset=utf-8"),
        ):
            r = await http.get(f"{root}/{name}")
            assert r.status_code == 200, name
            assert r.headers["content-type"] == content_type
            assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert (
                r.content
                == (Path(__file__).parents[2] / "threadline/ui/static" / name).read_bytes()
            )
            cached = await http.get(f"{root}/{name}", headers={"If-None-Match": r.headers["etag"]})
            assert cached.status_code == 304
        # An old page's digest still gets today's file, but revalidated.
        stale = await http.get("/ui/static/0000000000000000/app.js")
        assert stale.status_code == 200
        assert stale.headers["cache-control"] == "no-cache"
        for missing in (
            f"{root}/nope.js",
            f"{root}/..%2Froutes.py",
            f"{root}/index.html",
            f"{root}/vendor/preact/LICENSE",
            f"{root}/vendor/preact/index.d.ts",
        ):
            refused(await http.get(missing), 404, "NotFound")
