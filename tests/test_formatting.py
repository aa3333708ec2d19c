"""How a part's body is shown (`body_html`): a user's text stays text, an operator's HTML is
cleaned to the allowlist, bare web addresses become links that open apart."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from threadline.conversations.formatting import body_html, clean_html, linkify_text
from threadline.core.enums import AuthorKind, PartType, SentVia
from threadline.core.model import Author, Part

LINK = 'target="_blank" rel="noopener noreferrer"'


def part(body: str, kind: AuthorKind, type_: PartType = PartType.REPLY_ADMIN) -> Part:
    return Part(
        id=1,
        conversation_id=1,
        created=datetime(2026, 1, 1, tzinfo=UTC),
        type=type_,
        part_group=1,
        author=Author(kind, 1),
        sent_via=SentVia.API,
        body=body,
    )


def test_a_users_text_is_escaped_never_markup() -> None:
    attack = '<img src=x onerror="alert(1)"><script>alert(2)</script> & <b>hi</b>'
    shown = body_html(part(attack, AuthorKind.USER, PartType.REPLY_USER))
    assert "<img" not in shown
    assert "<script" not in shown
    assert "<b>" not in shown
    assert shown == (
        "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;"
        " &amp; &lt;b&gt;hi&lt;/b&gt;"
    )


def test_an_operators_formatting_is_kept_and_the_rest_removed() -> None:
    shown = body_html(
        part(
            'use <b>Settings</b> &amp; <code>Reset</code><img src=x onerror="alert(1)">'
            '<script>alert(2)</script><p style="position:fixed" onclick="x()">done</p>'
            '<a href="javascript:alert(3)">bad</a><iframe src="https://evil.test"></iframe>',
            AuthorKind.ADMIN,
        )
    )
    assert shown == (f"use <b>Settings</b> &amp; <code>Reset</code><p>done</p><a {LINK}>bad</a>")


@pytest.mark.parametrize("kind", [AuthorKind.ADMIN, AuthorKind.BOT, AuthorKind.SENDER])
def test_links_open_in_a_new_tab_without_the_opener(kind: AuthorKind) -> None:
    shown = body_html(part('<a href="https://example.com/a?b=1&amp;c=2">docs</a>', kind))
    assert shown == f'<a href="https://example.com/a?b=1&amp;c=2" {LINK}>docs</a>'
    mail = body_html(part('<a href="mailto:help@example.com">mail</a>', kind))
    assert 'href="mailto:help@example.com"' in mail


def test_bare_addresses_become_links_in_text_and_in_html() -> None:
    assert linkify_text("see https://example.com/x?a=1&b=2.") == (
        'see <a href="https://example.com/x?a=1&amp;b=2" target="_blank" '
        'rel="noopener noreferrer">https://example.com/x?a=1&amp;b=2</a>.'
    )
    # Brackets the address opened stay in it; the sentence's do not.
    assert 'href="https://en.wikipedia.org/wiki/Foo_(bar)"' in linkify_text(
        "(https://en.wikipedia.org/wiki/Foo_(bar))"
    )
    assert 'href="http://a.test/b"' in linkify_text("(see http://a.test/b)")
    assert linkify_text("http:// and https://") == "http:// and https://"
    assert linkify_text("javascript:alert(1) ftp://x.test") == "javascript:alert(1) ftp://x.test"
    html = clean_html('<p>read https://a.test/x</p><a href="https://b.test">https://b.test</a>')
    assert html == (
        f'<p>read <a href="https://a.test/x" {LINK}>https://a.test/x</a></p>'
        f'<a href="https://b.test" {LINK}>https://b.test</a>'
    )
    user = body_html(part("mine: https://shop.test/order/7", AuthorKind.USER, PartType.REPLY_USER))
    assert user == f'mine: <a href="https://shop.test/order/7" {LINK}>https://shop.test/order/7</a>'


def test_an_address_cannot_break_out_of_its_attribute() -> None:
    shown = linkify_text('https://a.test/"onmouseover="alert(1)')
    assert shown == (
        f'<a href="https://a.test/" {LINK}>https://a.test/</a>&quot;onmouseover=&quot;alert(1)'
    )
    assert body_html(part("", AuthorKind.ADMIN)) == ""
