"""The operators' inbox in a real browser, against a real server over demo data.

Each test signs in as the demo operator and checks what the screen shows against what
the API answers at that moment (the module's tests share one server, so none relies on
another's leftovers).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from tests.browser.conftest import LiveServer

VIEWER_ZONE = ZoneInfo("Europe/Berlin")  # the `context` fixture's time zone
PAGE_SIZE = 20


# --- Helpers -----------------------------------------------------------------------


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def sign_in(context: BrowserContext, live: LiveServer) -> Page:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live.base_url + "/")
    page.get_by_test_id("login-email").fill(live.operator_email)
    page.get_by_test_id("login-password").fill(live.operator_password)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("current-admin")).to_have_text("Olivia Bennett")
    expect(page.get_by_test_id("view-open").get_by_test_id("view-count")).not_to_have_text("")
    page.set_default_timeout(15_000)
    assert errors == []
    return page


def operator_id(api: httpx.Client, live: LiveServer) -> str:
    admins = ok(api.get(f"/ext/apps/{live.app_id}/admins", params={"id_as_string": True}))
    (me,) = [a["id"] for a in admins["data"] if a["email"] == live.operator_email]
    return str(me)


def inbox(api: httpx.Client, live: LiveServer, **filters: Any) -> dict[str, Any]:
    params = {"id_as_string": True, "paginate_count": PAGE_SIZE, **filters}
    data: dict[str, Any] = ok(api.get(f"/ext/apps/{live.app_id}/inbox", params=params))
    return data


def conversation(api: httpx.Client, cid: str) -> dict[str, Any]:
    data: dict[str, Any] = ok(api.get(f"/conversations/{cid}", params={"id_as_string": True}))[
        "data"
    ]
    return data


def row(page: Page, cid: str) -> Locator:
    return page.locator(f'[data-testid="conversation-row"][data-conversation-id="{cid}"]')


def count_of(page: Page, view: str) -> Locator:
    return page.get_by_test_id(f"view-{view}").get_by_test_id("view-count")


def row_ids(page: Page) -> list[str]:
    return [
        str(r.get_attribute("data-conversation-id"))
        for r in page.get_by_test_id("conversation-row").all()
    ]


def shown_time(seconds: float) -> str:
    """How the inbox writes a time: "14:05" today, "Nov 26, 14:05" before (viewer's zone)."""
    at = datetime.fromtimestamp(seconds, VIEWER_ZONE)
    if at.date() == datetime.now(VIEWER_ZONE).date():
        return f"{at:%H:%M}"
    return f"{at:%b} {at.day}, {at:%H:%M}"


def user_name(user: dict[str, Any]) -> str:
    return str(user["props"].get("$name") or user["user_id"])


def expect_counts_match_api(page: Page, api: httpx.Client, live: LiveServer) -> dict[str, Any]:
    counts = inbox(api, live, paginate_count=1)["data"]["counts"]
    me = operator_id(api, live)
    mine = {a["id"]: a["count"] for a in counts["assignees"]}.get(me, 0)
    expect(count_of(page, "open")).to_have_text(str(counts["open"]))
    expect(count_of(page, "delayed")).to_have_text(str(counts["delayed"]))
    expect(count_of(page, "closed")).to_have_text(str(counts["closed"]))
    expect(count_of(page, "unassigned")).to_have_text(str(counts["unassigned"]))
    expect(count_of(page, "mine")).to_have_text(str(mine))
    by_channel = {c["id"]: c["count"] for c in counts["channels"]}
    channels = ok(api.get(f"/apps/{live.app_id}/channels", params={"id_as_string": True}))
    for channel in channels["data"]:
        expect(count_of(page, f"channel-{channel['id']}")).to_have_text(
            str(by_channel.get(channel["id"], 0))
        )
    for tag in counts["tags"]:
        expect(count_of(page, f"tag-{tag['tag']}")).to_have_text(str(tag["count"]))
    expect(page.locator('[data-testid^="view-tag-"]')).to_have_count(len(counts["tags"]))
    return dict(counts)


def user_reply(api: httpx.Client, conv: dict[str, Any], body: str) -> dict[str, Any]:
    """The conversation's user writes, through the API (the demo token has `as-user`)."""
    answer = api.post(
        f"/conversations/{conv['id']}/reply",
        json={"body": body, "from_user": conv["user"]["id"], "id_as_string": True},
    )
    data: dict[str, Any] = ok(answer)["data"]
    return data


class HeldGet:
    """Holds the page's `nth` GET of a conversation: fetched from the server at once, given
    to the page only when the test fulfils it. Every other request goes through."""

    def __init__(self, page: Page, cid: str, nth: int) -> None:
        self.page, self.nth, self.count = page, nth, 0
        self.held: list[tuple[Any, Any]] = []
        self.pattern = re.compile(rf"/conversations/{cid}\?")
        page.route(self.pattern, self._route)

    def _route(self, route: Any) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        self.count += 1
        if self.count == self.nth:
            self.held.append((route, route.fetch()))
        else:
            route.continue_()

    def wait(self, page: Page, failure: str) -> tuple[Any, Any]:
        """The held request and its answer, once the page has sent it."""
        for _ in range(100):
            if self.held:
                return self.held[0]
            page.wait_for_timeout(50)
        raise AssertionError(failure)

    def stop(self) -> None:
        self.page.unroute(self.pattern)


# Counts the answers the page's code has read (api.js reads each with response.json()).
COUNT_READ_ANSWERS = """
(() => {
  const json = Response.prototype.json;
  window.__answersRead = [];
  Response.prototype.json = function () {
    const url = this.url;
    return json.call(this).then((value) => { window.__answersRead.push(url); return value; });
  };
})();
"""


def fulfil_and_wait_until_read(page: Page, route: Any, answer: Any) -> None:
    """Give the page a held answer and return once its code has read it (the page must
    have been opened with COUNT_READ_ANSWERS). What the page does with an answer once read
    runs in the same task, so it is done when the next evaluate runs."""
    url = route.request.url
    before = page.evaluate("(u) => window.__answersRead.filter((x) => x === u).length", url)
    route.fulfill(response=answer)
    page.wait_for_function(
        "([u, n]) => window.__answersRead.filter((x) => x === u).length > n", arg=[url, before]
    )


@pytest.fixture
def api(live_server: LiveServer) -> Any:
    with live_server.api() as client:
        yield client


# --- Tests -------------------------------------------------------------------------


def test_sign_in_refuses_a_wrong_password_keeps_the_session_and_signs_out(
    context: BrowserContext, live_server: LiveServer, api: httpx.Client
) -> None:
    page = context.new_page()
    page.goto(live_server.base_url + "/")
    expect(page.get_by_test_id("inbox")).to_be_hidden()
    page.get_by_test_id("login-email").fill(live_server.operator_email)
    page.get_by_test_id("login-password").fill("not the password")
    page.get_by_test_id("login-password").press("Enter")
    expect(page.get_by_test_id("login-error")).to_have_text("Wrong e-mail or password.")
    expect(page.get_by_test_id("inbox")).to_be_hidden()
    page.get_by_test_id("login-password").fill(live_server.operator_password)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("inbox")).to_be_visible()
    expect(page.get_by_test_id("current-admin")).to_have_text("Olivia Bennett")
    expect(page.get_by_test_id("login-error")).to_be_hidden()
    token = page.evaluate("JSON.parse(sessionStorage.getItem('threadline.inbox.session')).token")
    # A reload keeps the session (this tab's storage); the stream connects.
    page.reload()
    expect(page.get_by_test_id("current-admin")).to_have_text("Olivia Bennett")
    expect(page.get_by_test_id("connection")).to_be_hidden()
    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("login-email")).to_be_visible()
    expect(page.get_by_test_id("inbox")).to_be_hidden()
    revoked = httpx.get(
        f"{live_server.base_url}/ext/apps/{live_server.app_id}/inbox",
        headers={"Authorization": f"Token {token}"},
    )
    assert revoked.status_code == 401


