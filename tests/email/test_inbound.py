"""Inbound e-mail: the corpus of shapes, threading, replays, loops and noise; both databases.

Expected answers come from the messages as built (what each says and where it points), not
from the parser under test.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.conftest import World
from tests.email import corpus
from threadline.api.config import DEFAULT_ATTACHMENT_TYPES
from threadline.apps import queries as app_q
from threadline.apps import service as apps
from threadline.apps.repository import AppRepository
from threadline.apps.service import utcnow
from threadline.attachments import service as files
from threadline.attachments.storage import LocalStorage
from threadline.channels.email import inbound
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AuthorKind, PartType
from threadline.core.errors import InvalidParameter
from threadline.core.model import Author
from threadline.db.engine import Database
from threadline.db.schema import conversation_parts as parts
from threadline.db.schema import (
    conversations,
    email_contacts,
    email_messages,
    email_participants,
)
from threadline.users import service as users

SETTINGS = inbound.MailSettings(mail_domain="threadline.localhost", mail_sender_limit="")
LIMITS = files.Limits(25 * 1024 * 1024, DEFAULT_ATTACHMENT_TYPES)


class Inbox:
    def __init__(self, db: Database, root: Path, app_id: int) -> None:
        self.db = db
        self.storage = LocalStorage(root)
        self.app_id = app_id

    async def receive(self, raw: bytes, **kw: Any) -> inbound.Received:
        return await inbound.receive(
            self.db, self.storage, LIMITS, SETTINGS, self.app_id, raw, **kw
        )

    async def counts(self) -> tuple[int, int]:
        async with self.db.read() as conn:
            n_conv = (
                await conn.execute(
                    select(func.count())
                    .select_from(conversations)
                    .where(conversations.c.app_id == self.app_id)
                )
            ).scalar_one()
            n_parts = (
                await conn.execute(
                    select(func.count())
                    .select_from(parts)
                    .join(conversations, conversations.c.id == parts.c.conversation_id)
                    .where(conversations.c.app_id == self.app_id)
                )
            ).scalar_one()
        return int(n_conv), int(n_parts)


@pytest.fixture
async def mail(db: Database, world: World, tmp_path: Path) -> Inbox:
    return Inbox(db, tmp_path / "files", world.app_id)


async def only_part(inbox: Inbox, cid: int) -> Any:
    (part,) = await service.get_parts(inbox.db, inbox.app_id, cid)
    return part


async def test_a_new_mail_starts_an_incoming_email_conversation(mail: Inbox) -> None:
    raw = corpus.gmail()
    got = await mail.receive(raw)
    assert got.outcome == "started"
    assert got.conversation_id is not None
    state = await service.get_conversation(mail.db, mail.app_id, got.conversation_id)
    assert state.type is not None
    assert state.type.value == "incoming_email"
    assert state.reply_type is not None
    assert state.reply_type.value == "email"
    assert state.replied
    assert state.admin_unread_count == 1
    part = await only_part(mail, got.conversation_id)
    assert part.type is PartType.REPLY_USER
    assert part.sent_via.value == "email_user"
    # The quote and the signature are stripped from what the inbox shows; all is kept.
    assert part.body == "Yes, the parcel arrived today, thank you!"
    email = part.body_json["email"]
    assert email["subject"] == "Re: Your parcel"
    assert email["from"] == {
        "address": "john.smith@gmail.com",
        "name": "John Smith",
        "user": state.user_id,
    }
    assert "Has your parcel arrived?" in email["text"]
    assert "<blockquote>Has your parcel arrived?</blockquote>" in email["html"]
    # The original message is a download (not a part's attachment).
    original = await files.find(mail.db, mail.app_id, email["original"])
    assert original.mime_type == "message/rfc822"
    assert await mail.storage.load(original.storage_key) == raw
    assert original.conversation_id == got.conversation_id
    # The user, found or created by address, with the display name.
    async with mail.db.read() as conn:
        user = await app_q.user(conn, mail.app_id, state.user_id)
    assert user is not None
    assert user.props["$email"] == "john.smith@gmail.com"
    assert user.props["$name"] == "John Smith"


async def test_the_same_address_is_the_same_user(mail: Inbox) -> None:
    first = await mail.receive(corpus.plain("one", message_id="a@x"))
    second = await mail.receive(
        corpus.plain("two", message_id="b@x", sender="JANE <Jane@Example.com>")
    )
    assert first.outcome == second.outcome == "started"
    assert first.conversation_id != second.conversation_id  # no thread headers: a new one
    one = await service.get_conversation(mail.db, mail.app_id, first.conversation_id or 0)
    two = await service.get_conversation(mail.db, mail.app_id, second.conversation_id or 0)
    assert one.user_id == two.user_id


async def test_an_erased_users_address_is_forgotten(mail: Inbox) -> None:
    first = await mail.receive(corpus.plain("Before", message_id="e1@x"))
    state = await service.get_conversation(mail.db, mail.app_id, first.conversation_id or 0)
    await users.erase(mail.db, mail.app_id, state.user_id)
    async with mail.db.read() as conn:
        left = await conn.execute(
            select(func.count())
            .select_from(email_contacts)
            .where(email_contacts.c.user_id == state.user_id)
        )
        assert left.scalar_one() == 0
    after = await mail.receive(corpus.plain("After", message_id="e2@x"))
    new = await service.get_conversation(mail.db, mail.app_id, after.conversation_id or 0)
    assert new.user_id != state.user_id
    async with mail.db.read() as conn:
        user = await app_q.user(conn, mail.app_id, new.user_id)
    assert user is not None
    assert user.props["$email"] == "jane@example.com"


async def test_outlook_windows_1252_and_its_quote(mail: Inbox) -> None:
    got = await mail.receive(corpus.outlook())
    part = await only_part(mail, got.conversation_id or 0)
    assert part.body == "The invoice is wrong: I paid 30 € twice."
    assert "Here is your invoice." in part.body_json["email"]["text"]


@pytest.mark.parametrize(
    ("charset", "encoding", "text"),
    [
        ("utf-8", "base64", "Grüße aus München — ✓"),
        ("koi8-r", "base64", "Здравствуйте, заказ не пришёл"),
        ("windows-1251", "quoted-printable", "Добрый день, где мой заказ?"),
        ("iso-8859-1", "quoted-printable", "Où est ma commande ? Merci, François"),
        ("iso-8859-5", "base64", "Привет из ISO"),
        ("iso-8859-2", "quoted-printable", "Dzień dobry, zamówienie"),
        ("iso-8859-15", "quoted-printable", "Prix : 10 €"),
    ],
)
async def test_charsets_and_transfer_encodings(
    mail: Inbox, charset: str, encoding: str, text: str
) -> None:
    raw = corpus.plain(
        text, charset=charset, encoding=encoding, subject=text[:12], message_id=f"{charset}@x"
    )
    assert text.encode(charset) not in raw  # really encoded on the wire
    got = await mail.receive(raw)
    part = await only_part(mail, got.conversation_id or 0)
    assert part.body == text
    assert part.body_json["email"]["subject"] == text[:12]


async def test_apple_mail_inline_image_and_sanitised_html(mail: Inbox) -> None:
    got = await mail.receive(corpus.apple_mail())
    part = await only_part(mail, got.conversation_id or 0)
    assert part.body == "Here is a screenshot of the error."
    (image,) = part.attachments
    assert (image.filename, image.mime_type, image.size) == ("shot.png", "image/png", 67)
    email = part.body_json["email"]
    assert email["inline"] == {"shot@apple": image.id}
    assert 'src="cid:shot@apple"' in email["html"]
    assert "<script" not in email["html"]
    assert "alert" not in email["html"]
    stored = await files.find(mail.db, mail.app_id, image.id)
    assert await mail.storage.load(stored.storage_key) == corpus.PNG


async def test_attachment_stored_on_the_conversation(mail: Inbox) -> None:
    got = await mail.receive(corpus.with_attachment())
    part = await only_part(mail, got.conversation_id or 0)
    (pdf,) = part.attachments
    assert (pdf.filename, pdf.mime_type, pdf.size) == ("report.pdf", "application/pdf", 2057)
    stored = await files.find(mail.db, mail.app_id, pdf.id)
    assert stored.conversation_id == got.conversation_id


async def test_an_attachment_over_the_limit_is_left_in_the_original(
    db: Database, world: World, tmp_path: Path
) -> None:
    small = Inbox(db, tmp_path, world.app_id)
    raw = corpus.with_attachment(size=50_000)
    got = await inbound.receive(
        db, small.storage, files.Limits(20_000, ("*/*",)), SETTINGS, world.app_id, raw
    )
    part = await only_part(small, got.conversation_id or 0)
    assert part.attachments == ()
    assert part.body_json["email"]["refused_files"] == ["report.pdf"]
    # The whole message, the file in it, stays a download: a message may be larger than a
    # file (THREADLINE_MAIL_MAX_MESSAGE_BYTES).
    original = await files.find(db, world.app_id, part.body_json["email"]["original"])
    assert await small.storage.load(original.storage_key) == raw


async def test_forwarded_mail_keeps_the_forward_as_a_file(mail: Inbox) -> None:
    got = await mail.receive(corpus.forwarded())
    part = await only_part(mail, got.conversation_id or 0)
    assert part.body == "Forwarding my colleague's question."
    (eml,) = part.attachments
    assert (eml.filename, eml.mime_type) == ("problem.eml", "message/rfc822")


@pytest.mark.parametrize("shape", ["gmail", "apple", "outlook"])
async def test_an_inline_forward_shows_what_was_forwarded(mail: Inbox, shape: str) -> None:
    got = await mail.receive(corpus.inline_forward(shape, message_id=f"ifwd-{shape}@x"))
    assert got.outcome == "started"
    part = await only_part(mail, got.conversation_id or 0)
    # The note and the forwarded message both: the reply parser would take the forwarded
    # part for quoted history, and the operator would see only the note.
    assert part.body.startswith("Why was this cancelled?")
    assert corpus.FORWARDED_TEXT in part.body
    assert part.body_json["email"]["from"]["address"] == "jane@example.com"
    state = await service.get_conversation(mail.db, mail.app_id, got.conversation_id or 0)
    async with mail.db.read() as conn:
        user = await app_q.user(conn, mail.app_id, state.user_id)
    assert user is not None
    assert user.props["$email"] == "jane@example.com"  # the forwarder, not the shop


async def test_html_only_mail_is_read_as_text_and_sanitised(mail: Inbox) -> None:
    got = await mail.receive(corpus.html_only())
    part = await only_part(mail, got.conversation_id or 0)
    assert "Hello team" in part.body
    assert "please call me." in part.body
    html = part.body_json["email"]["html"]
    assert "<b>team</b>" in html
    for bad in ("<script", "steal", "javascript:", "onerror"):
        assert bad not in html


async def test_reply_threads_by_in_reply_to_and_reopens(mail: Inbox, world: World) -> None:
    first = await mail.receive(corpus.plain("First", message_id="t1@x"))
    cid = first.conversation_id or 0
    admin = Author(AuthorKind.ADMIN, world.admin_id)
    await service.perform(mail.db, mail.app_id, cid, ev.AdminReply(author=admin, body="Hi"))
    await service.perform(mail.db, mail.app_id, cid, ev.Close(by=admin))
    again = await mail.receive(
        corpus.plain("Still broken", message_id="t2@x", in_reply_to="t1@x", subject="Re: x")
    )
    assert (again.outcome, again.conversation_id) == ("replied", cid)
    state = await service.get_conversation(mail.db, mail.app_id, cid)
    assert not state.closed  # the existing rule: a user reply reopens
    kinds = [p.type for p in await service.get_parts(mail.db, mail.app_id, cid)]
    assert kinds[-1] is PartType.REPLY_USER
    assert PartType.CLOSED in kinds
    # By References alone, the newest known id anywhere in the chain.
    third = await mail.receive(
        corpus.plain("And again", message_id="t3@x", references="<zz@none> <t2@x>")
    )
    assert (third.outcome, third.conversation_id) == ("replied", cid)


async def test_reply_address_threads_without_headers(mail: Inbox) -> None:
    first = await mail.receive(corpus.plain("First", message_id="r1@x"))
    cid = first.conversation_id or 0
    token = await inbound.reply_token(mail.db, mail.app_id, cid)
    assert token == await inbound.reply_token(mail.db, mail.app_id, cid)  # made once
    got = await mail.receive(
        corpus.plain("Reply", message_id="r2@x", to=f"reply+{token}@threadline.localhost")
    )
    assert (got.outcome, got.conversation_id) == ("replied", cid)
    # A token of the wrong domain, or a made-up one, threads nothing.
    other = await mail.receive(
        corpus.plain("Reply", message_id="r3@x", to=f"reply+{token}@elsewhere.example")
    )
    assert other.outcome == "started"
    assert other.conversation_id != cid


async def test_never_threaded_by_subject(mail: Inbox) -> None:
    first = await mail.receive(corpus.plain("One", message_id="s1@x", subject="Order 42"))
    second = await mail.receive(corpus.plain("Two", message_id="s2@x", subject="Re: Order 42"))
    assert second.outcome == "started"
    assert second.conversation_id != first.conversation_id


async def test_another_apps_message_ids_thread_nothing(
    db: Database, world: World, tmp_path: Path
) -> None:
    ours = Inbox(db, tmp_path / "a", world.app_id)
    theirs = Inbox(db, tmp_path / "b", world.foreign_app_id)
    first = await theirs.receive(corpus.plain("Theirs", message_id="x1@x"))
    token = await inbound.reply_token(db, world.foreign_app_id, first.conversation_id or 0)
    got = await ours.receive(
        corpus.plain(
            "Mine",
            message_id="x2@x",
            in_reply_to="x1@x",
            to=f"reply+{token}@threadline.localhost",
        )
    )
    assert got.outcome == "started"
    assert await theirs.counts() == (1, 1)
    # The same Message-ID in another app is that app's own message.
    same = await ours.receive(corpus.plain("Theirs", message_id="x1@x"))
    assert same.outcome == "started"


async def test_replaying_a_message_creates_nothing(mail: Inbox) -> None:
    raw = corpus.with_attachment()
    first = await mail.receive(raw)
    before = await mail.counts()
    again = await mail.receive(raw)
    assert again.outcome == "duplicate"
    assert (again.conversation_id, again.part_id) == (first.conversation_id, first.part_id)
    assert await mail.counts() == before
    # Concurrent deliveries of one message: one conversation, one part.
    raw2 = corpus.gmail(message_id="race@x")
    results = await asyncio.gather(*(mail.receive(raw2) for _ in range(4)))
    assert sorted(r.outcome for r in results).count("started") == 1
    assert {r.conversation_id for r in results} == {results[0].conversation_id}
    assert await mail.counts() == (before[0] + 1, before[1] + 1)


async def test_a_message_without_message_id_is_named_by_its_content(mail: Inbox) -> None:
    raw = corpus.plain("No id", message_id=None)
    assert (await mail.receive(raw)).outcome == "started"
    assert (await mail.receive(raw)).outcome == "duplicate"


async def test_auto_reply_is_stored_without_reopening_or_counting(
    mail: Inbox, world: World
) -> None:
    first = await mail.receive(corpus.plain("Question", message_id="q1@x"))
    cid = first.conversation_id or 0
    admin = Author(AuthorKind.ADMIN, world.admin_id)
    await service.perform(mail.db, mail.app_id, cid, ev.AdminReply(author=admin, body="Answer"))
    await service.perform(mail.db, mail.app_id, cid, ev.Close(by=admin))
    before = await service.get_conversation(mail.db, mail.app_id, cid)
    for n, headers in enumerate(
        [
            {"Auto-Submitted": "auto-replied"},
            {"X-Autoreply": "yes"},
            {},  # by its subject alone
        ]
    ):
        got = await mail.receive(
            corpus.plain(
                "I am out of the office until Monday.",
                message_id=f"ooo{n}@x",
                in_reply_to="q1@x",
                subject="Out of Office: Question" if not headers else "Re: Question",
                extra=headers,
            )
        )
        assert (got.outcome, got.conversation_id) == ("auto_reply", cid)
    after = await service.get_conversation(mail.db, mail.app_id, cid)
    assert after.closed
    assert after.replies_count == before.replies_count
    assert after.admin_unread_count == before.admin_unread_count
    assert after.reply_last_type is PartType.REPLY_ADMIN
    last = (await service.get_parts(mail.db, mail.app_id, cid))[-1]
    assert last.type is PartType.AUTO_REPLY
    assert last.author.kind is AuthorKind.SYSTEM
    assert last.body_json is not None
    assert last.body_json["email"]["auto_reply"] is True
    # An automatic answer to nothing known starts nothing.
    stray = await mail.receive(
        corpus.plain("Away", message_id="ooo9@x", extra={"Auto-Submitted": "auto-replied"})
    )
    assert (stray.outcome, stray.reason) == ("ignored", "auto_reply")


async def test_bounces_and_loops_are_ignored(mail: Inbox, world: World) -> None:
    before = await mail.counts()
    got = await mail.receive(corpus.bounce())
    assert (got.outcome, got.reason) == ("ignored", "bounce")
    loop = await mail.receive(
        corpus.plain(
            "Echo", message_id="loop@x", sender=f"Acme <{world.app_id}@threadline.localhost>"
        )
    )
    assert (loop.outcome, loop.reason) == ("ignored", "loop")
    await inbound.add_address(mail.db, world.app_id, "support@acme.test", "threadline.localhost")
    own = await mail.receive(
        corpus.plain("Echo", message_id="loop2@x", sender="Support <support@acme.test>")
    )
    assert (own.outcome, own.reason) == ("ignored", "loop")
    assert await mail.counts() == before
    assert (await mail.receive(corpus.bounce())).outcome == "duplicate"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"this is not a message at all",
        b"Subject: no sender\r\n\r\nbody",
        b"From: nobody\r\nSubject: x\r\n\r\nbody",
        b"From: <@>\r\n\r\n",
    ],
)
async def test_malformed_messages_are_refused_and_change_nothing(mail: Inbox, raw: bytes) -> None:
    before = await mail.counts()
    with pytest.raises(InvalidParameter) as refused:
        await mail.receive(raw)
    assert refused.value.param == "message"
    assert await mail.counts() == before


async def test_broken_charset_and_encoding_still_arrive(mail: Inbox) -> None:
    raw = (
        b"From: Zed <zed@example.com>\r\nSubject: =?x-unknown?q?Hi?=\r\n"
        b"Message-ID: <broken@x>\r\nContent-Type: text/plain; charset=x-unknown\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nSGVsbG8gd29ybGQ=!!\r\n"
    )
    got = await mail.receive(raw)
    assert got.outcome == "started"
    part = await only_part(mail, got.conversation_id or 0)
    assert part.body.startswith("Hello world")


async def test_a_sender_over_the_limit_is_refused(mail: Inbox) -> None:
    limiter = inbound.SenderLimiter("2/minute", mail.db)
    for n in range(2):
        raw = corpus.plain(f"n{n}", message_id=f"flood{n}@x")
        assert (await mail.receive(raw, limiter=limiter)).outcome == "started"
    before = await mail.counts()
    with pytest.raises(inbound.SenderThrottled):
        await mail.receive(corpus.plain("n2", message_id="flood2@x"), limiter=limiter)
    assert await mail.counts() == before
    other = corpus.plain("other", message_id="calm@x", sender="calm@example.com")
    assert (await mail.receive(other, limiter=limiter)).outcome == "started"


# ---------------------------------------------------------------------------
# Who may write in a conversation by mail.


async def test_a_copied_colleague_replies_in_the_conversation_as_themselves(
    mail: Inbox, world: World
) -> None:
    first = await mail.receive(
        corpus.plain(
            "Our printer is broken.",
            message_id="cc1@x",
            extra={"Cc": "Bob Builder <Bob@Example.com>"},
        )
    )
    cid = first.conversation_id or 0
    state = await service.get_conversation(mail.db, mail.app_id, cid)
    admin = Author(AuthorKind.ADMIN, world.admin_id)
    await service.perform(mail.db, mail.app_id, cid, ev.AdminReply(author=admin, body="Model?"))
    await service.perform(mail.db, mail.app_id, cid, ev.Close(by=admin))
    got = await mail.receive(
        corpus.plain(
            "It is the X200, I sit next to it.",
            message_id="cc2@x",
            in_reply_to="cc1@x",
            sender="Bob Builder <bob@example.com>",
            extra={"Cc": "Jane Doe <jane@example.com>, Dee <dee@example.com>"},
        )
    )
    assert (got.outcome, got.conversation_id) == ("replied", cid)
    after = await service.get_conversation(mail.db, mail.app_id, cid)
    assert not after.closed  # the user's side answered: it reopens, and counts
    assert after.reply_last_type is PartType.REPLY_USER
    assert after.user_id == state.user_id
    last = (await service.get_parts(mail.db, mail.app_id, cid))[-1]
    assert last.type is PartType.REPLY_USER
    sent_by = last.body_json["email"]["from"]
    assert sent_by["address"] == "bob@example.com"
    assert sent_by["name"] == "Bob Builder"
    assert sent_by["user"] != state.user_id  # Bob is a user of his own
    async with mail.db.read() as conn:
        bob = await app_q.user(conn, mail.app_id, sent_by["user"])
    assert bob is not None
    assert bob.props["$email"] == "bob@example.com"
    # The user's own messages name the user; the first did too.
    first_part = (await service.get_parts(mail.db, mail.app_id, cid))[0]
    assert first_part.body_json["email"]["from"]["user"] == state.user_id
    # Whom Bob copied became a participant too.
    dee = await mail.receive(
        corpus.plain("Me too.", message_id="cc3@x", in_reply_to="cc2@x", sender="dee@example.com")
    )
    assert (dee.outcome, dee.conversation_id) == ("replied", cid)


async def test_a_stranger_to_the_thread_gets_a_conversation_of_their_own(mail: Inbox) -> None:
    first = await mail.receive(corpus.plain("My order is late.", message_id="o1@x"))
    cid = first.conversation_id or 0
    token = await inbound.reply_token(mail.db, mail.app_id, cid)
    before_parts = len(await service.get_parts(mail.db, mail.app_id, cid))
    # By the Message-ID (a forward reached them), and by the reply address.
    for n, kw in enumerate(
        [{"in_reply_to": "o1@x"}, {"to": f"reply+{token}@threadline.localhost"}]
    ):
        got = await mail.receive(
            corpus.plain(
                "Cancel that order, I am her manager.",
                message_id=f"stranger{n}@x",
                sender="Mallory <mallory@example.net>",
                **kw,
            )
        )
        assert got.outcome == "started"
        assert got.conversation_id not in (None, cid)
        part = await only_part(mail, got.conversation_id or 0)
        assert part.body_json["email"]["answers"] == cid
        own = await service.get_conversation(mail.db, mail.app_id, got.conversation_id or 0)
        async with mail.db.read() as conn:
            user = await app_q.user(conn, mail.app_id, own.user_id)
        assert user is not None
        assert user.props["$email"] == "mallory@example.net"
    assert len(await service.get_parts(mail.db, mail.app_id, cid)) == before_parts
    # The user, from the address that leads to them, still answers in place.
    again = await mail.receive(
        corpus.plain("Any news?", message_id="o2@x", in_reply_to="o1@x", sender="JANE@example.com")
    )
    assert (again.outcome, again.conversation_id) == ("replied", cid)


async def test_the_users_own_address_answers_a_conversation_not_started_by_mail(
    mail: Inbox, world: World
) -> None:
    async with mail.db.write() as conn:
        user_id = await AppRepository(conn).create_user(
            mail.app_id, "shop-42", {"$email": "Kim@Example.com"}, utcnow()
        )
    started = await service.start_by_user(mail.db, mail.app_id, user_id, ev.UserReply(body="Hi"))
    cid = started.state.id
    token = await inbound.reply_token(mail.db, mail.app_id, cid)
    got = await mail.receive(
        corpus.plain(
            "By mail now",
            message_id="k1@x",
            sender="kim@example.com",
            to=f"reply+{token}@threadline.localhost",
        )
    )
    assert (got.outcome, got.conversation_id) == ("replied", cid)


async def test_erasing_a_user_forgets_whom_their_conversations_were_written_to(
    mail: Inbox,
) -> None:
    first = await mail.receive(
        corpus.plain("Hi", message_id="g1@x", extra={"Cc": "colleague@example.com"})
    )
    state = await service.get_conversation(mail.db, mail.app_id, first.conversation_id or 0)
    async with mail.db.read() as conn:
        rows = await conn.execute(select(email_participants.c.address))
        assert sorted(r.address for r in rows) == ["colleague@example.com", "jane@example.com"]
    await users.erase(mail.db, mail.app_id, state.user_id)
    async with mail.db.read() as conn:
        left = await conn.execute(select(func.count()).select_from(email_participants))
        assert left.scalar_one() == 0


# ---------------------------------------------------------------------------
# Property: replaying messages (same Message-ID) in any order creates nothing new.


async def _deliver(db_url: str, root: Path, order: list[int]) -> tuple[int, int, int, int]:
    db = Database(db_url)
    try:
        made = await apps.create_app(db, "prop")
        box = Inbox(db, root / str(made.app_id), made.app_id)
        for index in order:
            raw = corpus.plain(
                f"message {index}",
                message_id=f"p{index}@x",
                in_reply_to="p0@x" if index else None,
            )
            await box.receive(raw)
        n_conv, n_parts = await box.counts()
        async with db.read() as conn:
            n_ids = (
                await conn.execute(
                    select(func.count())
                    .select_from(email_messages)
                    .where(email_messages.c.app_id == made.app_id)
                )
            ).scalar_one()
        return n_conv, n_parts, int(n_ids), made.app_id
    finally:
        await db.dispose()


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(order=st.lists(st.integers(0, 3), min_size=1, max_size=8))
def test_replays_create_nothing_new(db_url: str, tmp_path: Path, order: list[int]) -> None:
    # Reference: the first delivery of each message adds one part; a reply that arrives
    # before message 0 was received starts a conversation of its own.
    seen: list[int] = []
    conversations_expected = 0
    for index in order:
        if index in seen:
            continue
        if index == 0 or 0 not in seen:
            conversations_expected += 1
        seen.append(index)
    n_conv, n_parts, n_ids, _ = asyncio.run(_deliver(db_url, tmp_path, order))
    assert (n_conv, n_parts, n_ids) == (conversations_expected, len(seen), len(seen))
