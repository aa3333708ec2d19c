"""The chat widget in a real browser, embedded in the demo shop page (/demo/site).

A visitor writes (stored, checked through the API), operator replies arrive live with the
unread badge while the panel is closed, operator typing shows, read receipts appear, the
history survives a reload, times are the viewer's, text is never HTML, the keyboard is
enough, and a message written while offline is sent once the network is back, once.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from playwright.sync_api import BrowserContext, Dialog, Page, expect

from tests.browser.conftest import LiveServer


def open_site(context: BrowserContext, server: LiveServer) -> Page:
    page = context.new_page()
    page.goto(f"{server.base_url}/demo/site")
    expect(page.get_by_test_id("tl-launcher")).to_be_visible()
    return page


def open_panel(page: Page) -> None:
    page.get_by_test_id("tl-launcher").click()
    expect(page.get_by_test_id("tl-panel")).to_be_visible()


def write(page: Page, text: str) -> None:
    box = page.get_by_test_id("tl-input")
    box.fill(text)
    box.press("Enter")


def visitor_user(page: Page) -> int:
    """Threadline's id of the visitor's user, from the widget's storage."""
    saved: dict[str, Any] = page.evaluate(
        "() => JSON.parse(Object.entries(localStorage)"
        ".find(([key]) => key.startsWith('threadline:'))[1])"
    )
    return int(saved["user"])


def only_conversation(api: httpx.Client, user: int) -> dict[str, Any]:
    (conversation,) = api.get(f"/users/{user}/conversations").json()["data"]
    found: dict[str, Any] = conversation
    return found


def user_messages(page: Page) -> Any:
    return page.locator('[data-testid="tl-message"][data-from="user"]')


def admin_messages(page: Page) -> Any:
    return page.locator('[data-testid="tl-message"][data-from="admin"]')


def test_visitor_chat_with_live_replies_badge_typing_receipts_and_reload(
    live_server: LiveServer, context: BrowserContext
) -> None:
    page = open_site(context, live_server)
    open_panel(page)
    expect(page.get_by_test_id("tl-input")).to_be_focused()
    write(page, "Hello, is the Guji in stock?")
    mine = user_messages(page)
    expect(mine).to_have_count(1)
    expect(mine.get_by_test_id("tl-message-body")).to_have_text("Hello, is the Guji in stock?")
    expect(mine.get_by_test_id("tl-message-time")).to_be_visible()
    expect(page.get_by_test_id("tl-connection")).to_be_hidden()

    api = live_server.api()
    user = visitor_user(page)
    conversation = only_conversation(api, user)
    cid = conversation["id"]
    parts = api.get(f"/conversations/{cid}/parts").json()["data"]
    assert [(p["type"], p["body"], p["from"]) for p in parts] == [
        ("reply_user", "Hello, is the Guji in stock?", user)
    ]
    # The time is shown in the viewer's time zone (the context's is Europe/Berlin).
    created = datetime.fromtimestamp(parts[0]["created"], ZoneInfo("Europe/Berlin"))
    shown = mine.get_by_test_id("tl-message-time").inner_text()
    assert created.strftime("%H:%M") in shown or created.strftime("%I:%M") in shown, shown

    # Operator typing, then a reply: both live. Answering marks the visitor's part read.
    r = api.post(f"/ext/conversations/{cid}/typing", json={"body": "Let me look"})
    assert r.status_code == 200, r.text
    expect(page.get_by_test_id("tl-typing")).to_be_visible()
    expect(page.get_by_test_id("tl-typing")).to_contain_text("typing")
    api.post(f"/conversations/{cid}/reply", json={"body": "Yes, 40 bags left."}).raise_for_status()
    expect(admin_messages(page)).to_have_count(1)
    expect(admin_messages(page).get_by_test_id("tl-message-body")).to_have_text(
        "Yes, 40 bags left."
    )
    expect(page.get_by_test_id("tl-typing")).to_be_hidden()
    expect(mine.get_by_test_id("tl-read")).to_be_visible()
    # The panel is open: the reply is read at once, and no badge shows.
    expect(page.get_by_test_id("tl-unread")).to_be_hidden()
    # The widget marks it read with a request of its own, once the reply is shown.
    _wait_for(lambda: _user_unread(api, cid) == 0)

    # Panel closed: replies raise the unread badge, live.
    page.get_by_test_id("tl-launcher").click()
    expect(page.get_by_test_id("tl-panel")).to_be_hidden()
    expect(page.get_by_test_id("tl-launcher")).to_be_focused()
    api.post(f"/conversations/{cid}/reply", json={"body": "Shall I reserve one?"})
    expect(page.get_by_test_id("tl-unread")).to_have_text("1")
    api.post(f"/conversations/{cid}/reply", json={"body": "It ships Monday."})
    expect(page.get_by_test_id("tl-unread")).to_have_text("2")
    assert _user_unread(api, cid) == 2
    # Opening reads them: the badge goes, and the operators see it.
    open_panel(page)
    expect(page.get_by_test_id("tl-unread")).to_be_hidden()
    expect(admin_messages(page)).to_have_count(3)
    _wait_for(lambda: _user_unread(api, cid) == 0)

    # The anonymous visitor is remembered: a reload shows the whole history.
    page.reload()
    expect(page.get_by_test_id("tl-unread")).to_be_hidden()
    open_panel(page)
    expect(page.get_by_test_id("tl-message")).to_have_count(4)
    expect(page.get_by_test_id("tl-message-body")).to_have_text(
        [
            "Hello, is the Guji in stock?",
            "Yes, 40 bags left.",
            "Shall I reserve one?",
            "It ships Monday.",
        ]
    )
    write(page, "Yes please!")
    # Stored once its time shows (until then it is shown as "Sending…").
    expect(user_messages(page).get_by_test_id("tl-message-time")).to_have_count(2)
    assert visitor_user(page) == user
    assert only_conversation(api, user)["replies_count"] == 5