def test_views_and_rows_show_what_the_api_answers(
    context: BrowserContext, live_server: LiveServer, api: httpx.Client
) -> None:
    page = sign_in(context, live_server)
    expect(page.get_by_test_id("view-open")).to_have_attribute("aria-current", "page")
    expect_counts_match_api(page, api, live_server)
    for view, filters in (("open", {}), ("closed", {"status": "closed"})):
        page.get_by_test_id(f"view-{view}").click()
        expect(page.get_by_test_id(f"view-{view}")).to_have_attribute("aria-current", "page")
        listed = inbox(api, live_server, **filters)["data"]["conversations"]
        expect(page.get_by_test_id("conversation-row")).to_have_count(len(listed))
        assert row_ids(page) == [c["id"] for c in listed]  # newest first, as the API
        for c in listed:
            r = row(page, c["id"])
            expect(r.get_by_test_id("row-user")).to_have_text(user_name(c["user"]))
            expect(r.get_by_test_id("row-snippet")).to_have_text(
                c["important_part_last"]["body"].strip()
            )
            expect(r.get_by_test_id("row-time")).to_have_text(shown_time(c["last_update"]))
            assignee = c["assignee"]["name"] if c["assignee"] else "Unassigned"
            expect(r.get_by_test_id("row-assignee")).to_have_text(assignee)
            expect(r.get_by_test_id("row-tags")).to_have_text("".join(c["tags"]))
            if c["admin_unread_count"]:
                expect(r.get_by_test_id("row-unread")).to_have_text(str(c["admin_unread_count"]))
            else:
                expect(r.get_by_test_id("row-unread")).to_have_count(0)
    expect(page.get_by_test_id("view-open")).not_to_have_attribute("aria-current", "page")


