"""The inbox's audit log, in a real browser: an owner sees what the API's audit log says;
an operator is not offered it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import LiveServer


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def api(live_server: LiveServer) -> Iterator[httpx.Client]:
    with live_server.api() as client:
        yield client


def sign_in(context: BrowserContext, live: LiveServer, email: str, password: str) -> Page:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live.base_url + "/")
    page.get_by_test_id("login-email").fill(email)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("inbox")).to_be_visible()
    assert errors == []
    return page


def test_an_owner_reads_the_audit_log_and_an_operator_is_not_offered_it(
    context: BrowserContext, live_server: LiveServer, api: httpx.Client
) -> None:
    app = live_server.app_id
    email, password = f"op-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(12)
    made = ok(
        api.post(
            f"/ext/apps/{app}/admins",
            json={"name": "Otto", "email": email, "password": password, "role": "operator"},
        )
    )["data"]
    entries = ok(api.get(f"/ext/apps/{app}/audit", params={"count": 50}))["data"]
    assert entries[0]["action"] == "admin.create"
    assert entries[0]["object_id"] == made["id"]

    # The demo's signed-in admin is the app's owner.
    page = sign_in(context, live_server, live_server.operator_email, live_server.operator_password)
    page.get_by_test_id("audit-open").click()
    dialog = page.get_by_test_id("audit")
    expect(dialog).to_be_visible()
    rows = dialog.get_by_test_id("audit-entry")
    expect(rows).to_have_count(len(entries))
    assert rows.first.get_attribute("data-action") == "admin.create"
    expect(rows.first).to_contain_text(f"added admin {made['id']}")
    expect(rows.first).to_contain_text("token")  # done with the demo's API token
    assert [r.get_attribute("data-action") for r in rows.all()] == [e["action"] for e in entries]
    page.get_by_test_id("audit-close").click()
    expect(dialog).to_be_hidden()

    other = context.browser
    assert other is not None
    operator_context = other.new_context()
    try:
        operator = sign_in(operator_context, live_server, email, password)
        expect(operator.get_by_test_id("current-admin")).to_have_text("Otto")
        expect(operator.get_by_test_id("audit-open")).to_be_hidden()
        token = operator.evaluate(
            "JSON.parse(sessionStorage.getItem('threadline.inbox.session')).token"
        )
        refused = httpx.get(
            f"{live_server.base_url}/ext/apps/{app}/audit",
            headers={"Authorization": f"Token {token}"},
        )
        assert refused.status_code == 403
    finally:
        operator_context.close()
