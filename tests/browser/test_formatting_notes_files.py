"""Issue 19's defects 1-3 in two browsers, a visitor in the widget and an operator in the inbox.

1. Formatting: an operator's HTML (from the inbox or through the API) shows as the same
   cleaned formatting on both screens, links open apart (`rel="noopener noreferrer"`,
   `target="_blank"`), and a visitor's text never becomes markup.
2. Note mode: the composer's Reply/Note tabs; Enter sends in the mode shown; a note is
   stored as a note, marked in the list, and never reaches the visitor.
3. Files: pictures are previewed and every file can be downloaded, on both screens; the
   operator attaches by button, by dropping and by pasting, the visitor by button; a type
   the settings do not accept is refused with a plain message.
"""

from __future__ import annotations

import base64
import re
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from tests.browser.conftest import LiveServer
from tests.browser.test_conversation_e2e import open_widget, sign_in, write

BLOB = re.compile(r"^blob:")


def tiny_png() -> bytes:
    """A valid 2x2 red PNG (a preview must decode it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def api(live_server: LiveServer) -> Any:
    with live_server.api() as client:
        yield client


def start_chat(inbox: Page, widget: Page, text: str) -> tuple[str, Locator]:
    """The visitor writes `text`; the operator opens the conversation it started."""
    write(widget, text)
    expect(widget.get_by_test_id("tl-message-time")).to_have_count(1)
    row = inbox.get_by_test_id("conversation-row").filter(has_text=text.split(" ")[0])
    expect(row).to_have_count(1)
    cid = row.get_attribute("data-conversation-id")
    assert cid is not None
    row.click()
    pane = inbox.get_by_test_id("conversation")
    expect(pane).to_have_attribute("data-conversation-id", cid)
    return cid, pane


def parts(api: httpx.Client, cid: str) -> list[dict[str, Any]]:
    answer = api.get(f"/conversations/{cid}/parts", params={"paginate_count": 50})
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["data"]
    return found


def admin_bubbles(widget: Page) -> Locator:
    return widget.locator('[data-testid="tl-message"][data-from="admin"]')


def expect_safe_link(link: Locator, href: str) -> None:
    expect(link).to_have_attribute("href", href)
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_attribute("target", "_blank")


def test_operator_formatting_is_the_same_on_both_screens_and_visitor_text_stays_text(
    live_server: LiveServer,
    context: BrowserContext,
    second_context: BrowserContext,
    api: httpx.Client,
) -> None:
    inbox = sign_in(context, live_server)
    widget = open_widget(second_context, live_server)
    tag = uuid.uuid4().hex[:8]
    attack = f'{tag} <img src=x onerror="window.pwned=1"> see https://shop.test/order/7'
    cid, pane = start_chat(inbox, widget, attack)

    # The visitor's text is shown as text in the inbox; only its address became a link.
    user_body = pane.locator('[data-part-type="reply_user"] [data-testid="part-body"]')
    expect(user_body).to_have_text(attack)
    expect_safe_link(user_body.locator("a"), "https://shop.test/order/7")
    expect(inbox.locator(".parts img, .rows img")).to_have_count(0)

    # An operator's formatting, from the inbox...
    inbox.get_by_test_id("reply-input").fill(
        "use <b>Settings</b> & <code>Reset</code>, then https://help.test/reset"
    )
    inbox.get_by_test_id("reply-input").press("Enter")
    shown = pane.locator('[data-part-type="reply_admin"] [data-testid="part-body"]').last
    expect(shown).to_have_text("use Settings & Reset, then https://help.test/reset")
    expect(shown.locator("b")).to_have_text("Settings")
    expect(shown.locator("code")).to_have_text("Reset")
    expect_safe_link(shown.locator("a"), "https://help.test/reset")
    # ... shows the same in the widget, not as tags.
    seen = admin_bubbles(widget).last.get_by_test_id("tl-message-body")
    expect(seen).to_have_text("use Settings & Reset, then https://help.test/reset")
    expect(seen.locator("b")).to_have_text("Settings")
    expect(seen.locator("code")).to_have_text("Reset")
    expect_safe_link(seen.locator("a"), "https://help.test/reset")

    # A reply sent through the API as HTML looks the same on both screens.
    sent = api.post(
        f"/conversations/{cid}/reply",
        json={
            "body": '<p>Also <a href="https://docs.test/a">the docs</a> and '
            '<a href="javascript:window.pwned=2">this</a><img src=x onerror="window.pwned=3"></p>'
        },
    )
    assert sent.status_code == 200, sent.text
    for body in (
        pane.locator('[data-part-type="reply_admin"] [data-testid="part-body"]').last,
        admin_bubbles(widget).last.get_by_test_id("tl-message-body"),
    ):
        expect(body).to_have_text("Also the docs and this")
        expect(body.locator("a")).to_have_count(2)
        expect_safe_link(body.locator("a").first, "https://docs.test/a")
        assert body.locator("a").last.get_attribute("href") is None
        expect(body.locator("p")).to_have_count(1)
    # No element that could run an attack exists on either screen (so none can run later).
    expect(inbox.locator(".parts img, .parts script")).to_have_count(0)
    assert (
        widget.evaluate(
            "() => document.querySelector('[data-threadline-widget]').shadowRoot"
            ".querySelectorAll('img, script').length"
        )
        == 0
    )
    assert inbox.evaluate("window.pwned") is None
    assert widget.evaluate("window.pwned") is None


def test_enter_in_note_mode_stores_a_note_that_never_reaches_the_visitor(
    live_server: LiveServer,
    context: BrowserContext,
    second_context: BrowserContext,
    api: httpx.Client,
) -> None:
    inbox = sign_in(context, live_server)
    widget = open_widget(second_context, live_server)
    tag = uuid.uuid4().hex[:8]
    cid, pane = start_chat(inbox, widget, f"{tag} my order is late")
    composer = inbox.get_by_test_id("composer")
    expect(composer).to_have_attribute("data-mode", "reply_admin")
    expect(inbox.get_by_test_id("mode-reply")).to_have_attribute("aria-selected", "true")
    reply_colour = composer.evaluate("(el) => getComputedStyle(el).backgroundColor")

    # Note mode: the whole composer changes colour, and Enter adds a note.
    inbox.get_by_test_id("mode-note").click()
    expect(composer).to_have_attribute("data-mode", "note")
    expect(inbox.get_by_test_id("mode-note")).to_have_attribute("aria-selected", "true")
    expect(inbox.get_by_test_id("mode-reply")).to_have_attribute("aria-selected", "false")
    assert composer.evaluate("(el) => getComputedStyle(el).backgroundColor") != reply_colour
    expect(inbox.get_by_test_id("send-note")).to_have_text("Add note")
    expect(inbox.get_by_test_id("send-reply")).to_have_count(0)
    secret = f"{tag} refund approved by finance, do not tell yet"
    inbox.get_by_test_id("reply-input").fill(secret)
    inbox.get_by_test_id("reply-input").press("Enter")
    note = pane.locator('[data-testid="part"][data-part-type="note"]')
    expect(note.get_by_test_id("part-body")).to_have_text(secret)
    newest = parts(api, cid)[0]
    assert (newest["type"], newest["body"]) == ("note", secret)
    # The list marks the note.
    row = inbox.locator(f'[data-testid="conversation-row"][data-conversation-id="{cid}"]')
    expect(row.get_by_test_id("row-note")).to_have_text("Note")
    expect(row.get_by_test_id("row-snippet")).to_have_text(secret)
    # The mode stays until changed: a second Enter adds another note.
    inbox.get_by_test_id("reply-input").fill(f"{tag} second note")
    inbox.get_by_test_id("reply-input").press("Enter")
    expect(note).to_have_count(2)

    # Back to Reply (with the keyboard, as tabs go): Enter sends to the visitor.
    inbox.get_by_test_id("mode-note").focus()
    inbox.keyboard.press("ArrowLeft")
    expect(composer).to_have_attribute("data-mode", "reply_admin")
    expect(inbox.get_by_test_id("mode-reply")).to_be_focused()
    answer = f"{tag} it ships today"
    inbox.get_by_test_id("reply-input").fill(answer)
    inbox.get_by_test_id("reply-input").press("Enter")
    expect(row.get_by_test_id("row-note")).to_have_count(0)
    types = [(p["type"], p["body"]) for p in parts(api, cid)[:3]]
    assert types == [
        ("reply_admin", answer),
        ("note", f"{tag} second note"),
        ("note", secret),
    ]
    # The reply reached the visitor, after the notes: they never did.
    expect(admin_bubbles(widget).get_by_test_id("tl-message-body")).to_have_text([answer])
    assert tag + " refund" not in widget.get_by_test_id("tl-panel").inner_text()
    assert "second note" not in widget.get_by_test_id("tl-panel").inner_text()


def drop_or_paste(page: Page, target: str, event: str, name: str, mime: str, text: str) -> None:
    """Dispatch a drop (or paste) of one file on `target`, as the browser does."""
    page.evaluate(
        """([target, event, name, mime, text]) => {
            const data = new DataTransfer();
            data.items.add(new File([text], name, { type: mime }));
            const el = document.querySelector(target);
            const init = { bubbles: true, cancelable: true };
            if (event === "paste") {
                el.dispatchEvent(new ClipboardEvent("paste", { ...init, clipboardData: data }));
            } else {
                for (const type of ["dragenter", "dragover", "drop"]) {
                    el.dispatchEvent(new DragEvent(type, { ...init, dataTransfer: data }));
                }
            }
        }""",
        [target, event, name, mime, text],
    )


def send_pending(inbox: Page, name: str) -> None:
    expect(inbox.get_by_test_id("pending-file")).to_contain_text(name)
    inbox.get_by_test_id("reply-input").press("Enter")
    expect(inbox.get_by_test_id("pending-file")).to_have_count(0)


def test_files_are_previewed_downloaded_and_sent_from_both_screens(
    live_server: LiveServer,
    context: BrowserContext,
    second_context: BrowserContext,
    api: httpx.Client,
    tmp_path: Path,
) -> None:
    inbox = sign_in(context, live_server)
    widget = open_widget(second_context, live_server)
    tag = uuid.uuid4().hex[:8]
    cid, pane = start_chat(inbox, widget, f"{tag} here is a screenshot")
    png = tiny_png()

    # The visitor sends a picture by the widget's button.
    with widget.expect_file_chooser() as chooser:
        widget.get_by_test_id("tl-attach").click()
    chooser.value.set_files({"name": "screen.png", "mimeType": "image/png", "buffer": png})
    mine = widget.locator('[data-testid="tl-message"][data-from="user"]').last
    expect(mine.get_by_test_id("tl-image")).to_have_attribute("src", BLOB)
    widget.wait_for_function(
        "(img) => img.complete && img.naturalWidth === 2",
        arg=mine.get_by_test_id("tl-image").element_handle(),
    )
    stored = parts(api, cid)[0]
    assert stored["type"] == "reply_user"
    assert [(a["filename"], a["mime_type"], a["size"]) for a in stored["attachments"]] == [
        ("screen.png", "image/png", len(png))
    ]

    # The operator sees its preview and can download it.
    picture = pane.locator(
        f'[data-testid="attachment"][data-attachment-id="{stored["attachments"][0]["id"]}"]'
    )
    preview = picture.get_by_test_id("attachment-preview")
    expect(preview).to_be_visible()
    # Decoded (a blob of the file's bytes): its size is the picture's.
    inbox.wait_for_function(
        "(img) => img.complete && img.naturalWidth === 2", arg=preview.element_handle()
    )
    with inbox.expect_download() as got:
        picture.get_by_test_id("attachment-link").click()
    assert got.value.suggested_filename == "screen.png"
    assert Path(got.value.path()).read_bytes() == png

    # The operator attaches by button, by dropping and by pasting.
    with inbox.expect_file_chooser() as chooser:
        inbox.get_by_test_id("attach").click()
    chooser.value.set_files({"name": "guide.txt", "mimeType": "text/plain", "buffer": b"step 1"})
    inbox.get_by_test_id("reply-input").fill("the guide")
    send_pending(inbox, "guide.txt")
    drop_or_paste(inbox, '[data-testid="composer"]', "drop", "list.csv", "text/csv", "a,b")
    send_pending(inbox, "list.csv")
    drop_or_paste(inbox, '[data-testid="reply-input"]', "paste", "shot.png", "image/png", "")
    # An empty pasted file is refused plainly; a real one goes.
    expect(inbox.get_by_test_id("error")).to_have_text("shot.png is empty.")
    inbox.evaluate(
        """([b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "pasted.png", { type: "image/png" }));
            const init = { bubbles: true, cancelable: true, clipboardData: data };
            document.querySelector('[data-testid="reply-input"]').dispatchEvent(
                new ClipboardEvent("paste", init));
        }""",
        [base64.b64encode(png).decode()],
    )
    send_pending(inbox, "pasted.png")
    newest = parts(api, cid)[:3]
    assert [(p["type"], p["body"], [a["filename"] for a in p["attachments"]]) for p in newest] == [
        ("reply_admin", "", ["pasted.png"]),
        ("reply_admin", "", ["list.csv"]),
        ("reply_admin", "the guide", ["guide.txt"]),
    ]

    # The visitor sees the picture and downloads the files.
    theirs = admin_bubbles(widget)
    expect(theirs).to_have_count(3)
    expect(theirs.last.get_by_test_id("tl-image")).to_have_attribute("src", BLOB)
    guide = theirs.first
    expect(guide.get_by_test_id("tl-message-body")).to_have_text("the guide")
    with widget.expect_download() as got:
        guide.get_by_test_id("tl-file-link").click()
    assert got.value.suggested_filename == "guide.txt"
    assert Path(got.value.path()).read_bytes() == b"step 1"

    # A type the settings do not accept: refused with a plain message on both screens.
    count = len(parts(api, cid))
    with inbox.expect_file_chooser() as chooser:
        inbox.get_by_test_id("attach").click()
    chooser.value.set_files(
        {"name": "setup.exe", "mimeType": "application/x-msdownload", "buffer": b"MZ"}
    )
    expect(inbox.get_by_test_id("error")).to_have_text(
        "setup.exe cannot be sent: files of type application/x-msdownload are not accepted."
    )
    expect(inbox.get_by_test_id("pending-file")).to_have_count(0)
    with widget.expect_file_chooser() as chooser:
        widget.get_by_test_id("tl-attach").click()
    chooser.value.set_files(
        {"name": "setup.exe", "mimeType": "application/x-msdownload", "buffer": b"MZ"}
    )
    failed = widget.locator(".msg.failed")
    expect(failed).to_contain_text(
        "The file was not sent: files of type application/x-msdownload are not accepted"
    )
    assert len(parts(api, cid)) == count  # nothing was stored


def test_a_draft_is_kept_per_conversation_across_a_reload_and_text_runs_in_its_direction(
    live_server: LiveServer, context: BrowserContext, api: httpx.Client
) -> None:
    inbox = sign_in(context, live_server)
    rows = inbox.get_by_test_id("conversation-row")
    first = rows.nth(0).get_attribute("data-conversation-id")
    second = rows.nth(1).get_attribute("data-conversation-id")
    rows.nth(0).click()
    expect(inbox.get_by_test_id("conversation")).to_have_attribute(
        "data-conversation-id", str(first)
    )
    inbox.get_by_test_id("reply-input").fill("half-written: שלום and hello")
    expect(inbox.get_by_test_id("reply-input")).to_have_attribute("dir", "auto")
    rows.nth(1).click()
    expect(inbox.get_by_test_id("conversation")).to_have_attribute(
        "data-conversation-id", str(second)
    )
    expect(inbox.get_by_test_id("reply-input")).to_have_value("")
    inbox.get_by_test_id("reply-input").fill("another one")
    inbox.reload()
    # The open conversation comes back from the address, with its draft; so does the other's.
    expect(inbox.get_by_test_id("conversation")).to_have_attribute(
        "data-conversation-id", str(second)
    )
    expect(inbox.get_by_test_id("reply-input")).to_have_value("another one")
    inbox.locator(f'[data-testid="conversation-row"][data-conversation-id="{first}"]').click()
    expect(inbox.get_by_test_id("reply-input")).to_have_value("half-written: שלום and hello")
    # Sent, it is gone for good.
    inbox.get_by_test_id("reply-input").press("Enter")
    expect(inbox.get_by_test_id("reply-input")).to_have_value("")
    assert parts(api, str(first))[0]["body"] == "half-written: שלום and hello"
    inbox.reload()
    expect(inbox.get_by_test_id("conversation")).to_have_attribute(
        "data-conversation-id", str(first)
    )
    expect(inbox.get_by_test_id("reply-input")).to_have_value("")
    # Every message's text runs in its own direction.
    expect(inbox.get_by_test_id("part-body").last).to_have_attribute("dir", "auto")


def test_a_row_is_a_link_to_its_conversation_that_opens_in_a_new_tab(
    live_server: LiveServer, context: BrowserContext
) -> None:
    inbox = sign_in(context, live_server)
    first = inbox.get_by_test_id("conversation-row").nth(1)
    cid = first.get_attribute("data-conversation-id")
    link = first.locator("a.row-button")
    expect(link).to_have_attribute("href", f"#view=open&c={cid}")
    # A plain click opens it here, and the address says which one is open.
    link.click()
    expect(inbox.get_by_test_id("conversation")).to_have_attribute("data-conversation-id", str(cid))
    assert inbox.url.endswith(f"#view=open&c={cid}")
    # A modified click leaves it to the browser: a new tab, which (once signed in, as
    # sessions are per tab) shows that conversation.
    with context.expect_page() as opened:
        link.click(modifiers=["Control"])
    tab = opened.value
    tab.wait_for_load_state()
    assert tab.url == f"{live_server.base_url}/#view=open&c={cid}"
    tab.get_by_test_id("login-email").fill(live_server.operator_email)
    tab.get_by_test_id("login-password").fill(live_server.operator_password)
    tab.get_by_test_id("login-submit").click()
    expect(tab.get_by_test_id("conversation")).to_have_attribute("data-conversation-id", str(cid))