def test_open_a_conversation_reply_note_assign_and_tag(
    context: BrowserContext, live_server: LiveServer, api: httpx.Client
) -> None:
    me = operator_id(api, live_server)
    page = sign_in(context, live_server)
    # A conversation with a fresh user message nobody has read.
    target = inbox(api, live_server)["data"]["conversations"][0]
    user_reply(api, target, "Is anyone there?")
    cid = target["id"]
    expect(row(page, cid).get_by_test_id("row-unread")).to_have_text(
        str(conversation(api, cid)["admin_unread_count"])
    )
    row(page, cid).click()
    pane = page.get_by_test_id("conversation")
    expect(pane).to_have_attribute("data-conversation-id", cid)
    expect(page.get_by_test_id("conversation-state")).to_have_text("open")
    parts = ok(api.get(f"/conversations/{cid}/parts", params={"paginate_count": 50}))["data"]
    expect(pane.get_by_test_id("part")).to_have_count(len(parts))
    expect(pane.get_by_test_id("part").last).to_have_attribute("data-part-type", "reply_user")
    expect(pane.get_by_test_id("part-body").last).to_have_text("Is anyone there?")
    # Opening it marked it read.
    expect(row(page, cid).get_by_test_id("row-unread")).to_have_count(0)
    assert conversation(api, cid)["admin_unread_count"] == 0
    card = page.get_by_test_id("user-card")
    props = target["user"]["props"]
    expect(card).to_contain_text(props["$name"])
    expect(card).to_contain_text(props["$email"])
    expect(card).to_contain_text(props["plan"])
    others = ok(
        api.get(f"/users/{target['user']['id']}/conversations", params={"id_as_string": True})
    )["data"]
    expect(card.get_by_test_id("user-conversations").locator("button")).to_have_count(
        len([o for o in others if o["id"] != cid])
    )

    # A reply, sent with Enter.
    page.get_by_test_id("reply-input").fill("Yes! Looking into it now.")
    page.get_by_test_id("reply-input").press("Enter")
    last = pane.get_by_test_id("part").last
    expect(last).to_have_attribute("data-part-type", "reply_admin")
    expect(last.get_by_test_id("part-body")).to_have_text("Yes! Looking into it now.")
    expect(page.get_by_test_id("reply-input")).to_have_value("")
    # A note, which looks different.
    page.get_by_test_id("mode-note").click()
    page.get_by_test_id("reply-input").fill("Check the payment logs first.")
    page.get_by_test_id("send-note").click()
    note = pane.locator('[data-testid="part"][data-part-type="note"]').last
    expect(note.get_by_test_id("part-body")).to_have_text("Check the payment logs first.")
    expect(note).to_contain_text("Internal note")
    # Both read in one go from the live page: a live update may replace the part list
    # between two separate reads (a replaced element has no computed style).
    note_color, reply_color = page.evaluate(
        """() => ["note", "reply_admin"].map(type => {
            const bodies = document.querySelectorAll(
                `[data-testid="conversation"] [data-part-type="${type}"] [data-testid="part-body"]`
            );
            return getComputedStyle(bodies[bodies.length - 1]).backgroundColor;
        })"""
    )
    assert note_color
    assert reply_color
    assert note_color != reply_color
    newest = ok(api.get(f"/conversations/{cid}/parts", params={"id_as_string": True}))["data"]
    assert [(p["type"], p["body"], p["from"]["id"]) for p in newest[:2]] == [
        ("note", "Check the payment logs first.", me),
        ("reply_admin", "Yes! Looking into it now.", me),
    ]
    assert all(p["random_id"] for p in newest[:2])
    expect(row(page, cid).get_by_test_id("row-snippet")).to_have_text(
        "Check the payment logs first."
    )

    # Assign to me.
    page.get_by_test_id("assign-me").click()
    expect(page.get_by_test_id("assign-select")).to_have_value(me)
    expect(row(page, cid).get_by_test_id("row-assignee")).to_have_text("Olivia Bennett")
    expect(pane.get_by_test_id("part").last).to_have_attribute("data-part-type", "assigned")
    assert conversation(api, cid)["assignee"]["id"] == me
    # Then to another admin through the list, and back to nobody.
    page.get_by_test_id("assign-select").select_option(label="Sam Carter")
    expect(row(page, cid).get_by_test_id("row-assignee")).to_have_text("Sam Carter")
    page.get_by_test_id("assign-select").select_option("")
    expect(row(page, cid).get_by_test_id("row-assignee")).to_have_text("Unassigned")
    assert conversation(api, cid)["assignee"] is None
    page.get_by_test_id("assign-me").click()
    expect(row(page, cid).get_by_test_id("row-assignee")).to_have_text("Olivia Bennett")
    expect_counts_match_api(page, api, live_server)

    # A tag: added with Enter, shown, counted, removed.
    tag = f"t{secrets.token_hex(3)}"
    page.get_by_test_id("tag-input").fill(tag)
    page.get_by_test_id("tag-input").press("Enter")
    expect(page.get_by_test_id("tag")).to_have_text([*target["tags"], tag])
    expect(count_of(page, f"tag-{tag}")).to_have_text("1")
    expect(row(page, cid).get_by_test_id("row-tags")).to_contain_text(tag)
    assert tag in conversation(api, cid)["tags"]
    page.get_by_test_id("tag").filter(has_text=tag).get_by_test_id("tag-remove").click()
    expect(page.get_by_test_id("tag").filter(has_text=tag)).to_have_count(0)
    expect(page.get_by_test_id(f"view-tag-{tag}")).to_have_count(0)
    assert tag not in conversation(api, cid)["tags"]
    # Moved to a channel.
    page.get_by_test_id("channel-select").select_option(label="Billing")
    expect(pane.get_by_test_id("part").last).to_have_attribute("data-part-type", "channel_changed")
    expect(pane.get_by_test_id("part-body").last).to_contain_text("moved it to Billing")
    assert conversation(api, cid)["channel"]["name"] == "Billing"
    expect_counts_match_api(page, api, live_server)


