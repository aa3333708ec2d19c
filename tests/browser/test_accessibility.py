"""Accessibility of both screens in a real browser.

axe-core (pinned in frontend/package-lock.json) finds no serious or critical violation on the
sign-in page, the inbox (the list, an open conversation, the settings) and the widget (closed,
open, on a 375 px phone). The inbox has a main landmark and an h1; its message list takes the
keyboard focus and scrolls with the keys; focus rings and field borders stand at 3:1 or more
against what is around them; on a phone the widget's open panel is a modal dialog.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from tests.browser.axe import assert_no_serious_violations
from tests.browser.conftest import LiveServer

WIDGET = "[data-threadline-widget]"


@pytest.fixture
def api(live_server: LiveServer) -> Any:
    with live_server.api() as client:
        yield client


def sign_in(context: BrowserContext, live: LiveServer) -> Page:
    page = context.new_page()
    page.goto(live.base_url + "/")
    page.get_by_test_id("login-email").fill(live.operator_email)
    page.get_by_test_id("login-password").fill(live.operator_password)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("conversation-row").first).to_be_visible()
    expect(page.get_by_test_id("view-open").get_by_test_id("view-count")).not_to_have_text("")
    return page


def open_site(context: BrowserContext, live: LiveServer) -> Page:
    page = context.new_page()
    page.goto(f"{live.base_url}/demo/site")
    expect(page.get_by_test_id("tl-launcher")).to_be_visible()
    return page


def first_conversation(api: httpx.Client, live: LiveServer) -> dict[str, Any]:
    answer = api.get(
        f"/ext/apps/{live.app_id}/inbox", params={"id_as_string": True, "paginate_count": 1}
    )
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()["data"]["conversations"][0]
    return found


def _channel(value: str) -> float:
    c = int(value) / 255
    return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4


def contrast(a: str, b: str) -> float:
    """WCAG contrast of two opaque CSS colours as getComputedStyle writes them (rgb(...))."""
    lums = []
    for colour in (a, b):
        r, g, bl = re.findall(r"\d+(?:\.\d+)?", colour)[:3]
        lums.append(0.2126 * _channel(r) + 0.7152 * _channel(g) + 0.0722 * _channel(bl))
    high, low = max(lums), min(lums)
    return (high + 0.05) / (low + 0.05)


# The first opaque background behind an element (its own, or an ancestor's, across a shadow root).
BACKGROUND_BEHIND = """(el) => {
    let node = el.parentElement || el.getRootNode().host;
    while (node) {
        const bg = getComputedStyle(node).backgroundColor;
        if (bg && bg !== "transparent" && !bg.startsWith("rgba(0, 0, 0, 0)")) return bg;
        const root = node.getRootNode();
        node = node.parentElement || (root instanceof ShadowRoot ? root.host : null);
    }
    return "rgb(255, 255, 255)";
}"""


def focus_ring(locator: Locator) -> tuple[str, float, str]:
    """The focused element's outline colour and width, and the background around it."""
    colour, width, focus_visible = locator.evaluate(
        "(el) => [getComputedStyle(el).outlineColor, parseFloat(getComputedStyle(el).outlineWidth),"
        " el.matches(':focus-visible')]"
    )
    assert focus_visible, "the element does not show a keyboard focus"
    return colour, width, locator.evaluate(BACKGROUND_BEHIND)


def expect_ring_stands_out(locator: Locator, what: str) -> None:
    colour, width, around = focus_ring(locator)
    assert width >= 2, f"{what}: focus ring {width}px wide"
    ratio = contrast(colour, around)
    assert ratio >= 3, f"{what}: focus ring {colour} on {around} is {ratio:.2f}:1"


def expect_border_stands_out(locator: Locator, what: str) -> None:
    border = locator.evaluate("(el) => getComputedStyle(el).borderTopColor")
    for against in (
        locator.evaluate("(el) => getComputedStyle(el).backgroundColor"),
        locator.evaluate(BACKGROUND_BEHIND),
    ):
        ratio = contrast(border, against)
        assert ratio >= 3, f"{what}: border {border} on {against} is {ratio:.2f}:1"


def widget_has_focus(page: Page) -> bool:
    found: bool = page.evaluate(
        f"() => document.activeElement === document.querySelector('{WIDGET}')"
    )
    return found


# --- axe-core ----------------------------------------------------------------------


def test_axe_finds_nothing_serious_on_the_sign_in_page(
    live_server: LiveServer, context: BrowserContext
) -> None:
    page = context.new_page()
    page.goto(live_server.base_url + "/")
    expect(page.get_by_test_id("login-email")).to_be_focused()
    assert_no_serious_violations(page, "the sign-in page")
    # And with an error shown.
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("login-error")).to_be_visible()
    assert_no_serious_violations(page, "the sign-in page with an error")


