"""Reading an RFC 5322 message: pure, no I/O.

The stdlib's `email` package (policy `default`) decodes headers, charsets,
quoted-printable and base64; `nh3` sanitises HTML; `mail-parser-reply` strips quoted
history and signatures from the text the inbox shows (the full text stays in the part's
`body_json`, and the original message is kept as a download).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr
from typing import Any

import nh3
from mailparser_reply import EmailReplyParser
from mailparser_reply import parser as _reply_parser
from mailparser_reply.constants import OUTLOOK_MAIL_SEPARATOR

# The languages mail-parser-reply knows reply headers ("On ... wrote:") and signatures of.
# (Those it does not know are dropped, as its own parser does.)
_REPLY_LANGUAGES: list[str] = EmailReplyParser(
    languages=["en", "de", "fr", "es", "it", "nl", "pl", "sv", "da", "cs"]
).languages
_OUTLOOK_SEPARATOR = re.compile(f"([^\n]){OUTLOOK_MAIL_SEPARATOR}")


class _ReplyMessage(_reply_parser.EmailMessage):  # type: ignore[misc]
    """mail-parser-reply's message, with its text normalisation done as the library means it.

    The library (1.36, the latest; upstream issue alfonsrv/mail-parser-reply#29) calls
    `re.sub(pattern, repl, text, re.MULTILINE)`: the flag lands in `count` (8), which Python
    3.13 deprecates with a `DeprecationWarning` at every message. Where warnings are errors
    (the test suite) that failed every parse, so quotes were kept on 3.13 alone; elsewhere
    it only capped the substitution at 8 separators. The pattern has no `^` or `$`, so the
    flag changes nothing: here the same substitution runs on the whole text. The rest of the
    library (reply headers, signatures, disclaimers, splitting) is used unchanged. Drop this
    class once a release calls `re.sub` rightly.
    """

    text: str

    def _normalize_text(self) -> None:
        text = self.text.replace("\r\n", "\n")
        text = "\n".join(line.strip() for line in text.split("\n"))
        # A reply written right above an Outlook separator line is split from it.
        self.text = _OUTLOOK_SEPARATOR.sub("\\1\n", text)


def _read_replies(text: str) -> Any:
    """The library's `EmailReplyParser.read`, with the message class above."""
    return _ReplyMessage(text=text, languages=list(_REPLY_LANGUAGES)).read()


# Subjects that mark an automatic answer when a mailer sets none of the headers for it
# (older Outlook/Exchange out-of-office answers).
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|"
    r"abwesenheitsnotiz|absence|réponse automatique)\b",
    re.IGNORECASE,
)
# A forward: its subject's prefix (English, German, French, Spanish/Italian, Dutch), or the
# line that Gmail ("---------- Forwarded message ---------") or Apple Mail ("Begin forwarded
# message:") puts above what was forwarded.
_FORWARD_SUBJECT = re.compile(r"^\s*(fwd?|wg|tr|rv|doorgestuurd)\s*:", re.IGNORECASE)
_FORWARD_MARKER = re.compile(r"-+\s*forwarded message\s*-+|begin forwarded message:", re.IGNORECASE)
_ID_TOKEN = re.compile(r"<([^<>\s]+)>")
_REPLY_ADDRESS = re.compile(r"^reply\+([a-z0-9]{8,32})@(.+)$")
_DIAGNOSTIC_CODE = re.compile(r"^\s*smtp\s*;\s*([245]\d\d)\b", re.IGNORECASE)
# The longest status or diagnostic kept from a report (a diagnostic is one line of a server).
MAX_REPORT_CHARS = 400

MAX_MESSAGE_ID_CHARS = 998


class MalformedMail(ValueError):
    """The bytes are not a message Threadline can take (no sender address, ...)."""


@dataclass(frozen=True, slots=True)
class MailFile:
    """An attachment, or an inline image that the HTML names as `cid:<content_id>`."""

    filename: str
    mime_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass(frozen=True, slots=True)
class BounceReport:
    """What a delivery status notification (RFC 3464, `multipart/report;
    report-type=delivery-status`) says: the Message-IDs of the message it reports on (from
    its `message/rfc822` or `text/rfc822-headers` part, or `Original-Message-ID`), whether
    delivery failed for good (`Action: failed`, or a 5.x.x status without an action), and
    the first failed recipient's status and diagnostic."""

    original_ids: tuple[str, ...]
    failed: bool
    status: str
    diagnostic: str
    recipient: str

    def smtp_code(self) -> int | None:
        """The SMTP reply code in the diagnostic (`smtp; 550 5.1.1 ...`), if any."""
        match = _DIAGNOSTIC_CODE.search(self.diagnostic)
        return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class InboundMail:
    message_id: str
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    from_address: str
    from_name: str
    recipients: tuple[str, ...]
    subject: str
    text: str
    html: str | None
    reply: str
    files: tuple[MailFile, ...]
    auto_reply: bool
    bounce: bool
    # The addresses of its To and Cc headers (the people it was written to), lower-cased.
    copied: tuple[str, ...] = ()
    # A delivery status notification's report (None: not one).
    bounce_report: BounceReport | None = None

    def thread_ids(self) -> tuple[str, ...]:
        """The Message-IDs this one answers, the most direct first."""
        seen: list[str] = []
        for ident in (*self.in_reply_to, *reversed(self.references)):
            if ident not in seen:
                seen.append(ident)
        return tuple(seen)

    def reply_tokens(self, domain: str) -> tuple[str, ...]:
        """The tokens of the reply addresses (`reply+<token>@<domain>`) it was sent to."""
        tokens: list[str] = []
        for address in self.recipients:
            match = _REPLY_ADDRESS.match(address)
            if match and match.group(2) == domain.lower() and match.group(1) not in tokens:
                tokens.append(match.group(1))
        return tuple(tokens)


