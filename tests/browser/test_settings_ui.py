"""The inbox's settings, in a real browser: an operator turns two-step sign-in on with a
code of an authenticator app (made here with pyotp from the key the page shows), signs in
again with a code, changes their password, and turns two-step sign-in off."""

from __future__ import annotations

import secrets
import time

import httpx
import pyotp
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import LiveServer


def code(secret: str, steps_ahead: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead)


@pytest.fixture
def operator(live_server: LiveServer) -> tuple[str, str]:
    email = f"op-{secrets.token_hex(4)}@example.com"
    password = "a long operator passphrase " + secrets.token_hex(4)
    with live_server.api() as api:
        r = api.post(
            f"/ext/apps/{live_server.app_id}/admins",
            json={"name": "Tess", "email": email, "password": password, "role": "operator"},
        )
        assert r.status_code == 200, r.text
    return email, password


def open_login(context: BrowserContext, live: LiveServer, email: str, password: str) -> Page:
    page = context.new_page()
    page.goto(live.base_url + "/")
    page.get_by_test_id("login-email").fill(email)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()
    return page


def test_an_operator_turns_on_two_step_sign_in_and_signs_in_with_a_code(
    context: BrowserContext, live_server: LiveServer, operator: tuple[str, str]
) -> None:
    email, password = operator
    page = open_login(context, live_server, email, password)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    expect(page.get_by_test_id("inbox")).to_be_visible()

    page.get_by_test_id("settings-open").click()
    settings = page.get_by_test_id("settings")
    expect(settings).to_be_visible()
    expect(settings.get_by_test_id("two-factor-state")).to_contain_text("Off")
    expect(settings.get_by_test_id("settings-audit")).to_have_count(0)  # the owners'
    settings.get_by_test_id("two-factor-start").click()
    key = settings.get_by_test_id("two-factor-secret")
    expect(key).to_be_visible()
    secret = key.inner_text().strip()
    expect(settings.get_by_test_id("two-factor-uri")).to_contain_text(f"secret={secret}")
    # The QR code is an image the page's policy lets load (a `data:` SVG).
    qr = settings.get_by_test_id("two-factor-qr")
    expect(qr).to_be_visible()
    page.wait_for_function(
        "document.querySelector('[data-testid=\"two-factor-qr\"]').naturalWidth > 0"
    )
    settings.get_by_test_id("two-factor-code").fill("12")
    settings.get_by_test_id("two-factor-confirm").click()
    expect(settings.get_by_test_id("two-factor-status")).to_contain_text("code")
    settings.get_by_test_id("two-factor-code").fill(code(secret))
    settings.get_by_test_id("two-factor-confirm").click()
    expect(settings.get_by_test_id("two-factor-state")).to_contain_text("On")
    expect(settings.get_by_test_id("two-factor-status")).to_contain_text("is on")
    settings.get_by_test_id("settings-close").click()
    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("login-email")).to_be_visible()

    # Signing in again: the password, then the code the page asks for.
    page.get_by_test_id("login-email").fill(email)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("login-code")).to_be_visible()
    expect(page.get_by_test_id("login-error")).to_contain_text("authenticator")
    expect(page.get_by_test_id("inbox")).to_be_hidden()
    page.get_by_test_id("login-code").fill(code(secret, 1))
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("inbox")).to_be_visible()
    expect(page.get_by_test_id("current-admin")).to_have_text("Tess")

    # The password, changed from the settings; then two-step sign-in off by the password.
    new_password = "another operator passphrase " + secrets.token_hex(4)
    page.get_by_test_id("settings-open").click()
    settings.get_by_test_id("password-current").fill(password)
    settings.get_by_test_id("password-new").fill("short")
    settings.get_by_test_id("password-submit").click()
    expect(settings.get_by_test_id("password-status")).to_contain_text("at least")
    settings.get_by_test_id("password-new").fill(new_password)
    settings.get_by_test_id("password-submit").click()
    expect(settings.get_by_test_id("password-status")).to_contain_text("changed")
    expect(settings.get_by_test_id("two-factor-state")).to_contain_text("On")
    settings.get_by_test_id("two-factor-proof").fill(new_password)
    settings.get_by_test_id("two-factor-off").click()
    expect(settings.get_by_test_id("two-factor-state")).to_contain_text("Off")
    assert errors == []

    # The password alone signs in again.
    answer = httpx.post(
        live_server.base_url + "/ui/session",
        json={"email": email, "password": new_password},
        timeout=15,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["two_factor"] is False


def test_an_owner_opens_the_audit_log_from_the_settings(
    context: BrowserContext, live_server: LiveServer
) -> None:
    # The demo's signed-in admin is the app's owner.
    page = open_login(
        context, live_server, live_server.operator_email, live_server.operator_password
    )
    expect(page.get_by_test_id("inbox")).to_be_visible()
    page.get_by_test_id("settings-open").click()
    page.get_by_test_id("settings-audit").click()
    expect(page.get_by_test_id("settings")).to_be_hidden()
    audit = page.get_by_test_id("audit")
    expect(audit).to_be_visible()
    expect(audit).to_contain_text("Audit log")
    expect(audit.get_by_role("columnheader", name="Who")).to_be_visible()