def test_axe_finds_nothing_serious_in_the_inbox_list_conversation_and_settings(
    live_server: LiveServer, context: BrowserContext, api: httpx.Client
) -> None:
    conv = first_conversation(api, live_server)
    # Enough messages for their list to scroll (with nothing in it to focus), and a note.
    for n in range(25):
        answer = api.post(
            f"/conversations/{conv['id']}/reply",
            json={"body": f"Message {n}: see <b>Settings</b>, then Reset"},
        )
        assert answer.status_code == 200, answer.text
    reply = api.post(
        f"/conversations/{conv['id']}/reply",
        json={"body": "Checked <i>twice</i>", "type": "note"},
    )
    assert reply.status_code == 200, reply.text
    page = sign_in(context, live_server)
    assert_no_serious_violations(page, "the inbox's list")

    row = page.locator(f'[data-testid="conversation-row"][data-conversation-id="{conv["id"]}"]')
    row.click()
    pane = page.get_by_test_id("conversation")
    expect(pane).to_have_attribute("data-conversation-id", conv["id"])
    expect(pane.get_by_test_id("part")).not_to_have_count(0)
    expect(page.get_by_test_id("user-conversations")).not_to_contain_text("Loading")
    page.wait_for_function(
        "() => { const el = document.querySelector('.parts');"
        " return el && el.scrollHeight > el.clientHeight; }"
    )
    assert_no_serious_violations(page, "an open conversation")
    page.get_by_test_id("mode-note").click()
    expect(page.get_by_test_id("composer")).to_have_attribute("data-mode", "note")
    assert_no_serious_violations(page, "an open conversation in note mode")

    page.get_by_test_id("settings-open").click()
    expect(page.get_by_test_id("settings")).to_be_visible()
    expect(page.get_by_test_id("two-factor-state")).to_be_visible()
    assert_no_serious_violations(page, "the settings")


def test_axe_finds_nothing_serious_in_the_widget_closed_open_and_on_a_phone(
    live_server: LiveServer,
    context: BrowserContext,
    second_context: BrowserContext,
    api: httpx.Client,
) -> None:
    page = open_site(context, live_server)
    assert_no_serious_violations(page, "the closed widget", WIDGET)
    page.get_by_test_id("tl-launcher").click()
    expect(page.get_by_test_id("tl-panel")).to_be_visible()
    assert_no_serious_violations(page, "the open widget, empty", WIDGET)
    box = page.get_by_test_id("tl-input")
    box.fill("Where is my order?")
    box.press("Enter")
    mine = page.locator('[data-testid="tl-message"][data-from="user"]')
    expect(mine.get_by_test_id("tl-message-time")).to_have_count(1)
    user = page.evaluate(
        "() => JSON.parse(Object.entries(localStorage)"
        ".find(([key]) => key.startsWith('threadline:'))[1]).user"
    )
    (conversation,) = api.get(f"/users/{user}/conversations").json()["data"]
    answer = api.post(
        f"/conversations/{conversation['id']}/reply",
        json={"body": "It left on <b>Monday</b>: https://example.com/track"},
    )
    assert answer.status_code == 200, answer.text
    expect(page.locator('[data-testid="tl-message"][data-from="admin"]')).to_have_count(1)
    assert_no_serious_violations(page, "the open widget with messages", WIDGET)

    phone = open_site(second_context, live_server)
    assert_no_serious_violations(phone, "the closed widget at 375 px", WIDGET)
    phone.get_by_test_id("tl-launcher").click()
    expect(phone.get_by_test_id("tl-panel")).to_be_visible()
    assert_no_serious_violations(phone, "the open widget at 375 px", WIDGET)


# --- Defect 4: landmarks, keyboard, contrast, the modal widget ------------------------


def test_the_inbox_has_a_main_landmark_an_h1_and_a_message_list_the_keyboard_scrolls(
    live_server: LiveServer, context: BrowserContext, api: httpx.Client
) -> None:
    conv = first_conversation(api, live_server)
    for n in range(30):
        answer = api.post(
            f"/conversations/{conv['id']}/reply",
            json={"body": f"Line {n} of a long conversation {secrets.token_hex(2)}"},
        )
        assert answer.status_code == 200, answer.text
    page = sign_in(context, live_server)
    expect(page.get_by_role("main")).to_have_count(1)
    expect(page.get_by_role("main").get_by_test_id("conversation-row").first).to_be_visible()
    expect(page.locator("h1")).to_have_count(1)
    expect(page.get_by_role("heading", level=1)).to_have_text("Threadline")

    page.locator(f'[data-testid="conversation-row"][data-conversation-id="{conv["id"]}"]').click()
    log = page.get_by_role("log", name="Messages")
    expect(log).to_have_attribute("tabindex", "0")
    expect(log.get_by_test_id("part")).not_to_have_count(0)
    # It opens at the newest message; the keyboard alone scrolls it back.
    page.wait_for_function(
        "(el) => el.scrollHeight > el.clientHeight + 100"
        " && el.scrollTop + el.clientHeight >= el.scrollHeight - 2",
        arg=log.element_handle(),
    )
    at_bottom = log.evaluate("(el) => el.scrollTop")
    page.get_by_test_id("tag-add").focus()
    while not log.evaluate("(el) => el === document.activeElement"):
        page.keyboard.press("Tab")
        focused = page.evaluate("() => document.activeElement?.dataset?.testid || ''")
        assert focused != "reply-input", "Tab passed over the message list"
    expect(log).to_be_focused()
    expect_ring_stands_out(log, "the message list")
    page.keyboard.press("PageUp")
    page.wait_for_function("([el, y]) => el.scrollTop < y", arg=[log.element_handle(), at_bottom])
    page.keyboard.press("End")
    page.wait_for_function(
        "([el, y]) => el.scrollTop >= y - 2", arg=[log.element_handle(), at_bottom]
    )


