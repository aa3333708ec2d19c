"""Inbox sessions expire, on SQLite and PostgreSQL, over a real server.

A session answers its expiry (the token list shows it) and works on `/ui/session`, the API
and realtime until then; once expired it is refused exactly like an unknown token, the
per-process token cache included, and leaves the token list. Tokens made with the tokens
API never expire. The lifetime setting is checked, and revision 0011 gives existing
sessions an expiry on a database with data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from tests.conftest import build_world
from tests.events.live import Live, closed_with, connect, nothing_more, serve
from tests.ui.test_session import PASSWORD, bearer, operator, refused, sign_in
from threadline.apps import service as apps
from threadline.apps.repository import AppRepository
from threadline.cli import describe
from threadline.db.engine import Database
from threadline.db.migrate import downgrade, upgrade
from threadline.db.schema import api_tokens
from threadline.settings import Settings
from threadline.ui.service import SESSION_SCOPES

# The token list answers whole seconds unless asked for exact times.
PRECISE = {"precise_times": "true"}

NOT_VALID = "the API token is not valid"


@pytest.fixture
async def live(db_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    async with serve(db_url, tmp_path) as server:
        yield server


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def session_token(live: Live) -> tuple[str, datetime]:
    """A fresh session of the operator: its token and expiry as answered."""
    r = await sign_in(live, email="olivia@acme.test", password=PASSWORD)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    return data["token"], at(data["expires"])


async def stored_expiry(live: Live, token: str) -> datetime | None:
    async with live.db.read() as conn:
        query = select(api_tokens.c.expires).where(
            api_tokens.c.token_hash == apps.hash_token(token)
        )
        expires: datetime | None = (await conn.execute(query)).scalar_one()
    return expires


async def assert_refused_everywhere(live: Live, token: str) -> None:
    """Refused as an unknown token is, on HTTP routes, the WebSocket and SSE."""
    app_id = live.world.app_id
    for candidate in (token, "tl_unknown"):
        async with bearer(live, candidate) as http:
            assert refused(await http.get("/ui/session"), 401, "AuthenticationFailed") == NOT_VALID
            inbox = await http.get(f"/ext/apps/{app_id}/inbox")
            assert refused(inbox, 401, "AuthenticationFailed") == NOT_VALID
            sse = await http.get(f"/sse/conversation.{app_id}")
            assert sse.status_code == 401
            assert sse.json()["meta"]["code"] == 3401
        assert await closed_with(live.ws_url(f"conversation.{app_id}", token=candidate)) == 3401


async def test_a_session_works_until_it_expires_then_is_refused_like_an_unknown_token(
    live: Live,
) -> None:
    w = live.world
    admin_id = await operator(live)
    before = datetime.now(UTC)
    token, expires = await session_token(live)
    # The default lifetime: a week from signing in, as stored.
    week = timedelta(hours=168)
    assert before + week - timedelta(seconds=1) <= expires <= datetime.now(UTC) + week
    stored = await stored_expiry(live, token)
    assert stored is not None
    assert abs(stored - expires) < timedelta(milliseconds=1)
    async with bearer(live, token) as http:
        who = await http.get("/ui/session")
        assert who.status_code == 200, who.text
        assert who.json()["data"]["admin"] == admin_id
        assert at(who.json()["data"]["expires"]) == expires
        assert (await http.get(f"/ext/apps/{w.app_id}/inbox")).status_code == 200
    async with connect(live.ws_url(f"conversation.{w.app_id}", token=token)) as ws:
        await nothing_more(ws)  # open and not closed: a close would raise here
    # The app's token list shows the session with its expiry, until it expires.
    async with live.client() as owner:
        listed = (await owner.get("/ext/apps/$self_app/tokens", params=PRECISE)).json()["data"]
    sessions = [t for t in listed if t["expires"] is not None]
    assert [at(t["expires"]) for t in sessions] == [expires]
    # Expired (as if a week had passed); this process forgets the tokens it kept.
    async with live.db.write() as conn:
        await conn.execute(
            update(api_tokens)
            .where(api_tokens.c.token_hash == apps.hash_token(token))
            .values(expires=datetime.now(UTC) - timedelta(seconds=1))
        )
    apps.forget_tokens(live.db)
    await assert_refused_everywhere(live, token)
    async with live.client() as owner:
        listed = (await owner.get("/ext/apps/$self_app/tokens")).json()["data"]
    assert [t for t in listed if t["id"] == sessions[0]["id"]] == []
    # Signing in again gives a new session that works.
    fresh, _ = await session_token(live)
    async with bearer(live, fresh) as http:
        assert (await http.get("/ui/session")).status_code == 200


async def test_the_token_cache_never_outlives_a_session(live: Live) -> None:
    # Three seconds: less than the token cache keeps a token.
    seconds = 3.0
    assert seconds < apps.TOKEN_CACHE_SECONDS
    live.app.state.settings = live.app.state.settings.model_copy(
        update={"inbox_session_hours": seconds / 3600}
    )
    await operator(live)
    started = time.time()
    token, expires = await session_token(live)
    assert started + seconds - 0.5 <= expires.timestamp() <= time.time() + seconds
    record = await apps.authenticate(live.db, token)  # now in this process's cache
    assert record is not None
    assert record.expires is not None
    assert sorted(record.scopes) == sorted(SESSION_SCOPES)
    await asyncio.sleep(max(0.0, expires.timestamp() - time.time()) + 0.2)
    # No `forget_tokens`: the cache itself lets it go at its expiry.
    assert await apps.authenticate(live.db, token) is None
    await assert_refused_everywhere(live, token)


async def test_tokens_of_the_tokens_api_never_expire(live: Live) -> None:
    async with live.client() as owner:
        r = await owner.post(
            "/ext/apps/$self_app/tokens", json={"name": "reader", "scopes": ["user-read"]}
        )
        assert r.status_code == 200, r.text
        made = r.json()["data"]
        assert made["expires"] is None
        listed = (await owner.get("/ext/apps/$self_app/tokens")).json()["data"]
        assert [t["expires"] for t in listed if t["id"] == made["id"]] == [None]
    assert await stored_expiry(live, made["token"]) is None
    assert await stored_expiry(live, live.world.token) is None
    for token in (made["token"], live.world.token):
        record = await apps.authenticate(live.db, token)
        assert record is not None
        assert record.expires is None


def test_the_session_lifetime_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("THREADLINE_INBOX_SESSION_HOURS", raising=False)
    assert Settings().inbox_session_hours == 168
    for good, hours in (("0.5", 0.5), ("24", 24.0), ("87600", 87_600.0)):
        monkeypatch.setenv("THREADLINE_INBOX_SESSION_HOURS", good)
        assert Settings().inbox_session_hours == hours
    for bad, message in (
        ("0", "Input should be greater than 0"),
        ("-1", "Input should be greater than 0"),
        ("soon", "Input should be a valid number"),
        ("inf", "Input should be a finite number"),
        ("nan", "Input should be a finite number"),
        ("1e9", "Input should be less than or equal to 87600"),
    ):
        monkeypatch.setenv("THREADLINE_INBOX_SESSION_HOURS", bad)
        with pytest.raises(ValidationError) as caught:
            Settings()
        # The CLI's one line names the variable.
        assert describe(caught.value).startswith(
            f"invalid setting: THREADLINE_INBOX_SESSION_HOURS: {message}"
        ), bad


def test_the_migration_gives_existing_sessions_a_week(db_url: str) -> None:
    created = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
    names = {
        "session": "inbox session of admin 7",
        "default": "default",
        "lookalike": "inbox session of admin seven",
    }

    async def before() -> dict[str, int]:
        db = Database(db_url)
        try:
            world = await build_world(db)
            async with db.write() as conn:
                repo = AppRepository(conn)
                for name in names.values():
                    await apps.issue_token(repo, world.app_id, name, ["user-read"], created)
                rows = await conn.execute(
                    select(api_tokens.c.id, api_tokens.c.name).where(
                        api_tokens.c.name.in_(names.values())
                    )
                )
                return {row.name: row.id for row in rows}
        finally:
            await db.dispose()

    async def after(ids: dict[str, int]) -> dict[str, datetime | None]:
        db = Database(db_url)
        try:
            async with db.read() as conn:
                rows = await conn.execute(
                    select(api_tokens.c.id, api_tokens.c.expires).where(
                        api_tokens.c.id.in_(ids.values())
                    )
                )
                return {row.id: row.expires for row in rows}
        finally:
            await db.dispose()

    ids = asyncio.run(before())
    try:
        downgrade(db_url, "0010")  # with data present
    finally:
        upgrade(db_url)
    expiry = asyncio.run(after(ids))
    assert expiry == {
        ids[names["session"]]: created + timedelta(hours=168),
        ids[names["default"]]: None,
        ids[names["lookalike"]]: None,
    }
