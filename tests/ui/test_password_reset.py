"""Resetting a password with a one-time link that `threadline password reset` prints: the
link sets the password once, within its time, and ends the admin's inbox sessions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.events.live import Live, serve
from tests.test_cli import invoke, with_db
from threadline.apps import service as apps
from threadline.db.engine import Database
from threadline.ui import service

PASSWORD = "correct horse battery staple"
NEW = "a brand new long passphrase"
EMAIL = "olivia@acme.test"


@pytest.fixture
async def live(db_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    async with serve(db_url, tmp_path) as server:
        yield server


def test_the_command_prints_a_one_time_link(db_url: str) -> None:
    async def setup(db: Database) -> int:
        created = await apps.create_app(db, "Acme")
        await apps.create_admin(db, created.app_id, "Olivia", email=EMAIL, password=PASSWORD)
        return created.app_id

    app_id = with_db(db_url, setup)
    result = invoke(
        "password", "reset", str(app_id), "Olivia@Acme.test",
        "--base-url", "https://inbox.example/", "--database-url", db_url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    prefix = "https://inbox.example/#reset="
    assert printed["url"].startswith(prefix)
    token = printed["url"].removeprefix(prefix)
    with_db(db_url, lambda db: service.reset_password(db, token, NEW))
    missing = invoke("password", "reset", str(app_id), "nobody@acme.test", "--database-url", db_url)
    assert missing.exit_code == 1


async def reset(http: httpx.AsyncClient, token: str, password: str) -> httpx.Response:
    return await http.post("/ui/password/reset", json={"token": token, "new_password": password})


async def test_a_link_sets_the_password_once_and_ends_the_sessions(live: Live) -> None:
    await apps.create_admin(live.db, live.world.app_id, "Olivia", email=EMAIL, password=PASSWORD)
    async with httpx.AsyncClient(base_url=live.http, timeout=30) as http:
        session = (
            await http.post("/ui/session", json={"email": EMAIL, "password": PASSWORD})
        ).json()
        token, _ = await service.issue_password_reset(
            live.db, live.world.app_id, EMAIL, timedelta(hours=1)
        )
        r = await reset(http, token, "short")
        assert r.status_code == 400
        assert r.json()["meta"]["error_message"].startswith("new_password:")
        r = await http.post(f"/ui/password/reset?token={token}", json={"new_password": NEW})
        assert r.status_code == 400  # never in the URL
        assert (await reset(http, token, NEW)).status_code == 200
        r = await reset(http, token, NEW + " again")
        assert r.status_code == 400  # once
        assert r.json()["meta"]["error_message"].startswith("token:")
        signed = {"email": EMAIL, "password": NEW}
        assert (await http.post("/ui/session", json=signed)).status_code == 200
        old = {"Authorization": f"Token {session['data']['token']}"}
        assert (await http.get("/ui/session", headers=old)).status_code == 401


async def test_an_expired_or_replaced_link_does_nothing(live: Live) -> None:
    await apps.create_admin(live.db, live.world.app_id, "Olivia", email=EMAIL, password=PASSWORD)
    expired, _ = await service.issue_password_reset(
        live.db, live.world.app_id, EMAIL, timedelta(seconds=-1)
    )
    replaced, _ = await service.issue_password_reset(
        live.db, live.world.app_id, EMAIL, timedelta(hours=1)
    )
    current, _ = await service.issue_password_reset(
        live.db, live.world.app_id, EMAIL, timedelta(hours=1)
    )
    async with httpx.AsyncClient(base_url=live.http, timeout=30) as http:
        assert (await reset(http, expired, NEW)).status_code == 400
        assert (await reset(http, replaced, NEW)).status_code == 400
        assert (await reset(http, "tlr_made-up", NEW)).status_code == 400
        signed = {"email": EMAIL, "password": PASSWORD}
        assert (await http.post("/ui/session", json=signed)).status_code == 200
        assert (await reset(http, current, NEW)).status_code == 200