def test_focus_rings_and_field_borders_stand_out_at_3_to_1(
    live_server: LiveServer, context: BrowserContext
) -> None:
    page = sign_in(context, live_server)
    search = page.get_by_test_id("search")
    page.keyboard.press("/")
    expect(search).to_be_focused()
    expect_ring_stands_out(search, "the search box")
    expect_border_stands_out(search, "the search box")
    page.keyboard.press("Tab")
    expect(page.get_by_test_id("settings-open")).to_be_focused()
    expect_ring_stands_out(page.get_by_test_id("settings-open"), "the Settings button")

    page.get_by_test_id("conversation-row").first.click()
    expect(page.get_by_test_id("conversation")).to_be_visible()
    for testid in ("reply-input", "tag-input", "snooze-input", "assign-select", "channel-select"):
        expect_border_stands_out(page.get_by_test_id(testid), testid)
    page.get_by_test_id("reply-input").focus()
    page.keyboard.press("Shift+Tab")  # the Note tab is not in the tab order; Reply is
    expect(page.get_by_test_id("mode-reply")).to_be_focused()
    expect_ring_stands_out(page.get_by_test_id("mode-reply"), "the Reply tab")
    page.keyboard.press("ArrowRight")
    expect(page.get_by_test_id("mode-note")).to_be_focused()
    expect_border_stands_out(page.get_by_test_id("reply-input"), "the note box")

    widget = open_site(context, live_server)
    launcher = widget.get_by_test_id("tl-launcher")
    launcher.focus()
    widget.keyboard.press("Enter")
    expect(widget.get_by_test_id("tl-input")).to_be_focused()
    expect_border_stands_out(widget.get_by_test_id("tl-input"), "the widget's message box")
    widget.keyboard.press("Tab")
    expect(widget.get_by_test_id("tl-send")).to_be_focused()
    expect_ring_stands_out(widget.get_by_test_id("tl-send"), "the widget's send button")
    widget.keyboard.press("Escape")
    expect(launcher).to_be_focused()
    expect_ring_stands_out(launcher, "the widget's launcher")


def test_on_a_phone_the_open_widget_is_modal(
    live_server: LiveServer, context: BrowserContext, second_context: BrowserContext
) -> None:
    page = open_site(second_context, live_server)  # 375 px
    launcher = page.get_by_test_id("tl-launcher")
    panel = page.get_by_test_id("tl-panel")
    expect(panel).not_to_have_attribute("aria-modal", "true")
    launcher.focus()
    page.keyboard.press("Enter")
    expect(panel).to_be_visible()
    expect(panel).to_have_attribute("aria-modal", "true")
    expect(page.get_by_test_id("tl-input")).to_be_focused()
    # Tab and Shift+Tab go round the panel's controls, never out to the page behind it.
    for key in ["Tab"] * 8 + ["Shift+Tab"] * 8:
        page.keyboard.press(key)
        assert widget_has_focus(page), f"{key} left the widget"
    # Focus put on the page behind it by other means comes back.
    page.locator("button.buy").first.focus()
    expect(page.get_by_test_id("tl-input")).to_be_focused()
    assert widget_has_focus(page)
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(launcher).to_be_focused()
    # Closed, the page is the visitor's again.
    page.locator("button.buy").first.focus()
    expect(page.locator("button.buy").first).to_be_focused()

    # On a desktop the panel sits beside the page and is not modal.
    desk = open_site(context, live_server)
    desk.get_by_test_id("tl-launcher").click()
    expect(desk.get_by_test_id("tl-panel")).to_be_visible()
    expect(desk.get_by_test_id("tl-panel")).not_to_have_attribute("aria-modal", "true")
    desk.locator("button.buy").first.focus()
    expect(desk.locator("button.buy").first).to_be_focused()