def test_visitor_text_stays_text_and_operator_html_is_cleaned(
    live_server: LiveServer, context: BrowserContext
) -> None:
    dialogs: list[str] = []
    page = open_site(context, live_server)

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    open_panel(page)
    write(page, "<b>bold?</b>")
    expect(user_messages(page).get_by_test_id("tl-message-body")).to_have_text("<b>bold?</b>")
    # Stored once its time shows (until then it is shown as "Sending…").
    expect(user_messages(page).get_by_test_id("tl-message-time")).to_be_visible()
    api = live_server.api()
    cid = only_conversation(api, visitor_user(page))["id"]
    attack = "<i>Hello</i><img src=x onerror=alert(1)><script>alert(2)</script>"
    api.post(f"/conversations/{cid}/reply", json={"body": attack}).raise_for_status()
    body = admin_messages(page).get_by_test_id("tl-message-body")
    expect(body).to_have_text("Hello")
    expect(body.locator("i")).to_have_text("Hello")
    # No <img> or <script> exists anywhere (the attack): no dialog can open later, so
    # there is no need to wait for one; the visitor's <b> stayed text.
    assert page.locator("[data-threadline-widget] img, img[src=x]").count() == 0
    assert (
        page.evaluate(
            "() => document.querySelector('[data-threadline-widget]').shadowRoot"
            ".querySelectorAll('img, script, b').length"
        )
        == 0
    )
    assert dialogs == []


def test_at_375px_with_the_keyboard_only(
    live_server: LiveServer, second_context: BrowserContext
) -> None:
    page = open_site(second_context, live_server)
    launcher = page.get_by_test_id("tl-launcher")
    launcher.focus()
    page.keyboard.press("Enter")
    panel = page.get_by_test_id("tl-panel")
    expect(panel).to_be_visible()
    box = panel.bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= 375
    assert box["y"] + box["height"] <= 740
    expect(page.get_by_test_id("tl-input")).to_be_focused()
    page.keyboard.type("Typed with the keyboard")
    page.keyboard.press("Enter")
    expect(user_messages(page).get_by_test_id("tl-message-body")).to_have_text(
        "Typed with the keyboard"
    )
    # The send button works from the keyboard too.
    page.keyboard.type("And sent with the button")
    page.keyboard.press("Tab")
    expect(page.get_by_test_id("tl-send")).to_be_focused()
    page.keyboard.press("Enter")
    expect(user_messages(page).get_by_test_id("tl-message-time")).to_have_count(2)
    # The input and the send button are inside the screen, and readable.
    for testid in ("tl-input", "tl-send"):
        found = page.get_by_test_id(testid).bounding_box()
        assert found is not None
        assert found["x"] >= 0, testid
        assert found["x"] + found["width"] <= 375, testid
    size = page.get_by_test_id("tl-message-body").first.evaluate(
        "node => parseFloat(getComputedStyle(node).fontSize)"
    )
    assert size >= 14
    # Escape closes the panel and gives the focus back to the launcher.
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(launcher).to_be_focused()
    # Times follow this viewer's zone (Asia/Tokyo).
    api = live_server.api()
    cid = only_conversation(api, visitor_user(page))["id"]
    first = api.get(f"/conversations/{cid}/parts").json()["data"][-1]
    created = datetime.fromtimestamp(first["created"], ZoneInfo("Asia/Tokyo"))
    page.keyboard.press("Enter")
    shown = page.get_by_test_id("tl-message-time").first.inner_text()
    assert created.strftime("%H:%M") in shown or created.strftime("%I:%M") in shown, shown


def test_offline_shows_a_message_and_sends_once_when_back(
    live_server: LiveServer, context: BrowserContext
) -> None:
    page = open_site(context, live_server)
    open_panel(page)
    write(page, "First, online")
    expect(user_messages(page).get_by_test_id("tl-message-time")).to_have_count(1)
    api = live_server.api()
    user = visitor_user(page)

    context.set_offline(True)
    write(page, "Written offline")
    expect(page.get_by_test_id("tl-connection")).to_be_visible()
    expect(page.get_by_test_id("tl-connection")).to_contain_text(
        re.compile("reach|reconnect", re.I)
    )
    expect(user_messages(page).nth(1)).to_contain_text("retrying")
    context.set_offline(False)
    expect(user_messages(page).nth(1).get_by_test_id("tl-message-time")).to_be_visible(
        timeout=30_000
    )
    expect(page.get_by_test_id("tl-connection")).to_be_hidden(timeout=30_000)
    cid = only_conversation(api, user)["id"]
    bodies = [p["body"] for p in api.get(f"/conversations/{cid}/parts").json()["data"]]
    assert sorted(bodies) == ["First, online", "Written offline"]
    # And live replies still arrive after the reconnection.
    api.post(f"/conversations/{cid}/reply", json={"body": "Back online?"}).raise_for_status()
    expect(admin_messages(page).get_by_test_id("tl-message-body")).to_have_text("Back online?")


def _user_unread(api: httpx.Client, cid: int) -> int:
    count: int = api.get(f"/conversations/{cid}").json()["data"]["user_unread_count"]
    return count


def _wait_for(check: Any, seconds: float = 15) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
