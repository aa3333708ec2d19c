"""Sending operators' replies by e-mail: a consumer of the outbox (threadline.outbox.worker).

What is sent: an operator's reply (a `reply_admin` part; notes never) in an e-mail
conversation (`type` `incoming_email` or `email`, or `reply_type` `email`), through the relay
of `THREADLINE_SMTP_RELAY_*`, from "Operator via App" at the app's address, with the
conversation's reply address as `Reply-To` and `In-Reply-To`/`References` naming the
conversation's earlier messages, so that it threads.

Queueing: the consumer reads the final log events after its cursor (the `email` row of
`webhook_state`) and, in one transaction, queues each such reply with a Message-ID of its
own, records that Message-ID with the conversation's (an answer to it joins the
conversation, see inbound.py) and moves its cursor. The cursor starts at the log's head
when the relay is first configured: replies written before are not sent.

Sending: the relay's 2xx makes a part `sent`; a 5xx `failed` at once, with the relay's
answer; no answer or a 4xx keeps it `queued` for a retry with capped exponential backoff,
until the last attempt fails it. Every attempt of a part carries the same Message-ID. A sent
part that bounces later (a delivery status notification names its Message-ID, see
inbound.py) is `bounced`. Each change of state is a `conversation_delivery` log event, so
the realtime streams and the webhooks carry it.

The guarantee is at-least-once, not exactly-once: SMTP has no idempotent submission, so a
worker that dies after the relay took a message and before its `sent` is stored sends it
again when it (or another worker) resumes, under the same Message-ID, by which mail systems
and clients recognise the copy. A part is never sent twice otherwise: one worker sends at a
time, an attempt's outcome is stored only if the delivery is as the attempt found it, and a
sent or failed part is not attempted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import aiosmtplib
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.apps.service import utcnow
from threadline.channels.email import compose
from threadline.channels.email import deliveries as repo
from threadline.channels.email.inbound import app_key, default_address
from threadline.core.delivery import DeliveryState, DeliveryStep, advance
from threadline.core.enums import AuthorKind, ConversationType, PartType, ReplyType
from threadline.core.eventlog import REPLY
from threadline.db.engine import Database
from threadline.db.schema import (
    admins,
    apps,
    conversation_parts,
    conversations,
    email_contacts,
    email_threads,
    users,
)
from threadline.events import repository as log_store
from threadline.events.repository import StoredEvent
from threadline.outbox import cursor as outbox_cursor
from threadline.outbox.retry import RetryPolicy, backoff_delay

log = logging.getLogger("threadline.email")

CURSOR_KEY = "email"
# Log events turned into queued replies per transaction.
INGEST_BATCH = 500
EMAIL_TYPES = frozenset({ConversationType.EMAIL.value, ConversationType.INCOMING_EMAIL.value})


class OutboundSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="THREADLINE_", extra="ignore")

    # The relay operators' replies are sent through; unset: replies are not e-mailed.
    smtp_relay_host: str | None = None
    smtp_relay_port: int = 587
    # `starttls` (submission, port 587), `tls` (implicit TLS, port 465) or `none` (a relay
    # on the same host or network only: the login and the mail go in clear text).
    smtp_relay_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_relay_username: str | None = None
    smtp_relay_password: SecretStr | None = None
    # A relay that has not answered a step of the conversation in this time failed it.
    smtp_relay_timeout_seconds: float = 30.0
    # Attempts before a reply is `failed`; with the defaults, retries span about 8 hours.
    email_max_attempts: int = 10
    # Backoff: first retry after this, doubling, never more than the cap (plus 10% jitter).
    email_backoff_seconds: float = 60.0
    email_backoff_cap_seconds: float = 3600.0
    # Replies in flight at once (each of a different conversation).
    email_concurrency: int = 4
    # DKIM: the selector and the PEM private key sign every reply (`d=` the domain, by
    # default the mail domain). Without both, replies are not signed.
    dkim_selector: str | None = None
    dkim_private_key_file: Path | None = None
    dkim_domain: str | None = None
    # The e-mail domain of Threadline (shared with inbound.MailSettings).
    mail_domain: str = "threadline.localhost"

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            self.email_max_attempts, self.email_backoff_seconds, self.email_backoff_cap_seconds
        )

    def dkim_key(self) -> compose.DkimKey | None:
        if not self.dkim_selector or self.dkim_private_key_file is None:
            return None
        return compose.DkimKey(
            self.dkim_selector,
            (self.dkim_domain or self.mail_domain).lower(),
            self.dkim_private_key_file.read_bytes(),
        )


class Refused(Exception):
    """The reply cannot be sent at all (no address to send it to, the part is gone)."""


def wants(event: StoredEvent) -> bool:
    """A log event that may be an operator's reply to send (its conversation decides)."""
    part = event.data.get("part")
    return (
        event.type == REPLY
        and isinstance(part, dict)
        and part.get("type") == PartType.REPLY_ADMIN.value
    )


