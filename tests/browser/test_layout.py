"""The inbox's layout at 1280, 1024 and 768 px, measured in a real browser.

Long names keep the time in the row; many and long tags and a long operator's name never make
the page wider than the window; from 1024 px the list and the conversation stand side by side
with room for the conversation, and below it the conversation takes the list's place, with a
way back; the connection banner never pushes the Send button off the screen.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from tests.browser.conftest import LiveServer

HEIGHT = 800
LONG_USER = "customer-" + "w" * 80
LONG_ADMIN = "Maximiliana Alexandrina Konstantinopolskaya-" + "Wolkenstein" * 6
TAGS = ["vip", "billing", "refund-requested", "a-very-long-tag-" + "x" * 120, *"abcdefghij"]


@pytest.fixture(scope="module")
def crowded(live_server: LiveServer) -> dict[str, Any]:
    """A conversation of a user with a long name, with many tags (one long), assigned to an
    operator with a long name; and that operator's sign-in."""
    email = f"long-{secrets.token_hex(4)}@example.com"
    password = "a long operator passphrase " + secrets.token_hex(4)
    with live_server.api() as api:
        admin = ok(
            api.post(
                f"/ext/apps/{live_server.app_id}/admins",
                json={"name": LONG_ADMIN, "email": email, "password": password},
                params={"id_as_string": True},
            )
        )["data"]
        cid = str(
            ok(
                api.post(
                    f"/users/{LONG_USER}/startconversation",
                    json={"body": "Hello " + "long words " * 30, "by_user_id": True},
                    params={"id_as_string": True},
                )
            )["data"]["id"]
        )
        for tag in TAGS:
            ok(api.post(f"/conversations/{cid}/tag", json={"tag": tag}))
        ok(api.post(f"/conversations/{cid}/assign", json={"admin": admin["id"]}))
    return {"id": cid, "email": email, "password": password}


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def sign_in(context: BrowserContext, live: LiveServer, email: str, password: str) -> Page:
    page = context.new_page()
    page.goto(live.base_url + "/")
    page.get_by_test_id("login-email").fill(email)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("current-admin")).to_have_text(LONG_ADMIN)
    expect(page.get_by_test_id("conversation-row").first).to_be_visible()
    return page


def box(locator: Locator) -> dict[str, float]:
    found = locator.bounding_box()
    assert found is not None, f"{locator} is not shown"
    return found


def right(b: dict[str, float]) -> float:
    return b["x"] + b["width"]


def expect_no_overflow(page: Page, width: int, where: str) -> None:
    wide = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.body.scrollWidth, innerWidth]"
    )
    assert wide[2] == width, f"{where}: {wide}"
    assert wide[0] <= width, f"{where}: the page is wider than the window: {wide}"
    assert wide[1] <= width, f"{where}: the body is wider than the window: {wide}"


def expect_inside(inner: Locator, outer: Locator, what: str) -> None:
    i, o = box(inner), box(outer)
    assert i["x"] >= o["x"] - 0.5, f"{what}: {i} outside {o}"
    assert right(i) <= right(o) + 0.5, f"{what}: {i} outside {o}"


def expect_row_fits(page: Page, cid: str) -> None:
    row = page.locator(f'[data-testid="conversation-row"][data-conversation-id="{cid}"]')
    expect(row).to_be_visible()
    time_box = box(row.get_by_test_id("row-time"))
    user_box = box(row.get_by_test_id("row-user"))
    list_box = box(page.locator(".list"))
    # The time stays whole, inside the row and the list, right of the (shortened) name.
    assert right(time_box) <= right(list_box) + 0.5, (time_box, list_box)
    assert right(user_box) <= time_box["x"] + 0.5, (user_box, time_box)
    expect_inside(row.get_by_test_id("row-tags"), page.locator(".list"), "the row's tags")
    expect_inside(row.get_by_test_id("row-assignee"), page.locator(".list"), "the row's assignee")


def expect_pane_fits(page: Page, width: int) -> None:
    pane = page.get_by_test_id("conversation")
    expect(pane.get_by_test_id("tag")).to_have_count(len(TAGS))
    for tag in pane.get_by_test_id("tag").all():
        expect_inside(tag, pane, "a tag")
    expect_inside(pane.locator(".conv-title"), pane, "the title")
    expect_inside(page.get_by_test_id("assign-select"), pane, "the assignee menu")
    # Nothing in the user card is cut off at its side (its long site id wraps).
    card = page.get_by_test_id("user-card")
    assert card.evaluate("(el) => el.scrollWidth <= el.clientWidth"), box(card)
    send = box(page.get_by_test_id("send-reply"))
    assert right(send) <= width, send
    assert send["y"] + send["height"] <= HEIGHT, send