def message_ids(value: str | None) -> tuple[str, ...]:
    """The `<...>` ids of a Message-ID, In-Reply-To or References header, without brackets."""
    if not value:
        return ()
    found = _ID_TOKEN.findall(str(value))
    if not found and str(value).strip() and " " not in str(value).strip():
        found = [str(value).strip()]  # a bare id without brackets, as some mailers send
    return tuple(i[:MAX_MESSAGE_ID_CHARS] for i in found)


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:  # a header the policy cannot parse
        value = None
    if value is None:
        raw = msg.get_all(name, failobj=[]) if hasattr(msg, "get_all") else []
        return str(raw[0]) if raw else ""
    return str(value)


def _decoded_text(part: Message) -> str:
    """The part's text in its declared charset; an unknown or wrong charset decodes with
    replacement characters rather than failing the message."""
    if isinstance(part, EmailMessage):
        try:
            content = part.get_content()
        except (LookupError, UnicodeError, ValueError, AssertionError):
            content = None
        if isinstance(content, str):
            return content
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def _is_auto_reply(msg: Message, subject: str) -> bool:
    auto = _header(msg, "Auto-Submitted").strip().lower()
    if auto and auto != "no":
        return True
    if any(_header(msg, name) for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder")):
        return True
    if _header(msg, "Precedence").strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.match(subject))


def _is_bounce(msg: Message, from_address: str) -> bool:
    if msg.get_content_type() == "multipart/report":
        return True
    local = from_address.split("@", 1)[0]
    return local in ("mailer-daemon", "postmaster") and _header(msg, "Return-Path").strip() in (
        "",
        "<>",
    )


def _field(block: Message, name: str) -> str:
    return " ".join(_header(block, name).split())[:MAX_REPORT_CHARS]


def _header_blocks(part: Message) -> list[Message]:
    """The header blocks of a `message/delivery-status` part (the per-message one, then one
    per recipient), however the parser held them."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [b for b in payload if isinstance(b, Message)]
    text = payload if isinstance(payload, str) else _decoded_text(part)
    parser = BytesParser(policy=policy.default)
    return [
        parser.parsebytes(chunk.strip().encode("utf-8", "replace") + b"\n\n", headersonly=True)
        for chunk in re.split(r"\r?\n\s*\r?\n", text)
        if chunk.strip()
    ]


def _bounce_report(msg: Message) -> BounceReport | None:
    """The report of a delivery status notification; None when `msg` is not one."""
    if msg.get_content_type() != "multipart/report":
        return None
    if str(msg.get_param("report-type", "")).lower() != "delivery-status":
        return None
    ids: list[str] = []
    recipients: list[tuple[str, str, str, str]] = []  # action, status, diagnostic, recipient
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            for block in _header_blocks(part):
                ids.extend(message_ids(_header(block, "Original-Message-ID")))
                recipient = _field(block, "Final-Recipient") or _field(block, "Original-Recipient")
                if recipient or _field(block, "Action") or _field(block, "Status"):
                    recipients.append(
                        (
                            _field(block, "Action").lower(),
                            _field(block, "Status"),
                            _field(block, "Diagnostic-Code"),
                            recipient.split(";", 1)[-1].strip(),
                        )
                    )
        elif ctype in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                ids.extend(message_ids(_header(inner[0], "Message-ID")))
        elif ctype in ("text/rfc822-headers", "message/global-headers"):
            headers = BytesParser(policy=policy.default).parsebytes(
                _decoded_text(part).encode("utf-8", "replace"), headersonly=True
            )
            ids.extend(message_ids(_header(headers, "Message-ID")))
    failed = [r for r in recipients if r[0] == "failed" or (not r[0] and r[1].startswith("5"))]
    first = failed[0] if failed else recipients[0] if recipients else ("", "", "", "")
    return BounceReport(
        original_ids=tuple(dict.fromkeys(ids)),
        failed=bool(failed),
        status=first[1],
        diagnostic=first[2],
        recipient=first[3],
    )


def _file_of(part: Message) -> MailFile | None:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload:
        return None
    content_id = message_ids(_header(part, "Content-ID"))
    mime_type = part.get_content_type()
    filename = part.get_filename() or ""
    if not filename:
        subtype = mime_type.split("/", 1)[1] if "/" in mime_type else "bin"
        filename = f"{'image' if mime_type.startswith('image/') else 'file'}.{subtype}"
    return MailFile(
        filename=str(filename),
        mime_type=mime_type,
        data=payload,
        content_id=content_id[0] if content_id else None,
        inline=part.get_content_disposition() == "inline" or bool(content_id),
    )


def _walk(msg: Message) -> tuple[list[str], list[str], list[MailFile]]:
    """The text parts, the HTML parts and the files, in order. A forwarded message
    (`message/rfc822`) is kept whole as a file; its text is not mistaken for this one's."""
    texts: list[str] = []
    htmls: list[str] = []
    files: list[MailFile] = []

    def visit(part: Message) -> None:
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = part.get_payload()
            data = (
                inner[0].as_bytes()
                if isinstance(inner, list) and inner and isinstance(inner[0], Message)
                else b""
            )
            if data:
                name = part.get_filename() or "forwarded.eml"
                files.append(MailFile(str(name), "message/rfc822", data))
            return
        if part.is_multipart():
            payload = part.get_payload()
            for sub in payload if isinstance(payload, list) else []:
                if isinstance(sub, Message):
                    visit(sub)
            return
        disposition = part.get_content_disposition()
        if disposition != "attachment" and ctype == "text/plain":
            texts.append(_decoded_text(part))
        elif disposition != "attachment" and ctype == "text/html":
            htmls.append(_decoded_text(part))
        else:
            found = _file_of(part)
            if found is not None:
                files.append(found)

    visit(msg)
    return texts, htmls, files


