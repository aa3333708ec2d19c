"""Receiving e-mail: find the app, the user and the conversation, then write through the
conversation service (which alone changes conversation fields).

The SMTP listener and `POST /ext/apps/{app}/email/inbound` both call `receive`, so both
ways in give the same result. A message is stored once: its Message-ID is unique per app
(`email_messages`), and the write carries a key derived from it (the conversation
service's idempotency), so a replay, even a concurrent one, creates nothing new.

Automatic answers (out-of-office, `Auto-Submitted`) in a known conversation are stored as
an `auto_reply` part by the system: the spec's content part that is no reply, so it
neither reopens the conversation nor counts as the user's answer. One that answers no known
conversation is ignored, as is mail from Threadline's own addresses (loops). A bounce (a
delivery status notification) that names a reply Threadline sent makes that reply's
delivery `bounced` (see `_take_bounce`); any other bounce is ignored.

Who may write in a conversation by mail: its user (by any address that leads to them), and
the people its messages were written to (To, Cc: `email_participants`), such as a colleague
the user copied. A participant's reply is the user's side answering (a user reply), with
the participant named as its sender (`body_json.email.from`, their own user). Anyone else
who answers the thread (a forward reached them) starts a conversation of their own, which
names the one they answered (`body_json.email.answers`): no one writes in a user's name by
knowing a Message-ID or a reply address.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.apps.repository import AppRepository, new_mail_key
from threadline.apps.service import utcnow
from threadline.attachments import service as files
from threadline.attachments.storage import Storage
from threadline.channels.email import deliveries
from threadline.channels.email.parse import InboundMail, MalformedMail, parse
from threadline.channels.email.senders import SenderLimiter as SenderLimiter
from threadline.channels.email.senders import SenderThrottled as SenderThrottled
from threadline.conversations import service as conversations
from threadline.conversations.repository import ConversationRepository
from threadline.core import events as ev
from threadline.core.delivery import DeliveryState
from threadline.core.enums import ConversationType, MessageStatus, PartType, ReplyType, SentVia
from threadline.core.errors import DomainError, InvalidParameter, NotFound
from threadline.core.idempotency import IdempotencyKeyReused
from threadline.core.model import Attachment, Author, JSONObject
from threadline.core.rules import MAX_BODY_CHARS
from threadline.db.engine import Database
from threadline.db.schema import (
    conversation_parts,
    email_addresses,
    email_app_keys,
    email_contacts,
    email_messages,
    email_participants,
    email_threads,
    users,
)
from threadline.db.schema import (
    conversations as conversations_table,
)

# HTML larger than this is not copied into the part (the original message keeps it).
MAX_KEPT_HTML_CHARS = 256 * 1024
# The addresses of one message recorded as a conversation's participants (a mail to
# hundreds of people is not a conversation with each).
MAX_PARTICIPANTS_PER_MESSAGE = 50


class MailSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="THREADLINE_", extra="ignore")

    # Apps receive mail at `<app key>@<mail_domain>`; replies at `reply+<token>@<mail_domain>`.
    mail_domain: str = "threadline.localhost"
    smtp_host: str = "127.0.0.1"
    # `threadline serve` runs the SMTP listener when this is set.
    smtp_port: int | None = None
    # Messages one sender may send to one app (the `limits` notation); empty: no limit.
    # A person writes a few mails an hour; a loop or a flood sends hundreds.
    mail_sender_limit: str = "20/minute;200/hour"
    # The largest message taken, by SMTP (552 beyond) or the inbound endpoint: room for a
    # file of the attachment limit (25 MiB) base64-encoded (a third more), and its text.
    # The original message is kept as a download up to this size too.
    mail_max_message_bytes: int = 40 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Received:
    """What became of a message: `started` a conversation, `replied` in one, stored as an
    `auto_reply`, a `duplicate` of one received before, or `ignored` (`reason`)."""

    outcome: str
    conversation_id: int | None = None
    part_id: int | None = None
    reason: str | None = None


def write_key(message_id: str) -> int:
    """The conversation service's idempotency key of a message: from its Message-ID."""
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1) or 1


def default_address(key: str, domain: str) -> str:
    return f"{key}@{domain.lower()}"