@pytest.mark.parametrize("width", [1280, 1024])
def test_side_by_side_long_names_and_tags_stay_inside_the_window(
    live_server: LiveServer,
    context: BrowserContext,
    crowded: dict[str, Any],
    width: int,
) -> None:
    page = sign_in(context, live_server, crowded["email"], crowded["password"])
    page.set_viewport_size({"width": width, "height": HEIGHT})
    expect_no_overflow(page, width, "the list")
    expect_row_fits(page, crowded["id"])
    logout = box(page.get_by_test_id("logout"))
    assert right(logout) <= width, logout
    # The long name of the operator leaves the search box its room.
    assert box(page.get_by_test_id("search"))["width"] >= 150

    page.locator(
        f'[data-testid="conversation-row"][data-conversation-id="{crowded["id"]}"] .row-button'
    ).click()
    pane = page.get_by_test_id("conversation")
    expect(pane).to_have_attribute("data-conversation-id", crowded["id"])
    expect(page.get_by_test_id("user-conversations")).not_to_contain_text("Loading")
    expect_no_overflow(page, width, "an open conversation")
    # The list and the conversation side by side, the conversation with room to read.
    expect(page.locator(".list")).to_be_visible()
    expect(page.get_by_test_id("back-to-list")).to_be_hidden()
    assert box(pane)["width"] >= (460 if width >= 1280 else 340), box(pane)
    assert (
        box(page.locator(".list"))["x"] + box(page.locator(".list"))["width"]
        <= box(pane)["x"] + 0.5
    )
    expect_row_fits(page, crowded["id"])
    expect_pane_fits(page, width)


def test_below_1024_the_conversation_takes_the_lists_place_with_a_way_back(
    live_server: LiveServer, context: BrowserContext, crowded: dict[str, Any]
) -> None:
    width = 768
    page = sign_in(context, live_server, crowded["email"], crowded["password"])
    page.set_viewport_size({"width": width, "height": HEIGHT})
    expect_no_overflow(page, width, "the list at 768 px")
    expect_row_fits(page, crowded["id"])
    assert box(page.locator(".list"))["width"] >= 400
    button = page.locator(
        f'[data-testid="conversation-row"][data-conversation-id="{crowded["id"]}"] .row-button'
    )
    button.focus()
    page.keyboard.press("Enter")
    pane = page.get_by_test_id("conversation")
    expect(pane).to_have_attribute("data-conversation-id", crowded["id"])
    expect(page.locator(".list")).to_be_hidden()
    back = page.get_by_test_id("back-to-list")
    expect(back).to_be_visible()
    # The keyboard focus went with the conversation, not to the page's body.
    expect(back).to_be_focused()
    expect_no_overflow(page, width, "a conversation at 768 px")
    assert box(pane)["width"] >= 360, box(pane)
    expect_pane_fits(page, width)
    # Back: the list again, the focus on the conversation's row.
    page.keyboard.press("Enter")
    expect(page.locator(".list")).to_be_visible()
    expect(pane).to_have_count(0)
    expect(button).to_be_focused()
    expect_no_overflow(page, width, "back to the list at 768 px")


@pytest.mark.parametrize("width", [1280, 768])
def test_the_connection_banner_never_pushes_send_off_the_screen(
    live_server: LiveServer,
    context: BrowserContext,
    crowded: dict[str, Any],
    width: int,
) -> None:
    page = sign_in(context, live_server, crowded["email"], crowded["password"])
    page.set_viewport_size({"width": width, "height": HEIGHT})
    page.locator(
        f'[data-testid="conversation-row"][data-conversation-id="{crowded["id"]}"] .row-button'
    ).click()
    expect(page.get_by_test_id("conversation")).to_be_visible()
    send = page.get_by_test_id("send-reply")
    expect(send).to_be_in_viewport()
    context.set_offline(True)
    try:
        banner = page.get_by_test_id("connection")
        expect(banner).to_be_visible()
        b, s = box(banner), box(send)
        assert b["y"] >= 0, b
        assert b["y"] + b["height"] <= s["y"], (b, s)
        assert s["y"] + s["height"] <= HEIGHT, s
        assert page.evaluate("() => document.documentElement.scrollHeight") <= HEIGHT
        expect(send).to_be_in_viewport()
    finally:
        context.set_offline(False)
    expect(page.get_by_test_id("connection")).to_be_hidden()