def sanitise_html(html: str) -> str:
    """HTML safe to show: nh3's defaults (no scripts, styles, event handlers or
    javascript: links), with `cid:` image sources kept so inline images can be resolved."""
    return nh3.clean(html, url_schemes={"http", "https", "mailto", "cid"})


def html_to_text(html: str) -> str:
    """A readable text of an HTML-only message."""
    text = nh3.clean(
        re.sub(r"(?i)<\s*(br|/p|/div|/li|/tr|/h[1-6])\b[^>]*>", "\n", html),
        tags=set(),
    )
    text = (
        text.replace("&nbsp;", " ").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def strip_reply(text: str, subject: str = "") -> str:
    """The new text of a reply: without the quoted history and the signature. A message that
    is all quote keeps its whole text, and so does a forward (by its subject, `Fwd:`, or its
    marker line, Gmail's and Apple Mail's): what was forwarded is what the sender wants
    read, and the reply parser takes it for quoted history."""
    if _FORWARD_SUBJECT.match(subject):
        return text.strip()
    try:
        replies = _read_replies(text).replies
        stripped = replies[0].content if replies else None
        if replies and replies[0].body.strip():
            stripped = replies[0].body
    except Exception:  # the parser's regular expressions on hostile input: keep it all
        return text.strip()
    shown = (stripped or text).strip()
    last_line = shown.rsplit("\n", 1)[-1]
    return text.strip() if _FORWARD_MARKER.fullmatch(last_line.strip()) else shown


def parse(raw: bytes) -> InboundMail:
    """Read a raw message. Raises `MalformedMail` when it has no usable sender address."""
    if not raw.strip():
        raise MalformedMail("the message is empty")
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    name, address = parseaddr(_header(msg, "From"))
    address = address.strip().lower()
    if "@" not in address or " " in address or address.startswith("@"):
        raise MalformedMail("the message has no sender address (From)")
    subject = " ".join(_header(msg, "Subject").split())
    recipients: list[str] = []
    copied: list[str] = []
    for header in ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To"):
        values = [str(v) for v in msg.get_all(header, failobj=[])]
        for _, addr in getaddresses(values):
            addr = addr.strip().lower()
            if "@" in addr and addr not in recipients:
                recipients.append(addr)
            if "@" in addr and header in ("To", "Cc") and addr not in copied:
                copied.append(addr)
    own_ids = message_ids(_header(msg, "Message-ID"))
    # A message without a Message-ID is named by its content, so a replay is still one.
    message_id = (
        own_ids[0] if own_ids else f"sha256-{hashlib.sha256(raw).hexdigest()}@threadline.invalid"
    )
    texts, htmls, files = _walk(msg)
    html = sanitise_html("\n".join(htmls)) if htmls else None
    text = "\n\n".join(t.strip() for t in texts if t.strip())
    if not text and htmls:
        text = html_to_text("\n".join(htmls))
    return InboundMail(
        message_id=message_id,
        in_reply_to=message_ids(_header(msg, "In-Reply-To")),
        references=message_ids(_header(msg, "References")),
        from_address=address,
        from_name=name.strip(),
        recipients=tuple(recipients),
        subject=subject,
        text=text,
        html=html,
        reply=strip_reply(text, subject) if text else "",
        files=tuple(files),
        auto_reply=_is_auto_reply(msg, subject),
        bounce=_is_bounce(msg, address),
        copied=tuple(copied),
        bounce_report=_bounce_report(msg),
    )
