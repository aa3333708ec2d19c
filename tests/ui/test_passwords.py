"""Passwords: a length and breach-sanity rule for new ones, and an operator changing
their own (which ends their other inbox sessions)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.events.live import Live, serve
from threadline.apps import service as apps
from threadline.core.passwords import MIN_PASSWORD_CHARS, password_problem

PASSWORD = "correct horse battery staple"
NEW = "a different long passphrase"
EMAIL = "olivia@acme.test"


@pytest.fixture
async def live(db_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    async with serve(db_url, tmp_path) as server:
        yield server


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short1!", "at least"),
        ("x" * 1025, "at most"),
        ("aaaaaaaaaaaa", "repeated"),
        ("abababababab", "repeated"),
        ("password123!", "common"),
        ("Password2024", "common"),
        ("qwertyuiop", "common"),
        ("1234567890", "common"),
        ("olivia-rocks-2024", "e-mail or name"),
        ("my name is Olivia!", "e-mail or name"),
    ],
)
def test_weak_passwords_are_refused(password: str, why: str) -> None:
    problem = password_problem(password, email=EMAIL, name="Olivia")
    assert problem is not None
    assert why in problem


def test_a_long_uncommon_password_is_accepted() -> None:
    assert password_problem(PASSWORD, email=EMAIL, name="Olivia") is None
    assert password_problem("x7#kQ9!mZ2", email=None, name=None) is None
    assert len("x7#kQ9!mZ2") == MIN_PASSWORD_CHARS


async def test_adding_an_admin_with_a_weak_password_is_refused(live: Live) -> None:
    async with live.client() as http:
        r = await http.post(
            "/ext/apps/$self_app/admins",
            json={"name": "Cy", "email": "cy@acme.test", "password": "pass"},
        )
        assert r.status_code == 400
        assert r.json()["meta"]["error_message"].startswith("password:")
        r = await http.get("/ext/apps/$self_app/admins")
        assert "cy@acme.test" not in r.text


async def sign_in(http: httpx.AsyncClient, password: str) -> httpx.Response:
    return await http.post("/ui/session", json={"email": EMAIL, "password": password})


async def test_an_operator_changes_their_password(live: Live) -> None:
    await apps.create_admin(live.db, live.world.app_id, "Olivia", email=EMAIL, password=PASSWORD)
    async with httpx.AsyncClient(base_url=live.http, timeout=30) as http:
        first = (await sign_in(http, PASSWORD)).json()["data"]["token"]
        other = (await sign_in(http, PASSWORD)).json()["data"]["token"]
        mine = {"Authorization": f"Token {first}"}
        url = "/ui/password"
        r = await http.post(
            url, json={"current_password": "nope", "new_password": NEW}, headers=mine
        )
        assert r.status_code == 400
        assert r.json()["meta"]["error_message"].startswith("current_password:")
        r = await http.post(
            url, json={"current_password": PASSWORD, "new_password": "short"}, headers=mine
        )
        assert r.status_code == 400
        assert r.json()["meta"]["error_message"].startswith("new_password:")
        r = await http.post(url, json={"current_password": PASSWORD, "new_password": NEW})
        assert r.status_code == 401  # only a signed-in operator
        r = await http.post(
            url, json={"current_password": PASSWORD, "new_password": NEW}, headers=mine
        )
        assert r.status_code == 200, r.text
        assert (await sign_in(http, PASSWORD)).status_code == 401
        assert (await sign_in(http, NEW)).status_code == 200
        # This session goes on; the operator's other one has ended.
        assert (await http.get("/ui/session", headers=mine)).status_code == 200
        r = await http.get("/ui/session", headers={"Authorization": f"Token {other}"})
        assert r.status_code == 401
