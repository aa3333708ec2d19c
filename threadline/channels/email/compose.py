"""An operator's reply as an e-mail: headers that thread, a text and an HTML part, and an
optional DKIM signature. Pure (no I/O): the outbound sender gathers the facts and sends.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

import dkim

# The headers a DKIM signature covers (those a receiver shows or threads by).
DKIM_HEADERS = (
    b"From",
    b"To",
    b"Reply-To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"In-Reply-To",
    b"References",
    b"MIME-Version",
    b"Content-Type",
)
# References name at most this many earlier messages (the first and the latest ones):
# some servers refuse very long header fields, and threading needs only the chain's ends.
MAX_REFERENCES = 20
# A subject line of a reply, when the conversation has none to answer to.
_RE = re.compile(r"^\s*(re|aw|sv|antw)\s*:", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Reply:
    """What a reply's message is made of."""

    message_id: str  # `...@domain` (no angle brackets, as stored), fixed before the first attempt
    from_name: str  # "Operator via App"
    from_address: str  # the app's address
    to_address: str
    to_name: str
    reply_to: str  # the conversation's reply address
    subject: str
    body: str  # the reply's text as the operator wrote it
    date: datetime
    thread: Sequence[str] = ()  # earlier Message-IDs of the conversation, oldest first


@dataclass(frozen=True, slots=True)
class DkimKey:
    selector: str
    domain: str
    private_key: bytes  # PEM


def new_message_id(domain: str, conversation_id: int, part_id: int) -> str:
    """A Message-ID of our own (without the angle brackets, as Message-IDs are stored):
    unique per part (a random tail keeps it unguessable)."""
    return f"tl.{conversation_id}.{part_id}.{secrets.token_hex(8)}@{domain.lower()}"


def _bracketed(message_id: str) -> str:
    return f"<{message_id}>"


def reply_subject(subject: str | None, fallback: str) -> str:
    """`Re: <subject>` for a reply to a message with a subject; `fallback` otherwise."""
    subject = " ".join((subject or "").split())
    if not subject:
        return fallback
    return subject if _RE.match(subject) else f"Re: {subject}"


def references(thread: Sequence[str]) -> list[str]:
    """The References of a reply to `thread` (oldest first): the first message and the
    latest ones, at most MAX_REFERENCES."""
    if len(thread) <= MAX_REFERENCES:
        return list(thread)
    return [thread[0], *thread[-(MAX_REFERENCES - 1) :]]


def html_body(text: str) -> str:
    """The text as HTML: escaped (an operator's reply is text, never markup), paragraphs
    and line breaks kept."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    inner = "\n".join(
        "<p>" + "<br>\n".join(html.escape(line) for line in p.split("\n")) + "</p>"
        for p in paragraphs
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>'
        f'<body><div dir="auto">{inner}</div></body></html>\n'
    )


def build(reply: Reply) -> EmailMessage:
    message = EmailMessage(policy=SMTP)
    message["From"] = formataddr((reply.from_name, reply.from_address))
    message["To"] = formataddr((reply.to_name, reply.to_address))
    message["Reply-To"] = reply.reply_to
    message["Subject"] = reply.subject
    message["Date"] = format_datetime(reply.date)
    message["Message-ID"] = _bracketed(reply.message_id)
    if reply.thread:
        message["In-Reply-To"] = _bracketed(reply.thread[-1])
        message["References"] = " ".join(map(_bracketed, references(reply.thread)))
    # Replies to an operator are welcome; an auto-responder should still not loop on it.
    message["Auto-Submitted"] = "no"
    # Quoted-printable: 7-bit clean for any relay, and lines within SMTP's limit.
    text = reply.body if reply.body.endswith("\n") else reply.body + "\n"
    message.set_content(text, cte="quoted-printable")
    message.add_alternative(html_body(reply.body), subtype="html", cte="quoted-printable")
    return message


def to_bytes(message: EmailMessage, key: DkimKey | None = None) -> bytes:
    """The message as sent (CRLF line ends), DKIM-signed when a key is given."""
    raw = message.as_bytes(policy=SMTP)
    if key is None:
        return raw
    present = {name.lower() for name in message}
    headers = [h for h in DKIM_HEADERS if h.decode().lower() in present]
    signature = dkim.sign(
        raw,
        key.selector.encode(),
        key.domain.encode(),
        key.private_key,
        include_headers=headers,
    )
    return bytes(signature) + raw