def _scalar_text(value: Any) -> str:
    return value if isinstance(value, str) else ""


class EmailReplies:
    """The outbox's e-mail replies."""

    name = "email"

    def __init__(self, db: Database, settings: OutboundSettings) -> None:
        assert settings.smtp_relay_host, "a relay is needed"
        self.db = db
        self.settings = settings
        self.policy = settings.policy
        self.dkim = settings.dkim_key()

    @property
    def idle(self) -> bool:
        # Never: what is due costs one indexed query a round, and another worker that led
        # before this one may have left replies queued.
        return False

    async def open(self) -> None:
        """Start the cursor at the log's head the first time: what was written before the
        relay was configured is not sent. (With the database away, the first round that
        reaches it starts the cursor.)"""
        try:
            await begin(self.db)
        except Exception as exc:
            log.warning("e-mail replies: cursor not started yet (%s)", exc)

    async def close(self) -> None:
        return None

    # -- queueing -------------------------------------------------------------------------

    async def ingest(self) -> int:
        queued = 0
        while True:
            async with self.db.read() as conn:
                old = await outbox_cursor.position(conn, CURSOR_KEY)
                if old is not None:
                    batch = await log_store.read_after(conn, old, INGEST_BATCH)
                    rows = await self._to_queue(conn, [e for e in batch.events if wants(e)])
            if old is None:  # not begun yet
                await begin(self.db)
                return queued
            if rows or batch.position != old:
                async with self.db.write() as conn:
                    await outbox_cursor.advance(conn, CURSOR_KEY, old, batch.position)
                    await repo.queue(conn, rows, utcnow())
            queued += len(rows)
            if batch.complete:
                return queued

    async def _to_queue(
        self, conn: AsyncConnection, events: list[StoredEvent]
    ) -> list[repo.ToQueue]:
        if not events:
            return []
        c = conversations.c
        query = select(c.id, c.type, c.reply_type).where(
            c.id.in_(sorted({e.conversation_id for e in events}))
        )
        by_mail = {
            int(row.id)
            for row in await conn.execute(query)
            if row.type in EMAIL_TYPES or row.reply_type == ReplyType.EMAIL.value
        }
        domain = self.settings.mail_domain
        return [
            repo.ToQueue(
                e.app_id,
                e.conversation_id,
                int(e.data["part"]["id"]),
                e.id,
                compose.new_message_id(domain, e.conversation_id, int(e.data["part"]["id"])),
            )
            for e in events
            if e.conversation_id in by_mail
        ]

    # -- sending --------------------------------------------------------------------------

    async def send_due(self) -> int:
        attempts = 0
        while True:
            async with self.db.read() as conn:
                batch = await repo.due(conn, utcnow(), self.settings.email_concurrency)
            if not batch:
                return attempts
            await asyncio.gather(*(self._attempt(d) for d in batch))
            attempts += len(batch)

    async def next_due(self) -> datetime | None:
        async with self.db.read() as conn:
            return await repo.next_due(conn)

    async def _attempt(self, delivery: repo.Delivery) -> None:
        code: int | None = None
        answer: str | None = None
        try:
            key = await app_key(self.db, delivery.app_id)
            async with self.db.read() as conn:
                reply = await self.reply_of(conn, delivery, key)
            code, answer = await self._send(reply)
            step = DeliveryStep.ACCEPTED
        except Refused as exc:
            answer, step = str(exc), DeliveryStep.REFUSED
        except aiosmtplib.SMTPAuthenticationError as exc:
            # The relay's login is wrong: the deployment's to fix, not the reply's fault.
            code, answer = exc.code, f"the relay refused the login: {exc.message}"
            step = DeliveryStep.DEFERRED
        except aiosmtplib.SMTPResponseException as exc:  # refused: the sender, the
            # recipient (SMTPRecipientRefused) or the message (SMTPDataError)
            code, answer = exc.code, exc.message
            step = DeliveryStep.REFUSED if code >= 500 else DeliveryStep.DEFERRED
        except (aiosmtplib.SMTPException, OSError) as exc:
            # No answer from the relay (down, unreachable, timed out, TLS failed).
            answer = f"no answer from the relay: {type(exc).__name__}: {exc}"
            step = DeliveryStep.DEFERRED
        now = datetime.now(UTC)
        attempts = delivery.attempts + 1
        next_at = now
        if step is DeliveryStep.DEFERRED:
            if self.policy.exhausted(attempts):
                step = DeliveryStep.REFUSED
            else:
                wait = backoff_delay(
                    attempts, self.policy.backoff_seconds, self.policy.backoff_cap_seconds
                )
                next_at = now + timedelta(seconds=wait)
        status = advance(DeliveryState(delivery.status), step)
        if status is not DeliveryState.SENT:
            log.info(
                "e-mail reply %s (part %s): %s: %s %s",
                delivery.id,
                delivery.part_id,
                status.value,
                code,
                answer,
            )
        async with self.db.write() as conn:
            stored = await repo.record_attempt(
                conn,
                delivery,
                status=status,
                now=now,
                next_attempt_at=next_at,
                relay_code=code,
                relay_answer=answer,
            )
        if not stored:
            log.warning("e-mail reply %s: changed during its attempt", delivery.id)
        elif status.value != delivery.status:  # its `conversation_delivery` event
            self.db.events_committed(delivery.app_id)

    async def _send(self, reply: compose.Reply) -> tuple[int, str]:
        """Hand the reply to the relay; its answer to the message (a 2xx). A refusal raises
        `SMTPResponseException` (its code and text), no answer `SMTPException`/`OSError`."""
        s = self.settings
        raw = compose.to_bytes(compose.build(reply), self.dkim)
        client = aiosmtplib.SMTP(
            hostname=s.smtp_relay_host,
            port=s.smtp_relay_port,
            username=s.smtp_relay_username,
            password=s.smtp_relay_password.get_secret_value() if s.smtp_relay_password else None,
            use_tls=s.smtp_relay_security == "tls",
            start_tls=s.smtp_relay_security == "starttls",
            local_hostname=s.mail_domain,
            timeout=s.smtp_relay_timeout_seconds,
        )
        # Step by step rather than `sendmail`: the relay's code is kept with its answer.
        await client.connect()
        try:
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
            await client.mail(reply.from_address)
            await client.rcpt(reply.to_address)
            response = await client.data(raw)
        except BaseException:
            client.close()
            raise
        # The relay took the message: nothing that goes wrong from here changes that.
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()
        client.close()
        return response.code, response.message

    async def reply_of(self, conn: AsyncConnection, d: repo.Delivery, key: str) -> compose.Reply:
        """The message of a queued reply, from what is stored (the same at every attempt,
        but for the operator's and the user's names)."""
        p, c = conversation_parts.c, conversations.c
        part = (
            await conn.execute(
                select(p.body, p.author_kind, p.author_id, p.bot_name, p.removed, p.created).where(
                    p.id == d.part_id, p.conversation_id == d.conversation_id
                )
            )
        ).first()
        if part is None or part.removed is not None:
            raise Refused("the reply was removed")
        conversation = (
            await conn.execute(select(c.user_id, c.removed).where(c.id == d.conversation_id))
        ).one()
        if conversation.removed is not None:
            raise Refused("the conversation was removed")
        app_name = str(
            (await conn.execute(select(apps.c.name).where(apps.c.id == d.app_id))).scalar_one()
        )
        author = app_name
        if part.author_kind == AuthorKind.ADMIN.value and part.author_id is not None:
            found = (
                await conn.execute(select(admins.c.name).where(admins.c.id == part.author_id))
            ).scalar_one_or_none()
            author = str(found or app_name)
        elif part.bot_name:
            author = str(part.bot_name)
        to_address, to_name = await _recipient(conn, d.app_id, int(conversation.user_id))
        token = (
            await conn.execute(
                select(email_threads.c.reply_token).where(
                    email_threads.c.conversation_id == d.conversation_id
                )
            )
        ).scalar_one()
        domain = self.settings.mail_domain.lower()
        from_name = author if author == app_name else f"{author} via {app_name}"
        return compose.Reply(
            message_id=d.message_id,
            from_name=from_name,
            from_address=default_address(key, domain),
            to_address=to_address,
            to_name=to_name,
            reply_to=f"reply+{token}@{domain}",
            subject=compose.reply_subject(
                await _subject(conn, d.conversation_id), f"Your conversation with {app_name}"
            ),
            body=str(part.body),
            date=part.created,
            thread=await repo.thread_of(conn, d.app_id, d.message_id),
        )


