"""The whole story in two browsers: a visitor in the widget, an operator in the inbox.

The visitor writes on the demo shop page; the operator sees it arrive live, assigns it,
tags it and answers; the visitor sees the answer live (and the read receipt); the operator
snoozes and closes it; the visitor writes again and it is open again on the operator's
screen. Each step checks what each person's screen shows, and the stored state.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import LiveServer


def sign_in(context: BrowserContext, server: LiveServer) -> Page:
    page = context.new_page()
    page.goto(server.base_url + "/")
    page.get_by_test_id("login-email").fill(server.operator_email)
    page.get_by_test_id("login-password").fill(server.operator_password)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("inbox")).to_be_visible()
    expect(page.get_by_test_id("current-admin")).not_to_be_empty()
    return page


def open_widget(context: BrowserContext, server: LiveServer) -> Page:
    page = context.new_page()
    page.goto(server.base_url + "/demo/site")
    page.get_by_test_id("tl-launcher").click()
    expect(page.get_by_test_id("tl-panel")).to_be_visible()
    return page


def write(page: Page, text: str) -> None:
    page.get_by_test_id("tl-input").fill(text)
    page.get_by_test_id("tl-input").press("Enter")


def test_a_conversation_from_the_widget_to_the_inbox_and_back(
    live_server: LiveServer, context: BrowserContext, second_context: BrowserContext
) -> None:
    api = live_server.api()
    admins = api.get("/ext/apps/$self_app/admins").json()["data"]
    (operator,) = [a for a in admins if a.get("email") == live_server.operator_email]
    inbox = sign_in(context, live_server)
    widget = open_widget(second_context, live_server)

    # The visitor writes; the operator's list shows it live.
    question = f"Where is my parcel? ({uuid.uuid4().hex[:8]})"
    write(widget, question)
    expect(widget.get_by_test_id("tl-message-time")).to_have_count(1)
    row = inbox.get_by_test_id("conversation-row").filter(has_text=question)
    expect(row).to_have_count(1)
    cid = row.get_attribute("data-conversation-id")
    assert cid is not None
    stored = api.get(f"/conversations/{cid}").json()["data"]
    assert stored["reply_last"]["body"] == question
    assert stored["closed"] is False

    row.click()
    conversation = inbox.get_by_test_id("conversation")
    expect(conversation).to_have_attribute("data-conversation-id", cid)
    expect(inbox.get_by_test_id("conversation-state")).to_have_text("open")
    first = conversation.locator('[data-testid="part"][data-part-type="reply_user"]')
    expect(first.get_by_test_id("part-body")).to_have_text(question)

    # Assign to me, tag, answer.
    inbox.get_by_test_id("assign-me").click()
    expect(inbox.get_by_test_id("assign-select")).to_have_value(str(operator["id"]))
    expect(conversation.locator('[data-part-type="assigned"]')).to_have_count(1)
    inbox.get_by_test_id("tag-input").fill("parcel")
    inbox.get_by_test_id("tag-add").click()
    expect(inbox.get_by_test_id("tag").filter(has_text="parcel")).to_have_count(1)
    answer = "It is out for delivery today."
    inbox.get_by_test_id("reply-input").fill(answer)
    inbox.get_by_test_id("send-reply").click()
    reply = conversation.locator('[data-testid="part"][data-part-type="reply_admin"]')
    expect(reply.get_by_test_id("part-body")).to_have_text(answer)
    stored = api.get(f"/conversations/{cid}").json()["data"]
    assert stored["assignee"]["id"] == operator["id"]
    assert stored["tags"] == ["parcel"]

    # The visitor sees the answer live, with the read receipt; never the tag or assignment.
    admin_message = widget.locator('[data-testid="tl-message"][data-from="admin"]')
    expect(admin_message.get_by_test_id("tl-message-body")).to_have_text(answer)
    expect(widget.get_by_test_id("tl-read")).to_have_count(1)
    expect(widget.get_by_test_id("tl-message")).to_have_count(2)
    shown = widget.get_by_test_id("tl-panel").inner_text().lower()
    assert "parcel" not in shown.replace("where is my parcel", "")
    assert "assigned" not in shown

    # Snooze until tomorrow (the operator's time zone), then close.
    tomorrow = datetime.now(ZoneInfo("Europe/Berlin")) + timedelta(days=1)
    inbox.get_by_test_id("snooze-input").fill(tomorrow.strftime("%Y-%m-%dT%H:%M"))
    inbox.get_by_test_id("snooze").click()
    expect(inbox.get_by_test_id("conversation-state")).to_have_text("snoozed")
    delayed = api.get(f"/conversations/{cid}").json()["data"]["delayed_until"]
    assert abs(delayed - tomorrow.replace(second=0, microsecond=0).timestamp()) < 60
    inbox.get_by_test_id("close").click()
    expect(inbox.get_by_test_id("conversation-state")).to_have_text("closed")
    assert api.get(f"/conversations/{cid}").json()["data"]["closed"] is True

    # The visitor writes again: the conversation reopens, live on the operator's screen.
    again = "Thanks! One more thing: can I change the address?"
    write(widget, again)
    expect(widget.locator('[data-testid="tl-message"][data-from="user"]')).to_have_count(2)
    expect(inbox.get_by_test_id("conversation-state")).to_have_text("open")
    expect(
        conversation.locator('[data-testid="part"][data-part-type="reply_user"]').get_by_test_id(
            "part-body"
        )
    ).to_have_text([question, again])
    stored = api.get(f"/conversations/{cid}").json()["data"]
    assert stored["closed"] is False
    assert stored["delayed_until"] is None
    assert stored["tags"] == ["parcel"]
    # The visitor's screen: exactly the three replies, in order.
    expect(widget.get_by_test_id("tl-message-body")).to_have_text([question, answer, again])
