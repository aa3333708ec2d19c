"""Reading messages, without storage: quote stripping through mail-parser-reply on every
supported Python, and the addresses a message was written to."""

from __future__ import annotations

import warnings

import pytest

from tests.email import corpus
from threadline.channels.email import parse

GMAIL_TEXT = (
    "Yes, the parcel arrived today, thank you!\n\n"
    "--\nJohn Smith\nACME Corp\n\n"
    "On Mon, Dec 7, 2026 at 9:00 AM Support <1@threadline.localhost> wrote:\n"
    "> Has your parcel arrived?\n> Best, Ann\n"
)
OUTLOOK_TEXT = (
    "The invoice is wrong.\n\n"
    "________________________________\n"
    "From: Support <1@threadline.localhost>\n"
    "Sent: Monday, December 7, 2026 9:00 AM\n"
    "Subject: Your invoice\n\n"
    "Here is your invoice.\n"
)


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        (GMAIL_TEXT, "Yes, the parcel arrived today, thank you!"),
        (OUTLOOK_TEXT, "The invoice is wrong."),
        ("Just a question, no quote.", "Just a question, no quote."),
        (GMAIL_TEXT.replace("\n", "\r\n"), "Yes, the parcel arrived today, thank you!"),
    ],
)
def test_quotes_and_signatures_are_stripped_without_any_warning(text: str, reply: str) -> None:
    # Python 3.13 deprecates what mail-parser-reply 1.36 does in its normalisation (a flag
    # passed as re.sub's count); the adapter must not trigger it, or any other warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse.strip_reply(text) == reply


def test_every_outlook_separator_is_normalised() -> None:
    # The library's own call stops after 8 separators (the flag taken as a count), and the
    # 9th is then taken for a signature that cuts the rest of the text off.
    text = "".join(f"Answer {n}.\n\n{'_' * 32}\nNote {n}\n" for n in range(12))
    shown = parse.strip_reply(text)
    assert shown.startswith("Answer 0.")
    assert shown.endswith("Answer 11.\n\nNote 11")
    assert "_" * 32 not in shown


def test_a_bare_quote_keeps_its_whole_text() -> None:
    text = "On Mon, Dec 7, 2026 at 9:00 AM Ann <ann@example.com> wrote:\n> Only a quote\n"
    assert "Only a quote" in parse.strip_reply(text)


def test_the_addresses_it_was_written_to() -> None:
    raw = corpus.plain(
        "Hi",
        to="Support <Help@Acme.test>, 1@threadline.localhost",
        extra={"Cc": "Bob <BOB@example.com>, carol@example.com", "Delivered-To": "x@relay.test"},
    )
    mail = parse.parse(raw)
    assert mail.copied == (
        "help@acme.test",
        "1@threadline.localhost",
        "bob@example.com",
        "carol@example.com",
    )
    assert "x@relay.test" in mail.recipients
    assert "x@relay.test" not in mail.copied


@pytest.mark.parametrize(
    ("text", "subject", "shown"),
    [
        # A reply quoting a forward is still a reply: its quote goes.
        (
            "Thanks!\n\nOn Mon, Dec 7, 2026 at 9:00 AM Ann <a@x.test> wrote:\n> Fwd stuff\n",
            "Re: Fwd: Order",
            "Thanks!",
        ),
        # A forward keeps what was forwarded, by its subject or by its marker.
        (OUTLOOK_TEXT, "FW: Your invoice", OUTLOOK_TEXT.strip()),
        (OUTLOOK_TEXT, "WG: Ihre Rechnung", OUTLOOK_TEXT.strip()),
        (OUTLOOK_TEXT, "Re: Your invoice", "The invoice is wrong."),
        (
            "---------- Forwarded message ---------\nFrom: A <a@x.test>\nDate: Mon\n"
            "Subject: S\nTo: <b@x.test>\n\nThe forwarded text.\n",
            "",
            "---------- Forwarded message ---------\nFrom: A <a@x.test>\nDate: Mon\n"
            "Subject: S\nTo: <b@x.test>\n\nThe forwarded text.",
        ),
    ],
)
def test_forwards_keep_what_was_forwarded(text: str, subject: str, shown: str) -> None:
    assert parse.strip_reply(text, subject) == shown
