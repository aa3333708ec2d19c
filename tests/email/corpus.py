"""Test messages, built here in the shapes real mailers send (no file is read)."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.mime.base import MIMEBase
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime

# A 1x1 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
DATE = format_datetime(datetime(2026, 12, 7, 10, 0, tzinfo=UTC))


def _headers(
    msg: EmailMessage | MIMEMultipart | MIMEText,
    *,
    sender: str,
    to: str,
    subject: str,
    message_id: str | None,
    in_reply_to: str | None = None,
    references: str | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = DATE
    if message_id is not None:
        msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        msg["References"] = references
    for name, value in (extra or {}).items():
        msg[name] = value


def plain(
    body: str,
    *,
    sender: str = "Jane Doe <jane@example.com>",
    to: str = "1@threadline.localhost",
    subject: str = "Help with my order",
    message_id: str | None = "m1@example.com",
    in_reply_to: str | None = None,
    references: str | None = None,
    charset: str = "utf-8",
    encoding: str | None = None,
    extra: dict[str, str] | None = None,
) -> bytes:
    """A single text part in `charset` (`encoding`: `base64` or `quoted-printable`)."""
    msg = MIMEText(body, "plain", charset)
    if encoding is not None:
        del msg["Content-Transfer-Encoding"]
        msg.set_payload(body.encode(charset))
        if encoding == "base64":
            from email import encoders

            encoders.encode_base64(msg)
        else:
            from email import encoders

            encoders.encode_quopri(msg)
    _headers(
        msg,
        sender=sender,
        to=to,
        subject=subject,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        extra=extra,
    )
    return msg.as_bytes()


def gmail(message_id: str = "CAgmail1@mail.gmail.com", **kw: str) -> bytes:
    """Gmail: multipart/alternative, the quote under "On ... wrote:", a signature."""
    text = (
        "Yes, the parcel arrived today, thank you!\n\n"
        "--\nJohn Smith\nACME Corp\n\n"
        "On Mon, Dec 7, 2026 at 9:00 AM Support <1@threadline.localhost> wrote:\n"
        "> Has your parcel arrived?\n> Best, Ann\n"
    )
    html = (
        '<div dir="ltr">Yes, the parcel arrived today, thank you!<br></div>'
        '<div class="gmail_quote"><blockquote>Has your parcel arrived?</blockquote></div>'
    )
    msg = MIMEMultipart("alternative")
    msg.attach(MIMEText(text, "plain", "utf-8"))
    msg.attach(MIMEText(html, "html", "utf-8"))
    _headers(
        msg,
        sender=kw.get("sender", "John Smith <john.smith@gmail.com>"),
        to=kw.get("to", "1@threadline.localhost"),
        subject=kw.get("subject", "Re: Your parcel"),
        message_id=message_id,
        in_reply_to=kw.get("in_reply_to"),
        references=kw.get("references"),
    )
    return msg.as_bytes()


def outlook(message_id: str = "AM0PR01MB1234@eurprd01.prod.outlook.com") -> bytes:
    """Outlook: windows-1252 quoted-printable text, an HTML part, the quote under a
    "From: / Sent:" block."""
    text = (
        "The invoice is wrong: I paid 30 € twice.\n\n"
        "________________________________\n"
        "From: Support <1@threadline.localhost>\n"
        "Sent: Monday, December 7, 2026 9:00 AM\n"
        "To: Olga <olga@outlook.com>\n"
        "Subject: Your invoice\n\n"
        "Here is your invoice.\n"
    )
    msg = MIMEMultipart("alternative")
    part = MIMEText(text, "plain", "windows-1252")
    msg.attach(part)
    msg.attach(
        MIMEText(
            "<html><body><p>The invoice is wrong: I paid 30 &euro; twice.</p>"
            '<div id="divRplyFwdMsg">From: Support</div></body></html>',
            "html",
            "windows-1252",
        )
    )
    _headers(
        msg,
        sender="Olga Petrova <olga@outlook.com>",
        to="1@threadline.localhost",
        subject="Invoice",
        message_id=message_id,
    )
    return msg.as_bytes()


def apple_mail(message_id: str = "A1B2C3D4@icloud.com") -> bytes:
    """Apple Mail: alternative(text, related(html, inline image by cid))."""
    msg = MIMEMultipart("alternative")
    msg.attach(MIMEText("Here is a screenshot of the error.\n", "plain", "utf-8"))
    related = MIMEMultipart("related")
    related.attach(
        MIMEText(
            '<html><body>Here is a screenshot of the error.<img src="cid:shot@apple">'
            "<script>alert(1)</script></body></html>",
            "html",
            "utf-8",
        )
    )
    image = MIMEImage(PNG, "png")
    image.add_header("Content-ID", "<shot@apple>")
    image.add_header("Content-Disposition", "inline", filename="shot.png")
    related.attach(image)
    msg.attach(related)
    _headers(
        msg,
        sender='"Ann Lee" <ann.lee@icloud.com>',
        to="1@threadline.localhost",
        subject="Error screen",
        message_id=message_id,
    )
    return msg.as_bytes()


def with_attachment(message_id: str = "att1@example.com", size: int = 2048) -> bytes:
    msg = MIMEMultipart("mixed")
    msg.attach(MIMEText("The log is attached.\n", "plain", "utf-8"))
    pdf = MIMEBase("application", "pdf")
    pdf.set_payload(b"%PDF-1.4 " + b"x" * size)
    from email import encoders

    encoders.encode_base64(pdf)
    pdf.add_header("Content-Disposition", "attachment", filename="report.pdf")
    msg.attach(pdf)
    _headers(
        msg,
        sender="Max <max@example.org>",
        to="1@threadline.localhost",
        subject="Log",
        message_id=message_id,
    )
    return msg.as_bytes()


def forwarded(message_id: str = "fwd1@example.com") -> bytes:
    """A forward as an attachment (message/rfc822): its text is not taken for this one's."""
    inner = plain("The original problem text.", message_id="orig@example.net", subject="Problem")
    msg = MIMEMultipart("mixed")
    msg.attach(MIMEText("Forwarding my colleague's question.\n", "plain", "utf-8"))
    attached = MIMEBase("message", "rfc822")
    from email.parser import BytesParser

    attached.set_payload([BytesParser(policy=policy.compat32).parsebytes(inner)])
    attached.add_header("Content-Disposition", "attachment", filename="problem.eml")
    msg.attach(attached)
    _headers(
        msg,
        sender="Pat <pat@example.com>",
        to="1@threadline.localhost",
        subject="Fwd: Problem",
        message_id=message_id,
    )
    return msg.as_bytes()


