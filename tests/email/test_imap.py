"""IMAP polling against aioimaplib's own testing server, started on loopback by the test:
new messages are taken once, into the app, and marked; the mailbox keeps them."""

from __future__ import annotations

import asyncio
import json
import threading
import warnings
from collections.abc import AsyncIterator
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import World
from tests.email import corpus
from tests.email.test_inbound import LIMITS, SETTINGS, Inbox
from threadline.channels.email import inbound
from threadline.channels.email.imap import KEYWORD, ImapSettings, poll_once
from threadline.cli import cli
from threadline.conversations import service
from threadline.db.engine import Database

with warnings.catch_warnings():
    # The testing server's module asks for an event loop at import (a default argument).
    warnings.simplefilter("ignore", DeprecationWarning)
    from aioimaplib.imap_testing_server import Mail, MockImapServer

MAILBOX_USER = "support@acme.test"
runner = CliRunner()


class Mailbox:
    def __init__(self, server: Any, port: int) -> None:
        self.server = server
        self.port = port

    def deliver(self, raw: bytes) -> None:
        message = message_from_bytes(raw, policy=email_policy.compat32)
        self.server.receive(Mail(message), imap_user=MAILBOX_USER)

    def flags(self) -> list[list[str]]:
        messages = self.server._server_state.get_mailbox_messages(MAILBOX_USER, "INBOX")
        return [list(m.flags) for m in messages]

    def settings(self, app_id: int) -> ImapSettings:
        return ImapSettings(
            imap_host="127.0.0.1",
            imap_port=self.port,
            imap_tls=False,
            imap_user=MAILBOX_USER,
            imap_password="secret",
            imap_app=app_id,
            imap_timeout_seconds=10,
        )


@pytest.fixture
async def mailbox(unused_tcp_port: int) -> AsyncIterator[Mailbox]:
    server = MockImapServer(loop=asyncio.get_running_loop())
    listening = await server.run_server(host="127.0.0.1", port=unused_tcp_port)
    try:
        yield Mailbox(server, unused_tcp_port)
    finally:
        listening.close()
        server.reset()
        await listening.wait_closed()


async def test_new_messages_are_taken_once_and_marked(
    db: Database, world: World, tmp_path: Path, mailbox: Mailbox
) -> None:
    box = Inbox(db, tmp_path / "files", world.app_id)
    mailbox.deliver(corpus.gmail(message_id="imap1@x"))
    mailbox.deliver(
        corpus.plain(
            "Again", message_id="imap2@x", sender="john.smith@gmail.com", in_reply_to="imap1@x"
        )
    )
    mailbox.deliver(b"Subject: no sender\r\n\r\nunreadable")
    imap = mailbox.settings(world.app_id)

    polled = await poll_once(db, box.storage, LIMITS, SETTINGS, imap)
    assert [r.outcome for r in polled.received] == ["started", "replied"]
    assert (polled.refused, polled.left) == (1, 0)
    cid = polled.received[0].conversation_id or 0
    assert polled.received[1].conversation_id == cid
    parts = await service.get_parts(db, world.app_id, cid)
    assert [p.body for p in parts] == ["Yes, the parcel arrived today, thank you!", "Again"]
    # Marked with the keyword, read state untouched, nothing removed.
    assert mailbox.flags() == [[KEYWORD], [KEYWORD], [KEYWORD]]

    # The next poll finds nothing new; a new message is taken alone.
    assert (await poll_once(db, box.storage, LIMITS, SETTINGS, imap)).received == []
    mailbox.deliver(corpus.plain("Third", message_id="imap3@x"))
    later = await poll_once(db, box.storage, LIMITS, SETTINGS, imap)
    assert [r.outcome for r in later.received] == ["started"]
    assert await box.counts() == (2, 3)


async def test_a_throttled_sender_is_left_for_the_next_poll(
    db: Database, world: World, tmp_path: Path, mailbox: Mailbox
) -> None:
    box = Inbox(db, tmp_path / "files", world.app_id)
    for n in range(3):
        mailbox.deliver(corpus.plain(f"Flood {n}", message_id=f"flood{n}@x"))
    limiter = inbound.SenderLimiter("2/minute", db)
    imap = mailbox.settings(world.app_id)
    polled = await poll_once(db, box.storage, LIMITS, SETTINGS, imap, limiter)
    assert [r.outcome for r in polled.received] == ["started", "started"]
    assert polled.left == 1
    assert mailbox.flags() == [[KEYWORD], [KEYWORD], []]
    # The same message is a duplicate if it is taken again (its mark was lost, say).
    mailbox.server._server_state.get_mailbox_messages(MAILBOX_USER, "INBOX")[0].flags.clear()
    again = await poll_once(db, box.storage, LIMITS, SETTINGS, imap)
    assert [r.outcome for r in again.received] == ["duplicate", "started"]


def test_the_imap_command_polls_once(
    db_url: str, tmp_path: Path, unused_tcp_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The mailbox's server in a thread of its own (the command runs its own event loop).
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        holder["server"] = MockImapServer(loop=loop)
        holder["listening"] = loop.run_until_complete(
            holder["server"].run_server(host="127.0.0.1", port=unused_tcp_port)
        )
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        created = runner.invoke(cli, ["app", "create", "Mailbox", "--database-url", db_url])
        assert created.exit_code == 0, created.output
        app_id = json.loads(created.stdout)["app"]
        mailbox = Mailbox(holder["server"], unused_tcp_port)
        delivered = threading.Event()

        def deliver() -> None:
            mailbox.deliver(corpus.plain("By IMAP", message_id="cli1@x"))
            delivered.set()

        loop.call_soon_threadsafe(deliver)  # in the server's thread, and waited for
        assert delivered.wait(10)
        monkeypatch.setenv("THREADLINE_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("THREADLINE_IMAP_HOST", "127.0.0.1")
        monkeypatch.setenv("THREADLINE_IMAP_PORT", str(unused_tcp_port))
        monkeypatch.setenv("THREADLINE_IMAP_TLS", "false")
        monkeypatch.setenv("THREADLINE_IMAP_USER", MAILBOX_USER)
        args = ["imap", "--once", "--app", str(app_id), "--database-url", db_url]
        first = runner.invoke(cli, args)
        assert first.exit_code == 0, first.output
        assert json.loads(first.stdout) == {"received": ["started"], "unreadable": 0, "left": 0}
        again = runner.invoke(cli, args)
        assert json.loads(again.stdout) == {"received": [], "unreadable": 0, "left": 0}
        # Without a server or an app to take the mail, one clear line.
        monkeypatch.delenv("THREADLINE_IMAP_HOST")
        missing = runner.invoke(cli, ["imap", "--once", "--database-url", db_url])
        assert missing.exit_code == 1
        assert "THREADLINE_IMAP_HOST" in missing.output
    finally:
        loop.call_soon_threadsafe(holder["listening"].close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