async def _recipient(conn: AsyncConnection, app_id: int, user_id: int) -> tuple[str, str]:
    """The user's address (the one they wrote from, else their `$email`) and name."""
    row = (
        await conn.execute(select(users.c.props, users.c.removed).where(users.c.id == user_id))
    ).one()
    if row.removed is not None:
        raise Refused("the user was erased")
    props = row.props if isinstance(row.props, dict) else {}
    address = (
        await conn.execute(
            select(email_contacts.c.address)
            .where(email_contacts.c.app_id == app_id, email_contacts.c.user_id == user_id)
            .order_by(email_contacts.c.id)
            .limit(1)
        )
    ).scalar_one_or_none() or _scalar_text(props.get("$email")).strip()
    if not address or "@" not in address:
        raise Refused("the user has no e-mail address")
    return str(address), _scalar_text(props.get("$name"))


async def _subject(conn: AsyncConnection, conversation_id: int) -> str | None:
    """The subject of the conversation's first e-mail (as the inbound parts keep it)."""
    p = conversation_parts.c
    query = (
        select(p.body_json)
        .where(p.conversation_id == conversation_id, p.body_json.is_not(None))
        .order_by(p.id)
        .limit(20)
    )
    for body_json in (await conn.execute(query)).scalars():
        email = body_json.get("email") if isinstance(body_json, dict) else None
        if isinstance(email, dict) and isinstance(email.get("subject"), str):
            return str(email["subject"])
    return None


async def begin(db: Database) -> None:
    """Start the e-mail cursor at the log's head, unless it was started before."""
    async with db.read() as conn:
        if await outbox_cursor.position(conn, CURSOR_KEY) is not None:
            return
        head = await log_store.head(conn)
    async with db.write() as conn:
        await outbox_cursor.move(conn, CURSOR_KEY, None, head)


def consumer_if_configured(db: Database) -> EmailReplies | None:
    """The e-mail replies' consumer when a relay is configured."""
    settings = OutboundSettings()
    if not settings.smtp_relay_host:
        return None
    return EmailReplies(db, settings)