def bounce(message_id: str = "dsn1@mx.example.com", original: str = "out1@x") -> bytes:
    """A DSN (RFC 3464): multipart/report from the mailer daemon, with an empty sender."""
    return (
        "Return-Path: <>\r\n"
        "From: Mail Delivery Subsystem <mailer-daemon@mx.example.com>\r\n"
        "To: 1@threadline.localhost\r\n"
        "Subject: Delivery Status Notification (Failure)\r\n"
        f"Message-ID: <{message_id}>\r\n"
        f"In-Reply-To: <{original}>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
        "\r\n--b1\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "Delivery to the following recipient failed permanently: x@y.example\r\n"
        "\r\n--b1\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n\r\n"
        "Final-Recipient: rfc822; x@y.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "\r\n--b1--\r\n"
    ).encode()


def html_only(message_id: str = "html1@example.com") -> bytes:
    msg = MIMEText(
        "<p>Hello <b>team</b>,</p><p>please call me.<script>steal()</script>"
        '<a href="javascript:evil()">x</a><img src="https://t.example/p.gif" onerror="x()"></p>',
        "html",
        "utf-8",
    )
    _headers(
        msg,
        sender="Web Form <form@example.com>",
        to="1@threadline.localhost",
        subject="Call back",
        message_id=message_id,
    )
    return msg.as_bytes()


FORWARDED_TEXT = "Your order 42 was cancelled because the card was declined."


def inline_forward(shape: str, message_id: str = "ifwd1@example.com") -> bytes:
    """A forward written into the text, as mailers do by default: Gmail's marker line,
    Apple Mail's, or Outlook's header block under an `FW:` subject."""
    header_block = (
        "From: Shop <orders@shop.example>\n"
        "Date: Mon, Dec 7, 2026 at 9:00 AM\n"
        "Subject: Your order 42\n"
        "To: <jane@example.com>\n\n"
        f"{FORWARDED_TEXT}\n"
    )
    subject = "Fwd: Your order 42"
    if shape == "gmail":
        text = f"Why was this cancelled?\n\n---------- Forwarded message ---------\n{header_block}"
    elif shape == "apple":
        text = f"Why was this cancelled?\n\nBegin forwarded message:\n\n{header_block}"
    else:
        text = (
            "Why was this cancelled?\n\n________________________________\n"
            "From: Shop <orders@shop.example>\nSent: Monday, December 7, 2026 9:00 AM\n"
            f"To: Jane <jane@example.com>\nSubject: Your order 42\n\n{FORWARDED_TEXT}\n"
        )
        subject = "FW: Your order 42"
    return plain(text, message_id=message_id, subject=subject)


def dsn(
    original: str,
    *,
    message_id: str = "dsn2@mx.example.com",
    carries: str = "rfc822",
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <jane@example.com>: Recipient address rejected",
    sender: str = "Mail Delivery Subsystem <mailer-daemon@mx.example.com>",
) -> bytes:
    """A DSN (RFC 3464) about the message `original`, named by its returned copy
    (`carries="rfc822"`), its returned headers (`"headers"`) or an `Original-Message-ID`
    field of the report (`"field"`)."""
    returned = (
        f"From: Acme <key@threadline.localhost>\r\nTo: jane@example.com\r\n"
        f"Subject: Re: Parcel 42\r\nMessage-ID: <{original}>\r\n"
    )
    if carries == "rfc822":
        last = f"Content-Type: message/rfc822\r\n\r\n{returned}\r\nIt left today.\r\n"
    elif carries == "headers":
        last = f"Content-Type: text/rfc822-headers\r\n\r\n{returned}"
    else:
        last = "Content-Type: text/plain\r\n\r\n(no copy returned)\r\n"
    field = f"Original-Message-ID: <{original}>\r\n" if carries == "field" else ""
    return (
        "Return-Path: <>\r\n"
        f"From: {sender}\r\n"
        "To: key@threadline.localhost\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{message_id}>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b2"\r\n'
        "\r\n--b2\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "I'm sorry to have to inform you that your message could not be delivered.\r\n"
        "\r\n--b2\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.com\r\n{field}"
        "Arrival-Date: Mon, 7 Dec 2026 14:00:00 +0000\r\n\r\n"
        "Final-Recipient: rfc822; jane@example.com\r\n"
        "Original-Recipient: rfc822; jane@example.com\r\n"
        f"Action: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: {diagnostic}\r\n"
        f"\r\n--b2\r\n{last}"
        "\r\n--b2--\r\n"
    ).encode()