def _insert(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


async def app_key(db: Database, app_id: int) -> str:
    """The key of the app's default address (`<key>@<domain>`, see `new_mail_key`), made on
    first use; apps that existed before it was introduced got theirs from migration 0022."""
    query = select(email_app_keys.c.key).where(email_app_keys.c.app_id == app_id)
    async with db.read() as conn:
        found = (await conn.execute(query)).scalar_one_or_none()
    if found is not None:
        return str(found)
    async with db.write() as conn:
        await conn.execute(
            _insert(conn)(email_app_keys)
            .values(app_id=app_id, key=new_mail_key())
            .on_conflict_do_nothing(index_elements=["app_id"])
        )
        return str((await conn.execute(query)).scalar_one())


async def app_of_recipient(db: Database, address: str, domain: str) -> int | None:
    """The app that receives mail at `address`: its default address, a reply address of
    one of its conversations, or an address its owner added. None: unknown."""
    address = address.strip().lower()
    local, _, host = address.rpartition("@")
    async with db.read() as conn:
        if host == domain.lower():
            query = select(email_app_keys.c.app_id).where(email_app_keys.c.key == local)
            found = (await conn.execute(query)).scalar_one_or_none()
            if found is not None:
                return int(found)
            if local.startswith("reply+"):
                query = select(email_threads.c.app_id).where(
                    email_threads.c.reply_token == local.removeprefix("reply+")
                )
                found = (await conn.execute(query)).scalar_one_or_none()
                if found is not None:
                    return int(found)
        query = select(email_addresses.c.app_id).where(email_addresses.c.address == address)
        found = (await conn.execute(query)).scalar_one_or_none()
    return int(found) if found is not None else None


async def _is_own(conn: AsyncConnection, address: str, domain: str) -> bool:
    if address.rpartition("@")[2] == domain.lower():
        return True
    query = select(email_addresses.c.id).where(email_addresses.c.address == address)
    return (await conn.execute(query)).first() is not None


async def _known(conn: AsyncConnection, app_id: int, message_id: str) -> Received | None:
    query = select(
        email_messages.c.conversation_id, email_messages.c.part_id, email_messages.c.outcome
    ).where(email_messages.c.app_id == app_id, email_messages.c.message_id == message_id)
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    return Received("duplicate", row.conversation_id, row.part_id, reason=row.outcome)


async def _thread(conn: AsyncConnection, app_id: int, mail: InboundMail, domain: str) -> int | None:
    """The conversation the message answers: by its reply address, else by the Message-IDs
    it names (the most direct first). Never by subject."""
    live = conversations_table.c.removed.is_(None)
    for token in mail.reply_tokens(domain):
        query = (
            select(email_threads.c.conversation_id)
            .join(
                conversations_table,
                conversations_table.c.id == email_threads.c.conversation_id,
            )
            .where(email_threads.c.reply_token == token, email_threads.c.app_id == app_id, live)
        )
        found = (await conn.execute(query)).scalar_one_or_none()
        if found is not None:
            return int(found)
    ids = mail.thread_ids()
    if not ids:
        return None
    query = (
        select(email_messages.c.message_id, email_messages.c.conversation_id)
        .join(conversations_table, conversations_table.c.id == email_messages.c.conversation_id)
        .where(email_messages.c.app_id == app_id, email_messages.c.message_id.in_(ids), live)
    )
    by_id = {row.message_id: int(row.conversation_id) for row in await conn.execute(query)}
    return next((by_id[i] for i in ids if i in by_id), None)


async def _standing(
    conn: AsyncConnection, app_id: int, conversation_id: int, address: str
) -> tuple[str, int] | None:
    """Who `address` is in the conversation: (`user`, the conversation's user) when it leads
    to its user (their contact address, or their `$email`); (`participant`, 0) when a message
    of the conversation was written to it or sent from it; None: a stranger to it."""
    user_id = (
        await conn.execute(
            select(conversations_table.c.user_id).where(
                conversations_table.c.id == conversation_id,
                conversations_table.c.app_id == app_id,
            )
        )
    ).scalar_one()
    contact = (
        await conn.execute(
            select(email_contacts.c.user_id).where(
                email_contacts.c.app_id == app_id, email_contacts.c.address == address
            )
        )
    ).scalar_one_or_none()
    if contact is not None and int(contact) == int(user_id):
        return "user", int(user_id)
    props = (
        await conn.execute(select(users.c.props).where(users.c.id == user_id))
    ).scalar_one_or_none()
    email = props.get("$email") if isinstance(props, dict) else None
    if isinstance(email, str) and email.strip().lower() == address:
        return "user", int(user_id)
    participant = (
        await conn.execute(
            select(email_participants.c.address).where(
                email_participants.c.conversation_id == conversation_id,
                email_participants.c.address == address,
            )
        )
    ).first()
    return ("participant", 0) if participant is not None else None


async def _add_participants(
    db: Database, app_id: int, conversation_id: int, mail: InboundMail, domain: str
) -> None:
    """The sender and the To/Cc addresses become the conversation's participants, but for
    Threadline's own addresses (its domain, and those an app receives at)."""
    wanted = [
        a
        for a in dict.fromkeys((mail.from_address, *mail.copied))
        if a.rpartition("@")[2] != domain
    ][:MAX_PARTICIPANTS_PER_MESSAGE]
    if not wanted:
        return
    async with db.write() as conn:
        ours = {
            str(a)
            for a in (
                await conn.execute(
                    select(email_addresses.c.address).where(email_addresses.c.address.in_(wanted))
                )
            ).scalars()
        }
        for address in wanted:
            if address in ours:
                continue
            await conn.execute(
                _insert(conn)(email_participants)
                .values(conversation_id=conversation_id, address=address, app_id=app_id)
                .on_conflict_do_nothing(index_elements=["conversation_id", "address"])
            )


async def _user_for(db: Database, app_id: int, address: str, name: str) -> int:
    """The user the address belongs to; created (with the display name) on first contact.
    An erased user's address starts a new user."""
    query = (
        select(email_contacts.c.user_id)
        .join(users, users.c.id == email_contacts.c.user_id)
        .where(
            email_contacts.c.app_id == app_id,
            email_contacts.c.address == address,
            users.c.removed.is_(None),
        )
    )
    async with db.read() as conn:
        found = (await conn.execute(query)).scalar_one_or_none()
    if found is not None:
        return int(found)
    props: dict[str, Any] = {"$email": address}
    if name:
        props["$name"] = name
    async with db.write() as conn:
        found = (await conn.execute(query)).scalar_one_or_none()
        if found is not None:
            return int(found)
        ident = await AppRepository(conn).create_user(app_id, None, props, utcnow())
        contact = email_contacts.c
        await conn.execute(
            _insert(conn)(email_contacts)
            .values(app_id=app_id, address=address, user_id=ident)
            .on_conflict_do_nothing(index_elements=["app_id", "address"])
        )
        owner = (
            await conn.execute(
                select(contact.user_id, users.c.removed)
                .join(users, users.c.id == contact.user_id)
                .where(contact.app_id == app_id, contact.address == address)
            )
        ).one()
        if owner.removed is not None:  # the address's user was erased: it is the new one's
            await conn.execute(
                update(email_contacts)
                .where(contact.app_id == app_id, contact.address == address)
                .values(user_id=ident)
            )
            return ident
        if int(owner.user_id) != ident:  # another delivery created them first
            await conn.execute(users.delete().where(users.c.id == ident))
        return int(owner.user_id)


async def _record(
    db: Database,
    app_id: int,
    message_id: str,
    outcome: str,
    conversation_id: int | None = None,
    part_id: int | None = None,
    direction: str = "in",
) -> None:
    async with db.write() as conn:
        await conn.execute(
            _insert(conn)(email_messages)
            .values(
                app_id=app_id,
                message_id=message_id,
                conversation_id=conversation_id,
                part_id=part_id,
                direction=direction,
                outcome=outcome,
                created=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["app_id", "message_id"])
        )


async def reply_token(db: Database, app_id: int, conversation_id: int) -> str:
    """The conversation's reply token (`reply+<token>@<domain>`), made on first use."""
    query = select(email_threads.c.reply_token).where(
        email_threads.c.conversation_id == conversation_id
    )
    async with db.read() as conn:
        found = (await conn.execute(query)).scalar_one_or_none()
    if found is not None:
        return str(found)
    async with db.write() as conn:
        await conn.execute(
            _insert(conn)(email_threads)
            .values(
                conversation_id=conversation_id,
                app_id=app_id,
                # lower-case hex: mail systems may change the case of a local part
                reply_token=secrets.token_hex(12),
            )
            .on_conflict_do_nothing(index_elements=["conversation_id"])
        )
        return str((await conn.execute(query)).scalar_one())


@dataclass(slots=True)
class _Stored:
    attachments: list[files.StoredFile]
    refused: list[str]
    original: files.StoredFile | None
    inline: dict[str, int]


async def _store_files(
    db: Database,
    storage: Storage,
    limits: files.Limits,
    app_id: int,
    conversation_id: int | None,
    mail: InboundMail,
    raw: bytes,
    max_original_bytes: int,
) -> _Stored:
    stored = _Stored([], [], None, {})
    # Mail carries mail: a forwarded message is always taken (within the size limit).
    limits = files.Limits(limits.max_bytes, (*limits.types, "message/rfc822"))
    for item in mail.files:
        name = files.clean_filename(item.filename)
        mime_type = files.mime_type_of(item.mime_type, name)
        try:
            files.check("attachment", item.data, mime_type, limits)
        except DomainError:
            stored.refused.append(name)
            continue
        kept = await files.store(
            db,
            storage,
            app_id,
            data=item.data,
            filename=name,
            mime_type=mime_type,
            conversation_id=conversation_id,
        )
        stored.attachments.append(kept)
        if item.content_id:
            stored.inline[item.content_id] = kept.id
    if len(raw) <= max_original_bytes:
        stored.original = await files.store(
            db,
            storage,
            app_id,
            data=raw,
            filename="original.eml",
            mime_type="message/rfc822",
            conversation_id=conversation_id,
        )
    return stored


def _body_json(
    mail: InboundMail, stored: _Stored, sender: int | None, answers: int | None
) -> JSONObject:
    """`from.user`: the sender's own user (the conversation's user, or the participant who
    wrote; none for an automatic answer). `answers`: the conversation a stranger to it
    answered, when this one was started for them instead."""
    sent_by: dict[str, Any] = {"address": mail.from_address, "name": mail.from_name}
    if sender is not None:
        sent_by["user"] = sender
    email: dict[str, Any] = {
        "message_id": mail.message_id,
        "subject": mail.subject,
        "from": sent_by,
        "to": list(mail.recipients),
        "text": mail.text[:MAX_BODY_CHARS],
    }
    if answers is not None:
        email["answers"] = answers
    if mail.html is not None and len(mail.html) <= MAX_KEPT_HTML_CHARS:
        email["html"] = mail.html
    if stored.original is not None:
        email["original"] = stored.original.id
    if stored.inline:
        email["inline"] = dict(stored.inline)
    if stored.refused:
        email["refused_files"] = list(stored.refused)
    if mail.auto_reply:
        email["auto_reply"] = True
    return {"email": email}


def _event(
    mail: InboundMail, body_json: JSONObject, attached: tuple[Attachment, ...]
) -> ev.UserReply | ev.ContentPart:
    body = (mail.reply or mail.text or mail.subject)[:MAX_BODY_CHARS]
    key = write_key(mail.message_id)
    if mail.auto_reply:
        return ev.ContentPart(
            type=PartType.AUTO_REPLY,
            author=Author.system(),
            body=body,
            body_json=body_json,
            attachments=attached,
            sent_via=SentVia.EMAIL_USER,
            random_id=key,
        )
    return ev.UserReply(
        body=body,
        body_json=body_json,
        attachments=attached,
        sent_via=SentVia.EMAIL_USER,
        random_id=key,
    )


async def _first_delivery(
    db: Database,
    app_id: int,
    conversation_id: int | None,
    user_id: int | None,
    event: ev.UserReply | ev.ContentPart,
) -> Received:
    """The conversation and part another delivery of the same message wrote (it carried
    the same key, so the conversation service refused this one)."""
    key = event.random_id or 0
    async with db.read() as conn:
        repo = ConversationRepository(conn)
        if conversation_id is None and user_id is not None:
            conversation_id = await repo.find_started(user_id, key)
        part = await repo.find_part(conversation_id, "reply", key) if conversation_id else None
    return Received("duplicate", conversation_id, part.id if part is not None else None)


async def _take_bounce(db: Database, app_id: int, mail: InboundMail) -> Received | None:
    """A delivery status notification that reports a reply Threadline sent undeliverable:
    the reply's delivery becomes `bounced` (with the report's status and diagnostic), and
    where that reply is the e-mail message that started its conversation, the
    conversation's `status` becomes `bounced`. No part is added and nothing reopens. None:
    the report names no reply of the app, or delivery did not fail (delayed, delivered)."""
    report = mail.bounce_report
    if report is None or not report.failed:
        return None
    async with db.read() as conn:
        found = await deliveries.sent_with(conn, app_id, report.original_ids)
    if found is None:
        return None
    answer = " ".join(x for x in (report.status, report.diagnostic) if x) or "bounced"
    bounce: JSONObject = {
        "status": report.status,
        "diagnostic": report.diagnostic,
        "recipient": report.recipient,
    }
    async with db.write() as conn:
        changed = await deliveries.record_bounce(
            conn, found, now=utcnow(), code=report.smtp_code(), answer=answer, bounce=bounce
        )
    if changed:
        db.events_committed(app_id)
    if changed or found.status == DeliveryState.BOUNCED.value:
        # (also after a bounce whose status change a failure cut short: this one finishes it)
        await _message_bounced(db, app_id, found.conversation_id, found.part_id)
    return Received("bounced", found.conversation_id, found.part_id)


async def _message_bounced(db: Database, app_id: int, conversation_id: int, part_id: int) -> None:
    """The conversation's `status` (its starting message's delivery) becomes `bounced` when
    the bounced part is that message (the conversation's first part)."""
    p = conversation_parts.c
    async with db.read() as conn:
        state = await ConversationRepository(conn).get(app_id, conversation_id)
        first = (
            await conn.execute(select(func.min(p.id)).where(p.conversation_id == conversation_id))
        ).scalar_one_or_none()
    if state is None or state.message_id is None or first != part_id:
        return
    await conversations.perform(db, app_id, conversation_id, ev.UpdateStatus(MessageStatus.BOUNCED))


async def receive(
    db: Database,
    storage: Storage,
    limits: files.Limits,
    settings: MailSettings,
    app_id: int,
    raw: bytes,
    *,
    limiter: SenderLimiter | None = None,
    envelope_recipients: Sequence[str] = (),
) -> Received:
    """Take one raw message sent to the app. `InvalidParameter` (`message`) when it cannot
    be read; `SenderThrottled` when its sender is over the limit (nothing stored).
    `envelope_recipients`: the SMTP envelope's (RCPT TO), which the headers may not name
    (a reply address in Bcc, a forward)."""
    try:
        mail = parse(raw)
    except MalformedMail as exc:
        raise InvalidParameter("message", str(exc)) from None
    extra = tuple(
        dict.fromkeys(
            a.strip().lower()
            for a in envelope_recipients
            if a.strip().lower() not in mail.recipients
        )
    )
    if extra:
        mail = replace(mail, recipients=(*mail.recipients, *extra))
    domain = settings.mail_domain.lower()
    async with db.read() as conn:
        known = await _known(conn, app_id, mail.message_id)
    if known is not None:
        return known
    if mail.bounce:
        # Before the loop check: Threadline's own relay may report from the mail domain.
        bounced = await _take_bounce(db, app_id, mail)
        await _record(db, app_id, mail.message_id, "bounce" if bounced else "ignored")
        return bounced or Received("ignored", reason="bounce")
    async with db.read() as conn:
        own = await _is_own(conn, mail.from_address, domain)
        conversation_id = await _thread(conn, app_id, mail, domain)
        standing = None
        if conversation_id is not None and not (own or mail.auto_reply):
            standing = await _standing(conn, app_id, conversation_id, mail.from_address)
    reason = (
        "loop" if own else "auto_reply" if mail.auto_reply and conversation_id is None else None
    )
    if reason is not None:
        await _record(db, app_id, mail.message_id, "ignored")
        return Received("ignored", reason=reason)
    if limiter is not None:
        await limiter.hit(app_id, mail.from_address)
    answers: int | None = None
    if conversation_id is not None and standing is None and not mail.auto_reply:
        # A stranger to the conversation answered it: a conversation of their own.
        answers, conversation_id = conversation_id, None
    user_id: int | None = None
    sender: int | None = None
    if conversation_id is None:
        user_id = sender = await _user_for(db, app_id, mail.from_address, mail.from_name)
    elif standing is not None and standing[0] == "user":
        sender = standing[1]
    elif standing is not None:  # a participant: known by their own user
        sender = await _user_for(db, app_id, mail.from_address, mail.from_name)
    stored = await _store_files(
        db, storage, limits, app_id, conversation_id, mail, raw, settings.mail_max_message_bytes
    )
    kept = [*stored.attachments, *([stored.original] if stored.original else [])]
    event = _event(
        mail,
        _body_json(mail, stored, sender, answers),
        tuple(f.attachment for f in stored.attachments),
    )
    try:
        if conversation_id is None:
            assert isinstance(event, ev.UserReply)
            assert user_id is not None
            outcome = await conversations.start_by_user(
                db,
                app_id,
                user_id,
                event,
                type_=ConversationType.INCOMING_EMAIL,
                reply_type=ReplyType.EMAIL,
            )
        else:
            outcome = await conversations.perform(db, app_id, conversation_id, event)
    except BaseException as exc:
        for item in kept:
            await files.discard(db, storage, item)
        if isinstance(exc, IdempotencyKeyReused):  # a concurrent delivery of this message
            return await _first_delivery(db, app_id, conversation_id, user_id, event)
        raise
    if outcome.duplicate:
        for item in kept:
            await files.discard(db, storage, item)
        return Received(
            "duplicate", outcome.state.id, outcome.parts[0].id if outcome.parts else None
        )
    state = outcome.state
    if conversation_id is None:
        for item in kept:
            await files.link(db, item, state.id)
        await reply_token(db, app_id, state.id)
    if not mail.auto_reply:
        await _add_participants(db, app_id, state.id, mail, domain)
    part_id = outcome.parts[-1].id if outcome.parts else None
    result = (
        "auto_reply" if mail.auto_reply else "started" if conversation_id is None else "replied"
    )
    await _record(db, app_id, mail.message_id, result, state.id, part_id)
    return Received(result, state.id, part_id)


# ---------------------------------------------------------------------------
# The app's inbound addresses.

MAX_ADDRESS_CHARS = 320
_ADDRESS = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[a-z0-9-]+(\.[a-z0-9-]+)+")


@dataclass(frozen=True, slots=True)
class Address:
    id: int | None
    address: str
    default: bool


def check_address(value: str) -> str:
    address = value.strip().lower()
    if len(address) > MAX_ADDRESS_CHARS or not _ADDRESS.fullmatch(address):
        raise InvalidParameter("address", "must be an e-mail address (local@domain)")
    return address


async def list_addresses(db: Database, app_id: int, domain: str) -> list[Address]:
    query = (
        select(email_addresses.c.id, email_addresses.c.address)
        .where(email_addresses.c.app_id == app_id)
        .order_by(email_addresses.c.id)
    )
    key = await app_key(db, app_id)
    async with db.read() as conn:
        rows = list(await conn.execute(query))
    return [
        Address(None, default_address(key, domain), True),
        *(Address(int(r.id), str(r.address), False) for r in rows),
    ]


async def add_address(db: Database, app_id: int, value: str, domain: str) -> Address:
    """Add an address the app receives mail at. One of Threadline's own domain, or one
    another app has, is refused."""
    address = check_address(value)
    if address.rpartition("@")[2] == domain.lower():
        raise InvalidParameter("address", f"addresses @{domain} are Threadline's own")
    async with db.write() as conn:
        await conn.execute(
            _insert(conn)(email_addresses)
            .values(app_id=app_id, address=address, created=utcnow())
            .on_conflict_do_nothing(index_elements=["address"])
        )
        row = (
            await conn.execute(
                select(email_addresses.c.id, email_addresses.c.app_id).where(
                    email_addresses.c.address == address
                )
            )
        ).one()
    if int(row.app_id) != app_id:
        raise InvalidParameter("address", "is already an address of another app")
    return Address(int(row.id), address, False)


async def remove_address(db: Database, app_id: int, address_id: int) -> None:
    async with db.write() as conn:
        result = await conn.execute(
            email_addresses.delete().where(
                email_addresses.c.id == address_id, email_addresses.c.app_id == app_id
            )
        )
    if not result.rowcount:
        raise NotFound("address", address_id)