def test_close_reopen_and_snooze(
    context: BrowserContext, live_server: LiveServer, api: httpx.Client
) -> None:
    page = sign_in(context, live_server)
    target = inbox(api, live_server)["data"]["conversations"][-1]
    cid = target["id"]
    row(page, cid).click()
    expect(page.get_by_test_id("conversation-state")).to_have_text("open")
    page.get_by_test_id("close").click()
    expect(page.get_by_test_id("conversation-state")).to_have_text("closed")
    expect(row(page, cid)).to_have_count(0)  # it left the open view
    assert conversation(api, cid)["closed"] is True
    expect_counts_match_api(page, api, live_server)
    page.get_by_test_id("reopen").click()
    expect(page.get_by_test_id("conversation-state")).to_have_text("open")
    expect(row(page, cid)).to_have_count(1)
    assert conversation(api, cid)["closed"] is False

    # Snoozed until tomorrow 09:30, the viewer's time.
    tomorrow = (datetime.now(VIEWER_ZONE) + timedelta(days=1)).replace(
        hour=9, minute=30, second=0, microsecond=0
    )
    page.get_by_test_id("snooze-input").fill(tomorrow.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_test_id("snooze").click()
    expect(page.get_by_test_id("conversation-state")).to_have_text("snoozed")
    expect(page.get_by_test_id("conversation")).to_contain_text(
        f"until {tomorrow:%b} {tomorrow.day}, 09:30"
    )
    assert conversation(api, cid)["delayed_until"] == tomorrow.timestamp()
    expect(row(page, cid)).to_have_count(0)
    expect_counts_match_api(page, api, live_server)
    page.get_by_test_id("view-delayed").click()
    expect(row(page, cid)).to_have_count(1)
    # A time in the past is refused on the page, with a reason.
    page.get_by_test_id("snooze-input").fill("2020-01-01T10:00")
    page.get_by_test_id("snooze").click()
    expect(page.get_by_test_id("error")).to_have_text("Choose a time in the future.")
    page.get_by_test_id("unsnooze").click()
    expect(page.get_by_test_id("conversation-state")).to_have_text("open")
    assert conversation(api, cid)["delayed_until"] is None


def test_a_user_message_arrives_live_with_counts_and_typing(
    context: BrowserContext, live_server: LiveServer, api: httpx.Client
) -> None:
    page = sign_in(context, live_server)
    page.evaluate("window.notReloaded = true")
    before = expect_counts_match_api(page, api, live_server)
    closed = inbox(api, live_server, status="closed")["data"]["conversations"][0]
    cid = closed["id"]
    expect(row(page, cid)).to_have_count(0)
    word = f"Hello again {secrets.token_hex(3)}"
    user_reply(api, closed, word)
    # The conversation comes back to the top of the open view, counts follow.
    first = page.get_by_test_id("conversation-row").first
    expect(first).to_have_attribute("data-conversation-id", cid)
    expect(first.get_by_test_id("row-snippet")).to_have_text(word)
    expect(first.get_by_test_id("row-unread")).to_have_text(
        str(conversation(api, cid)["admin_unread_count"])
    )
    expect(count_of(page, "open")).to_have_text(str(before["open"] + 1))
    expect(count_of(page, "closed")).to_have_text(str(before["closed"] - 1))
    expect_counts_match_api(page, api, live_server)
    assert page.evaluate("window.notReloaded") is True

    # The user types: the open conversation and its row say so.
    first.click()
    expect(page.get_by_test_id("conversation")).to_have_attribute("data-conversation-id", cid)
    ok(
        api.post(
            f"/ext/conversations/{cid}/typing",
            json={"body": "Are y", "from_user": closed["user"]["id"]},
        )
    )
    expect(page.get_by_test_id("typing")).to_have_text(f"{user_name(closed['user'])} is typing…")
    expect(row(page, cid)).to_contain_text("typing…")
    # Their message ends the typing and shows at once (and, being watched, is read).
    user_reply(api, closed, "Are you there?")
    expect(page.get_by_test_id("part-body").last).to_have_text("Are you there?")
    expect(page.get_by_test_id("typing")).to_be_hidden()


def test_search_finds_a_word_and_clearing_returns_to_the_view(
    context: BrowserContext, live_server: LiveServer, api: httpx.Client
) -> None:
    page = sign_in(context, live_server)
    target = inbox(api, live_server)["data"]["conversations"][1]
    word = f"zanzibar{secrets.token_hex(3)}"
    user_reply(api, target, f"My parcel went to {word} by mistake")
    page.get_by_test_id("search").fill(word)
    page.get_by_test_id("search").press("Enter")
    expect(page.get_by_test_id("conversation-row")).to_have_count(1)
    hit = row(page, target["id"])
    expect(hit.get_by_test_id("row-match")).to_have_text(f"My parcel went to {word} by mistake")
    expect(hit.get_by_test_id("row-match").locator("mark")).to_have_text(word)
    expect(page.get_by_test_id("view-open")).not_to_have_attribute("aria-current", "page")
    page.get_by_test_id("search").fill("")
    expect(page.get_by_test_id("view-open")).to_have_attribute("aria-current", "page")
    listed = inbox(api, live_server)["data"]["conversations"]
    expect(page.get_by_test_id("conversation-row")).to_have_count(len(listed))
    # Nothing found says so.
    page.get_by_test_id("search").fill(f"nothing{secrets.token_hex(4)}")
    page.get_by_test_id("search").press("Enter")
    expect(page.get_by_test_id("conversation-row")).to_have_count(0)
    expect(page.get_by_text("No conversations here.")).to_be_visible()


def test_load_more_appends_the_next_page_without_duplicates(
    context: BrowserContext, live_server: LiveServer, api: httpx.Client
) -> None:
    # Enough open conversations for two pages.
    for index in range(PAGE_SIZE + 5):
        ok(
            api.post(
                f"/users/demo-{index % 8 + 1}/startconversation",
                json={"body": f"Question number {index}", "by_user_id": True},
            )
        )
    page = sign_in(context, live_server)
    first = inbox(api, live_server)
    second = inbox(
        api, live_server, paginate_position=json.dumps(first["meta"]["next_before_position"])
    )
    expected = [c["id"] for c in first["data"]["conversations"] + second["data"]["conversations"]]
    assert len(expected) == len(set(expected)) > PAGE_SIZE
    expect(page.get_by_test_id("conversation-row")).to_have_count(PAGE_SIZE)
    assert row_ids(page) == expected[:PAGE_SIZE]
    page.get_by_test_id("load-more").click()
    expect(page.get_by_test_id("conversation-row")).to_have_count(len(expected))
    assert row_ids(page) == expected
    if second["meta"]["next_before_position"] is None:
        expect(page.get_by_test_id("load-more")).to_be_hidden()


def test_user_text_is_shown_as_text_and_runs_nothing(
    context: BrowserContext, live_server: LiveServer, api: httpx.Client
) -> None:
    page = sign_in(context, live_server)
    target = inbox(api, live_server)["data"]["conversations"][2]
    cid = target["id"]
    attack = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    user_reply(api, target, attack)
    expect(row(page, cid).get_by_test_id("row-snippet")).to_have_text(attack)
    # Operator HTML is kept only as harmless markup.
    ok(
        api.post(
            f"/conversations/{cid}/reply",
            json={
                "body": '<b>Bold</b> <a href="javascript:window.pwned=3">link</a>'
                '<img src=x onerror="window.pwned=4">',
                "type": "note",
            },
        )
    )
    row(page, cid).click()
    bodies = page.get_by_test_id("conversation").get_by_test_id("part-body")
    user_part = page.locator('[data-testid="part"][data-part-type="reply_user"]').last
    expect(user_part.get_by_test_id("part-body")).to_have_text(attack)
    note = bodies.last
    expect(note).to_have_text("Bold link")
    expect(note.locator("b")).to_have_text("Bold")
    assert note.locator("a").get_attribute("href") is None
    # No element that could run the attack exists (an <img>'s onerror, a <script>): nothing
    # can set window.pwned later, so there is no need to wait for it.
    expect(page.locator(".parts img, .parts script, .rows img, .rows script")).to_have_count(0)
    assert page.evaluate("window.pwned") is None


def test_a_lost_connection_is_shown_and_nothing_is_missed_after_it(
    context: BrowserContext, live_server: LiveServer, api: httpx.Client
) -> None:
    page = sign_in(context, live_server)
    expect(page.get_by_test_id("connection")).to_be_hidden()
    target = inbox(api, live_server)["data"]["conversations"][3]
    context.set_offline(True)
    expect(page.get_by_test_id("connection")).to_be_visible()
    expect(page.get_by_test_id("connection")).to_contain_text("offline")
    # Written while the browser is cut off: the stream resumes from its last tag.
    word = f"While you were away {secrets.token_hex(3)}"
    user_reply(api, target, word)
    context.set_offline(False)
    expect(page.get_by_test_id("connection")).to_be_hidden()
    first = page.get_by_test_id("conversation-row").first
    expect(first).to_have_attribute("data-conversation-id", target["id"])
    expect(first.get_by_test_id("row-snippet")).to_have_text(word)
    expect_counts_match_api(page, api, live_server)


def test_a_late_answer_of_a_live_refresh_never_shows_an_older_state(
    context: BrowserContext, live_server: LiveServer, api: httpx.Client
) -> None:
    """A live update starts a refresh of the open conversation; the operator snoozes it
    meanwhile; the refresh's answer, read before the snooze, arrives last. The pane keeps
    showing the snooze."""
    context.add_init_script(COUNT_READ_ANSWERS)
    page = sign_in(context, live_server)
    conv = inbox(api, live_server)["data"]["conversations"][-1]
    cid = conv["id"]
    row(page, cid).click()
    expect(page.get_by_test_id("conversation-state")).to_have_text("open")

    # The live update's GET refreshes the row and the pane at once (they show one copy).
    gets = HeldGet(page, cid, nth=1)
    user_reply(api, conv, "Any news?")
    route, stale = gets.wait(page, "the live update started no refresh of the pane")

    tomorrow = (datetime.now(VIEWER_ZONE) + timedelta(days=1)).replace(second=0, microsecond=0)
    page.get_by_test_id("snooze-input").fill(tomorrow.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_test_id("snooze").click()
    expect(page.get_by_test_id("conversation-state")).to_have_text("snoozed")
    while True:  # until the refreshes the snooze itself caused are over
        before = gets.count
        page.wait_for_timeout(700)
        if gets.count == before:
            break

    assert stale.json()["data"]["delayed_until"] is None  # read before the snooze
    fulfil_and_wait_until_read(page, route, stale)
    expect(page.get_by_test_id("conversation-state")).to_have_text("snoozed")
    gets.stop()
    assert conversation(api, cid)["delayed_until"] == tomorrow.timestamp()


def test_a_late_answer_of_a_live_update_never_shows_an_older_row(
    context: BrowserContext, live_server: LiveServer, api: httpx.Client
) -> None:
    """Two live updates of a conversation fetch its row one after the other; the first
    fetch's answer arrives last. The row keeps the second's state."""
    context.add_init_script(COUNT_READ_ANSWERS)
    page = sign_in(context, live_server)
    conv = inbox(api, live_server)["data"]["conversations"][-1]
    cid = conv["id"]
    gets = HeldGet(page, cid, nth=1)
    user_reply(api, conv, "First message")
    route, stale = gets.wait(page, "the live update fetched no row")
    user_reply(api, conv, "Second message")
    snippet = row(page, cid).get_by_test_id("row-snippet")
    expect(snippet).to_have_text("Second message")

    assert stale.json()["data"]["important_part_last"]["body"] == "First message"
    fulfil_and_wait_until_read(page, route, stale)
    expect(snippet).to_have_text("Second message")
    gets.stop()


def test_keyboard_focus_stays_on_the_row_through_opening_it_and_live_messages(
    context: BrowserContext, live_server: LiveServer, api: httpx.Client
) -> None:
    """A row opened with Enter keeps the keyboard focus, and so does the row the operator is
    on while a live message re-orders the list around it."""
    page = sign_in(context, live_server)
    listed = inbox(api, live_server)["data"]["conversations"]
    target, other = listed[1], listed[2]
    button = row(page, target["id"]).locator(".row-button")
    button.focus()
    page.keyboard.press("Enter")
    pane = page.get_by_test_id("conversation")
    expect(pane).to_have_attribute("data-conversation-id", target["id"])
    expect(pane.get_by_test_id("part")).not_to_have_count(0)
    expect(button).to_be_focused()
    # Arrow keys move along the rows.
    page.keyboard.press("ArrowDown")
    below = row(page, other["id"]).locator(".row-button")
    expect(below).to_be_focused()
    page.keyboard.press("ArrowUp")
    expect(button).to_be_focused()

    # Another conversation gets a message: it moves to the top, the list is drawn again.
    word = f"Focus check {secrets.token_hex(3)}"
    user_reply(api, other, word)
    expect(page.get_by_test_id("conversation-row").first).to_have_attribute(
        "data-conversation-id", other["id"]
    )
    expect(row(page, other["id"]).get_by_test_id("row-snippet")).to_have_text(word)
    expect(button).to_be_focused()
    # The focused conversation itself gets one: it moves to the top, still focused.
    again = f"Focus check {secrets.token_hex(3)}"
    user_reply(api, target, again)
    expect(page.get_by_test_id("conversation-row").first).to_have_attribute(
        "data-conversation-id", target["id"]
    )
    expect(pane.get_by_test_id("part-body").last).to_have_text(again)
    expect(button).to_be_focused()


def test_a_snooze_that_ends_shows_the_conversation_open_again_without_a_reload(
    context: BrowserContext, live_server: LiveServer, api: httpx.Client
) -> None:
    """The pane, the Snoozed view's list and the counts follow a snooze's end by themselves:
    nothing on the server changes at that moment, so no live update says so."""
    page = sign_in(context, live_server)
    conv = inbox(api, live_server)["data"]["conversations"][0]
    cid = conv["id"]
    page.get_by_test_id("view-delayed").click()
    expect(page.get_by_test_id("view-delayed")).to_have_attribute("aria-current", "page")
    # Long enough for the screen to show the snooze first, even on a busy machine.
    until = int(time.time()) + 12
    ok(api.post(f"/ext/conversations/{cid}/delay", json={"until": until}))
    expect(row(page, cid)).to_have_count(1)
    row(page, cid).click()
    state = page.get_by_test_id("conversation-state")
    expect(state).to_have_text("snoozed")
    assert conversation(api, cid)["delayed_until"] == until

    expect(state).to_have_text("open", timeout=60_000)
    expect(page.get_by_test_id("unsnooze")).to_have_count(0)
    expect(row(page, cid)).to_have_count(0)  # it left the Snoozed view
    expect_counts_match_api(page, api, live_server)
    page.get_by_test_id("view-open").click()
    expect(row(page, cid)).to_have_count(1)
