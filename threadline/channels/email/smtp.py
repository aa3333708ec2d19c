"""The SMTP listener (`aiosmtpd`): mail for the apps' addresses comes in here.

A recipient no app receives at is refused at RCPT time (550), so a sending server keeps
the message and tells its sender, rather than Threadline accepting and dropping it. An
accepted message goes through `inbound.receive`, like `POST /ext/apps/{app}/email/inbound`.

The server runs on the caller's event loop (`loop.create_server`), the loop the database
connections belong to; aiosmtpd's `Controller` would run it on a thread of its own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from threadline.attachments import service as files
from threadline.attachments.storage import Storage
from threadline.channels.email import inbound
from threadline.core.errors import InvalidParameter
from threadline.db.engine import Database

if TYPE_CHECKING:
    from threadline.web.shared import SharedRedis

log = logging.getLogger("threadline.channels.email.smtp")


class InboundHandler:
    """aiosmtpd's handler: `handle_RCPT` names the apps, `handle_DATA` hands the message in."""

    def __init__(
        self,
        db: Database,
        storage: Storage,
        limits: files.Limits,
        settings: inbound.MailSettings,
        limiter: inbound.SenderLimiter | None = None,
    ) -> None:
        self.db = db
        self.storage = storage
        self.limits = limits
        self.settings = settings
        self.limiter = limiter
        # The apps each envelope's recipients belong to (an envelope lives for one message).
        self._apps: dict[int, list[int]] = {}

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        app_id = await inbound.app_of_recipient(self.db, address, self.settings.mail_domain)
        if app_id is None:
            return "550 5.1.1 No such recipient here"
        apps = self._apps.setdefault(id(envelope), [])
        if app_id not in apps:
            apps.append(app_id)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        apps = self._apps.pop(id(envelope), [])
        raw = envelope.original_content or envelope.content
        if not isinstance(raw, bytes):
            raw = str(raw or "").encode("utf-8", "surrogateescape")
        try:
            for app_id in apps:
                await inbound.receive(
                    self.db,
                    self.storage,
                    self.limits,
                    self.settings,
                    app_id,
                    raw,
                    limiter=self.limiter,
                    envelope_recipients=envelope.rcpt_tos,
                )
        except InvalidParameter as exc:
            return f"554 5.6.0 {exc}"
        except inbound.SenderThrottled as exc:
            return f"451 4.7.1 {exc}"
        except Exception:  # the database or the disk: the sender keeps it and retries
            log.exception("an inbound message could not be stored")
            return "451 4.3.0 Temporary failure, try again later"
        return "250 OK"


async def start_listener(
    handler: InboundHandler,
    host: str,
    port: int,
    *,
    hostname: str | None = None,
    max_message_bytes: int | None = None,
) -> asyncio.Server:
    """Listen on `host:port` in the running loop; `server.close()` stops it. A message
    larger than `max_message_bytes` (default: `THREADLINE_MAIL_MAX_MESSAGE_BYTES`) is
    refused at DATA (552), so its sender is told."""
    loop = asyncio.get_running_loop()

    def protocol() -> Any:
        return SMTP(
            handler,
            hostname=hostname or handler.settings.mail_domain,
            data_size_limit=max_message_bytes or handler.settings.mail_max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            loop=loop,
        )

    return await loop.create_server(protocol, host, port, reuse_port=True)


def handler_from_settings(
    db: Database, data_dir_storage: Storage, shared: SharedRedis | None = None
) -> InboundHandler:
    """A handler with the deployment's settings (environment, prefix THREADLINE_); the
    per-sender limit counts in `shared` (the deployment's Redis) when given, else in the
    database."""
    from threadline.api.config import ApiSettings

    api = ApiSettings()
    settings = inbound.MailSettings()
    limiter = inbound.SenderLimiter(
        settings.mail_sender_limit,
        db,
        shared.client if shared is not None else None,
        shared.namespace if shared is not None else "threadline",
    )
    return InboundHandler(
        db,
        data_dir_storage,
        files.Limits(api.attachment_max_bytes, api.attachment_types),
        settings,
        limiter,
    )


async def run_listener(database_url: str, host: str, port: int) -> None:
    """`threadline smtp`: the listener alone, until cancelled."""
    from threadline.api.config import ApiSettings
    from threadline.attachments.storage import LocalStorage
    from threadline.settings import Settings
    from threadline.web.shared import open_shared_redis

    db = Database(database_url)
    shared = None
    try:
        shared = await open_shared_redis(db, Settings().redis_url)
        storage = LocalStorage(ApiSettings().data_dir / "attachments")
        server = await start_listener(handler_from_settings(db, storage, shared), host, port)
        async with server:
            await server.serve_forever()
    finally:
        if shared is not None:
            await shared.close()
        await db.dispose()
