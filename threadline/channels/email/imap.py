"""IMAP polling (`aioimaplib`): the mail of an existing mailbox (a team's support@ box)
reaches one app, as if it had come by SMTP.

Each poll logs in, selects the mailbox and takes the messages that do not carry the
keyword `Threadline` yet; each is fetched with `BODY.PEEK[]` (its read state is the
team's, untouched), handed to `inbound.receive`, then marked with the keyword. Nothing is
deleted or moved. A message is marked once it was stored or found unreadable (malformed:
it never will be readable); a sender over the limit, or a failure of the database, leaves it
unmarked for the next poll. Receiving twice is harmless: a Message-ID is stored once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aioimaplib import IMAP4, IMAP4_SSL
from pydantic_settings import BaseSettings, SettingsConfigDict

from threadline.attachments import service as files
from threadline.attachments.storage import Storage
from threadline.channels.email import inbound
from threadline.core.errors import InvalidParameter
from threadline.db.engine import Database

log = logging.getLogger("threadline.channels.email.imap")

# The keyword (an IMAP flag of the user's own) a received message is marked with.
KEYWORD = "Threadline"
_LITERAL = re.compile(rb"\{(\d+)\}$")


class ImapSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="THREADLINE_", extra="ignore")

    # The mailbox's server; unset: no polling.
    imap_host: str | None = None
    imap_port: int = 993
    # `true`: TLS from the start (port 993); `false`: plain (a server on loopback only).
    imap_tls: bool = True
    imap_user: str = ""
    imap_password: str = ""
    imap_mailbox: str = "INBOX"
    # The app the mailbox's mail goes to.
    imap_app: int | None = None
    imap_poll_seconds: float = 60.0
    # Seconds each IMAP command may take.
    imap_timeout_seconds: float = 30.0


class ImapFailed(Exception):
    """The server refused a command (login, select, ...)."""


@dataclass(slots=True)
class Polled:
    """One poll: what became of each message taken, and how many were left for later."""

    received: list[inbound.Received] = field(default_factory=list)
    refused: int = 0
    left: int = 0


def _ok(response: Any, what: str) -> Any:
    if response.result != "OK":
        lines = b" ".join(x for x in response.lines if isinstance(x, bytes | bytearray))
        raise ImapFailed(f"{what}: {response.result} {lines[:200]!r}")
    return response


def _uids(response: Any) -> list[str]:
    found: list[str] = []
    for line in response.lines:
        if isinstance(line, bytes | bytearray):
            found += [w for w in bytes(line).decode("ascii", "replace").split() if w.isdigit()]
            break  # the first line is the search's answer, then the tagged "completed"
    return found


def _literal(response: Any) -> bytes | None:
    """The message of a `FETCH BODY.PEEK[]` answer: the literal after the line announcing
    its size."""
    lines = list(response.lines)
    for index, line in enumerate(lines[:-1]):
        match = _LITERAL.search(bytes(line).rstrip()) if isinstance(line, bytes) else None
        following = lines[index + 1]
        if (
            match
            and isinstance(following, bytes | bytearray)
            and len(following) == int(match.group(1))
        ):
            return bytes(following)
    return None


async def poll_once(
    db: Database,
    storage: Storage,
    limits: files.Limits,
    settings: inbound.MailSettings,
    imap: ImapSettings,
    limiter: inbound.SenderLimiter | None = None,
) -> Polled:
    """Take the mailbox's new messages into `imap.imap_app`."""
    if not imap.imap_host or imap.imap_app is None:
        raise ValueError("THREADLINE_IMAP_HOST and THREADLINE_IMAP_APP are needed")
    client_type = IMAP4_SSL if imap.imap_tls else IMAP4
    client = client_type(
        host=imap.imap_host, port=imap.imap_port, timeout=imap.imap_timeout_seconds
    )
    polled = Polled()
    await client.wait_hello_from_server()
    try:
        _ok(await client.login(imap.imap_user, imap.imap_password), "login")
        _ok(await client.select(imap.imap_mailbox), f"select {imap.imap_mailbox}")
        new = _uids(_ok(await client.uid_search("UNKEYWORD", KEYWORD, charset=None), "search"))
        for uid in new:
            raw = _literal(_ok(await client.uid("fetch", uid, "BODY.PEEK[]"), f"fetch {uid}"))
            if raw is None:
                polled.left += 1
                continue
            try:
                got = await inbound.receive(
                    db, storage, limits, settings, imap.imap_app, raw, limiter=limiter
                )
            except InvalidParameter as exc:
                log.warning("IMAP message %s is unreadable, left in the mailbox: %s", uid, exc)
                polled.refused += 1
            except inbound.SenderThrottled:
                polled.left += 1  # its sender is over the limit: the next poll takes it
                continue
            else:
                polled.received.append(got)
            _ok(await client.uid("store", uid, "+FLAGS", f"({KEYWORD})"), f"store {uid}")
    finally:
        try:
            await client.logout()
        except Exception:  # the connection is gone already
            log.debug("IMAP logout failed", exc_info=True)
    return polled


async def run_poller(
    db: Database,
    storage: Storage,
    limits: files.Limits,
    settings: inbound.MailSettings,
    imap: ImapSettings,
    limiter: inbound.SenderLimiter | None = None,
) -> None:
    """Poll every `imap_poll_seconds` until cancelled; a failed poll is logged and tried
    again at the next."""
    while True:
        try:
            polled = await poll_once(db, storage, limits, settings, imap, limiter)
            if polled.received or polled.refused:
                log.info(
                    "IMAP: %d received, %d unreadable, %d left for later",
                    len(polled.received),
                    polled.refused,
                    polled.left,
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("IMAP poll of %s failed: %s", imap.imap_host, exc)
        await asyncio.sleep(imap.imap_poll_seconds)


@asynccontextmanager
async def _deployment(
    database_url: str,
) -> AsyncIterator[tuple[Database, Storage, files.Limits, inbound.SenderLimiter]]:
    """The database, the attachments' storage, their limits and the per-sender limit (in
    the deployment's Redis when it has one), as `threadline serve` has them."""
    from threadline.api.config import ApiSettings
    from threadline.attachments.storage import LocalStorage
    from threadline.settings import Settings
    from threadline.web.shared import open_shared_redis

    db = Database(database_url)
    shared = None
    try:
        shared = await open_shared_redis(db, Settings().redis_url)
        api = ApiSettings()
        limiter = inbound.SenderLimiter(
            inbound.MailSettings().mail_sender_limit,
            db,
            shared.client if shared is not None else None,
            shared.namespace if shared is not None else "threadline",
        )
        yield (
            db,
            LocalStorage(api.data_dir / "attachments"),
            files.Limits(api.attachment_max_bytes, api.attachment_types),
            limiter,
        )
    finally:
        if shared is not None:
            await shared.close()
        await db.dispose()


async def run_once(database_url: str, imap: ImapSettings) -> Polled:
    """`threadline imap --once`."""
    async with _deployment(database_url) as (db, storage, limits, limiter):
        return await poll_once(db, storage, limits, inbound.MailSettings(), imap, limiter)


async def run(database_url: str, imap: ImapSettings) -> None:
    """`threadline imap`: the poller alone, until cancelled."""
    async with _deployment(database_url) as (db, storage, limits, limiter):
        await run_poller(db, storage, limits, inbound.MailSettings(), imap, limiter)
