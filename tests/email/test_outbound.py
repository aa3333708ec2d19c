"""Operators' replies in e-mail conversations, sent through the outbox to a real SMTP sink
(an `aiosmtpd` controller on a free loopback port): the headers that thread, both parts,
notes never sent, retries with the same Message-ID, the relay's refusal stored, a killed
worker, the answer to a sent reply joining its conversation, and DKIM.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import dkim
import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from tests.api.helpers import ok
from tests.conftest import World
from tests.email import corpus
from tests.waiting import until
from threadline.channels.email import compose, deliveries, inbound
from threadline.channels.email.outbound import CURSOR_KEY, EmailReplies, OutboundSettings, begin
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AuthorKind, PartType
from threadline.core.model import Author
from threadline.db.engine import Database
from threadline.db.schema import email_deliveries
from threadline.outbox import cursor as outbox_cursor
from threadline.outbox.worker import OutboxWorker
from threadline.webhooks.worker import start_worker

DOMAIN = "threadline.localhost"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_inline_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test runs its own outbox worker (the server's would hold the lead on PG)."""
    monkeypatch.setenv("THREADLINE_WEBHOOK_WORKER", "off")
    for name in ("THREADLINE_SMTP_RELAY_HOST", "THREADLINE_DKIM_SELECTOR"):
        monkeypatch.delenv(name, raising=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Sink:
    """An SMTP relay on loopback whose answer the test sets: `ok` (250), `refuse` (550),
    `later` (451) or `swallow` (takes the message and never answers)."""

    port: int = field(default_factory=free_port)
    mode: str = "ok"
    # Every message that reached DATA (refused or not), with the answer it got.
    received: list[tuple[bytes, str]] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    _controller: Controller | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mode = self.mode
        answer = {
            "ok": "250 2.0.0 Ok: queued as 4Xz",
            "refuse": "550 5.1.1 <jane@example.com>: Recipient address rejected",
            "later": "451 4.3.0 Try again later",
            "swallow": "",
        }[mode]
        with self._lock:
            self.received.append((bytes(envelope.content), answer))
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        if mode == "swallow":
            await asyncio.Event().wait()  # never answers; ends with the connection
        return answer

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def accepted(self) -> list[EmailMessage]:
        with self._lock:
            return [parse(raw) for raw, answer in self.received if answer.startswith("250")]

    def count(self) -> int:
        with self._lock:
            return len(self.received)


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    return message


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


@pytest.fixture
def sink() -> Any:
    s = Sink()
    s.start()
    try:
        yield s
    finally:
        s.stop()


def settings_for(port: int, **extra: Any) -> OutboundSettings:
    values: dict[str, Any] = {
        "smtp_relay_host": "127.0.0.1",
        "smtp_relay_port": port,
        "smtp_relay_security": "none",
        "smtp_relay_timeout_seconds": 10.0,
        "email_backoff_seconds": 0.05,
        "email_backoff_cap_seconds": 0.3,
        "email_max_attempts": 5,
        "mail_domain": DOMAIN,
    }
    return OutboundSettings(**(values | extra))


@contextlib.asynccontextmanager
async def running(db: Database, settings: OutboundSettings) -> AsyncIterator[OutboxWorker]:
    worker = OutboxWorker(db, [EmailReplies(db, settings)], poll_seconds=0.1)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


async def mailed_conversation(api: httpx.AsyncClient, world: World, message_id: str) -> int:
    """A conversation a user started by e-mail (the inbound endpoint)."""
    raw = corpus.plain(
        "Where is my parcel?",
        message_id=message_id,
        to=f"{world.app_id}@{DOMAIN}",
        subject="Parcel 42",
    )
    files_ = {"message": ("m.eml", raw, "message/rfc822")}
    got = ok(await api.post("/ext/apps/$self_app/email/inbound", files=files_))
    assert got["outcome"] == "started"
    return int(got["conversation"])


async def reply(db: Database, world: World, cid: int, body: str) -> int:
    out = await service.perform(
        db, world.app_id, cid, ev.AdminReply(Author(AuthorKind.ADMIN, world.admin_id), body)
    )
    return out.parts[-1].id


async def rows(db: Database) -> list[deliveries.Delivery]:
    async with db.read() as conn:
        query = select(email_deliveries).order_by(email_deliveries.c.id)
        return [deliveries.Delivery(**r._mapping) for r in await conn.execute(query)]


async def settled(db: Database, count: int, *statuses: str) -> list[deliveries.Delivery]:
    found: list[deliveries.Delivery] = []

    async def done() -> bool:
        nonlocal found
        found = await rows(db)
        return len(found) == count and all(d.status in statuses for d in found)

    await until(done, f"{count} replies {statuses}")
    return found


async def test_a_reply_is_sent_with_threading_headers_and_both_parts_and_a_note_is_not(
    app_db: Database, world: World, api: httpx.AsyncClient, sink: Sink
) -> None:
    cid = await mailed_conversation(api, world, "first@example.com")
    async with running(app_db, settings_for(sink.port)):
        await service.perform(
            app_db,
            world.app_id,
            cid,
            ev.ContentPart(PartType.NOTE, Author(AuthorKind.ADMIN, world.admin_id), "internal"),
        )
        part_id = await reply(app_db, world, cid, "It left today.\n\nTracking: <b>A&B</b>")
        (done,) = await settled(app_db, 1, "sent")
    assert done.part_id == part_id
    assert (done.attempts, done.relay_code) == (1, 250)
    assert done.relay_answer is not None
    assert "queued as 4Xz" in done.relay_answer
    (message,) = sink.accepted()
    assert sink.count() == 1  # the note was never sent
    assert message["Message-ID"] == f"<{done.message_id}>"
    assert done.message_id.endswith(f"@{DOMAIN}")
    assert message["In-Reply-To"] == "<first@example.com>"
    assert message["References"] == "<first@example.com>"
    assert message["Subject"] == "Re: Parcel 42"
    assert message["From"].addresses[0].display_name == "Ann via Acme"
    own = f"{await inbound.app_key(app_db, world.app_id)}@{DOMAIN}"  # the app's address
    assert message["From"].addresses[0].addr_spec == own
    assert message["To"].addresses[0].addr_spec == "jane@example.com"
    (reply_to,) = message["Reply-To"].addresses
    assert reply_to.username.startswith("reply+")
    assert reply_to.domain == DOMAIN
    ((mail_from, rcpt_tos),) = sink.envelopes
    assert (mail_from, rcpt_tos) == (own, ["jane@example.com"])
    html = message.get_body(("html",))
    assert html is not None
    assert text_of(message) == "It left today.\n\nTracking: <b>A&B</b>\n"
    markup = html.get_content()
    assert "Tracking: &lt;b&gt;A&amp;B&lt;/b&gt;" in markup
    assert "<b>" not in markup
    # The part's state, served by the API.
    got = ok(await api.get(f"/ext/conversations/{cid}/deliveries"))
    assert [(d["part"], d["status"], d["message_id"]) for d in got] == [
        (part_id, "sent", done.message_id)
    ]


async def test_a_chat_conversation_is_not_mailed(
    app_db: Database, world: World, api: httpx.AsyncClient, sink: Sink
) -> None:
    chat = await service.start_by_user(app_db, world.app_id, world.user_id, ev.UserReply("hi"))
    mailed = await mailed_conversation(api, world, "m-chat@example.com")
    async with running(app_db, settings_for(sink.port)):
        await reply(app_db, world, chat.state.id, "by chat")
        await reply(app_db, world, mailed, "by mail")
        (done,) = await settled(app_db, 1, "sent")
    assert done.conversation_id == mailed
    assert [text_of(m) for m in sink.accepted()] == ["by mail\n"]


async def test_a_relay_that_is_down_then_defers_is_retried_and_sends_once_with_one_message_id(
    app_db: Database, world: World, api: httpx.AsyncClient
) -> None:
    sink = Sink()  # not started: the relay is down (connection refused)
    cid = await mailed_conversation(api, world, "down@example.com")
    try:
        async with running(app_db, settings_for(sink.port, email_max_attempts=30)):
            await reply(app_db, world, cid, "Sorry for the wait")

            async def tried(times: int) -> bool:
                found = await rows(app_db)
                return bool(found) and found[0].attempts >= times

            await until(lambda: tried(2), "two attempts on a relay that is down")
            (waiting,) = await rows(app_db)
            assert waiting.status == "queued"
            assert waiting.relay_code is None
            assert waiting.relay_answer is not None
            assert waiting.relay_answer.startswith("no answer from the relay")
            sink.mode = "later"  # up, but deferring (451)
            await asyncio.to_thread(sink.start)
            await until(lambda: sink.count() >= 2, "two deferred attempts")
            sink.mode = "ok"
            (done,) = await settled(app_db, 1, "sent")
    finally:
        sink.stop()
    assert done.attempts >= 5
    ids = {parse(raw)["Message-ID"] for raw, _ in sink.received}
    assert ids == {f"<{done.message_id}>"}  # every attempt carried the same Message-ID
    assert len(sink.accepted()) == 1


async def test_a_refusing_relay_fails_the_part_with_its_answer_and_later_replies_go_on(
    app_db: Database, world: World, api: httpx.AsyncClient, sink: Sink
) -> None:
    cid = await mailed_conversation(api, world, "refused@example.com")
    sink.mode = "refuse"
    async with running(app_db, settings_for(sink.port)):
        await reply(app_db, world, cid, "one")
        (failed,) = await settled(app_db, 1, "failed")
        sink.mode = "ok"
        await reply(app_db, world, cid, "two")
        found = await settled(app_db, 2, "failed", "sent")
    assert failed.attempts == 1  # a 5xx is final: not retried
    assert failed.relay_code == 550
    assert failed.relay_answer == "5.1.1 <jane@example.com>: Recipient address rejected"
    assert [d.status for d in found] == ["failed", "sent"]
    got = ok(await api.get(f"/ext/conversations/{cid}/deliveries"))
    assert [(d["status"], d["relay_code"]) for d in got] == [("failed", 550), ("sent", 250)]
    assert got[0]["relay_answer"].startswith("5.1.1")
    # The second reply answers the first (the chain of Message-IDs), sent or not.
    (message,) = sink.accepted()
    assert message["In-Reply-To"] == f"<{found[0].message_id}>"


async def test_every_attempt_deferred_ends_failed(
    app_db: Database, world: World, api: httpx.AsyncClient, sink: Sink
) -> None:
    cid = await mailed_conversation(api, world, "later@example.com")
    sink.mode = "later"
    async with running(app_db, settings_for(sink.port, email_max_attempts=3)):
        await reply(app_db, world, cid, "hello")
        (failed,) = await settled(app_db, 1, "failed")
    assert (failed.attempts, failed.relay_code) == (3, 451)
    assert sink.count() == 3


async def test_an_answer_to_a_sent_reply_joins_its_conversation(
    app_db: Database, world: World, api: httpx.AsyncClient, sink: Sink
) -> None:
    cid = await mailed_conversation(api, world, "start@example.com")
    async with running(app_db, settings_for(sink.port)):
        await reply(app_db, world, cid, "Which parcel?")
        (done,) = await settled(app_db, 1, "sent")
    # The user answers the sent reply, to the app's address (not the reply address): the
    # Message-ID it answers is what threads it.
    answer = corpus.plain(
        "Parcel 42, as I said",
        message_id="answer@example.com",
        to=f"{world.app_id}@{DOMAIN}",
        subject="Re: Parcel 42",
        in_reply_to=done.message_id,
        references=f"<{done.message_id}>",
    )
    got = ok(
        await api.post(
            "/ext/apps/$self_app/email/inbound",
            files={"message": ("a.eml", answer, "message/rfc822")},
        )
    )
    assert (got["outcome"], got["conversation"]) == ("replied", cid)


def _worker_command(db_url: str, port: int) -> tuple[list[str], dict[str, str]]:
    env = {
        **os.environ,
        "THREADLINE_WEBHOOK_POLL_SECONDS": "0.2",
        "THREADLINE_SMTP_RELAY_HOST": "127.0.0.1",
        "THREADLINE_SMTP_RELAY_PORT": str(port),
        "THREADLINE_SMTP_RELAY_SECURITY": "none",
        "THREADLINE_SMTP_RELAY_TIMEOUT_SECONDS": "60",
        "THREADLINE_EMAIL_BACKOFF_SECONDS": "0.05",
        "THREADLINE_MAIL_DOMAIN": DOMAIN,
    }
    command = [sys.executable, "-c", "from threadline.cli import main; main()", "worker"]
    return [*command, "--database-url", db_url], env


async def test_a_killed_worker_sends_again_under_the_same_message_id_and_never_after_sent(
    app_db: Database, db_url: str, world: World, api: httpx.AsyncClient, sink: Sink
) -> None:
    """The guarantee is at-least-once: a worker killed (SIGKILL) after the relay took the
    message, before it stored `sent`, leaves the part queued, and the next worker sends it
    again under the same Message-ID; once stored `sent`, no worker sends it again."""
    cid = await mailed_conversation(api, world, "kill@example.com")
    await begin(app_db)
    command, env = _worker_command(db_url, sink.port)
    sink.mode = "swallow"
    first = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    try:
        await reply(app_db, world, cid, "Once, please")
        await until(lambda: sink.count() == 1, "the relay took the message")
        first.kill()
        await asyncio.to_thread(first.wait)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    (left,) = await rows(app_db)
    assert (left.status, left.attempts) == ("queued", 0)
    sink.mode = "ok"
    second = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    try:
        (done,) = await settled(app_db, 1, "sent")
        second.kill()
        await asyncio.to_thread(second.wait)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    third = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    try:
        # A later reply is sent by the third worker: by then it has looked at what is due,
        # and the sent one is not.
        await reply(app_db, world, cid, "And a second one")
        found = await settled(app_db, 2, "sent")
    finally:
        third.terminate()
        await asyncio.to_thread(third.wait)
    ids = [parse(raw)["Message-ID"] for raw, _ in sink.received]
    assert ids == [f"<{m}>" for m in (done.message_id, done.message_id, found[1].message_id)]
    assert done.attempts == 1


async def test_the_cursor_starts_at_the_log_head(
    app_db: Database, world: World, api: httpx.AsyncClient, sink: Sink
) -> None:
    """Replies written before the relay was configured are not sent."""
    cid = await mailed_conversation(api, world, "before@example.com")
    await reply(app_db, world, cid, "before the relay")
    async with running(app_db, settings_for(sink.port)):
        async with app_db.read() as conn:
            assert await outbox_cursor.position(conn, CURSOR_KEY) is not None
        await reply(app_db, world, cid, "after")
        (done,) = await settled(app_db, 1, "sent")
    assert [text_of(m) for m in sink.accepted()] == ["after\n"]
    assert done.attempts == 1


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A fresh RSA key (openssl) and its DNS TXT record."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the DKIM test needs the openssl command")
    path = tmp_path_factory.mktemp("dkim") / "key.pem"
    subprocess.run([openssl, "genrsa", "-out", str(path), "2048"], check=True, capture_output=True)
    der = subprocess.run(
        [openssl, "rsa", "-in", str(path), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


async def test_a_sent_reply_carries_a_dkim_signature_that_verifies(
    app_db: Database,
    world: World,
    api: httpx.AsyncClient,
    sink: Sink,
    dkim_key: tuple[Path, bytes],
) -> None:
    path, record = dkim_key
    cid = await mailed_conversation(api, world, "dkim@example.com")
    settings = settings_for(
        sink.port, dkim_selector="tl2026", dkim_private_key_file=path, dkim_domain="acme.test"
    )
    async with running(app_db, settings):
        await reply(app_db, world, cid, "Signed reply, ünïcode too")
        await settled(app_db, 1, "sent")
    ((raw, _),) = sink.received
    asked: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes:
        asked.append(name)
        return record

    assert raw.startswith(b"DKIM-Signature:")
    assert dkim.verify(raw, dnsfunc=dns)
    assert asked == [b"tl2026._domainkey.acme.test."]
    # Changed in transit: the signature no longer holds.
    assert not dkim.verify(raw.replace(b"Signed reply", b"Forged reply"), dnsfunc=dns)


def test_references_keep_the_first_and_the_latest() -> None:
    thread = [f"<m{i}@x>" for i in range(30)]
    kept = compose.references(thread)
    assert len(kept) == compose.MAX_REFERENCES
    assert kept[0] == "<m0@x>"
    assert kept[-1] == "<m29@x>"
    assert compose.references(thread[:3]) == thread[:3]
    assert compose.reply_subject("Re: hello", "x") == "Re: hello"
    assert compose.reply_subject("  hello\n world ", "x") == "Re: hello world"
    assert compose.reply_subject(None, "fallback") == "fallback"


async def test_the_servers_outbox_worker_sends_replies_when_a_relay_is_configured(
    app_db: Database,
    world: World,
    api: httpx.AsyncClient,
    sink: Sink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cid = await mailed_conversation(api, world, "server@example.com")
    monkeypatch.setenv("THREADLINE_WEBHOOK_WORKER", "inline")
    monkeypatch.setenv("THREADLINE_WEBHOOK_POLL_SECONDS", "0.1")
    plain = await start_worker(app_db)  # no relay: webhooks only
    assert plain is not None
    await plain.stop()
    assert [c.name for c in plain.consumers] == ["webhooks"]
    for name, value in {
        "THREADLINE_SMTP_RELAY_HOST": "127.0.0.1",
        "THREADLINE_SMTP_RELAY_PORT": str(sink.port),
        "THREADLINE_SMTP_RELAY_SECURITY": "none",
    }.items():
        monkeypatch.setenv(name, value)
    worker = await start_worker(app_db)
    assert worker is not None
    try:
        assert [c.name for c in worker.consumers] == ["webhooks", "email"]
        await reply(app_db, world, cid, "From the server")
        await settled(app_db, 1, "sent")
    finally:
        await worker.stop()
    assert [text_of(m) for m in sink.accepted()] == ["From the server\n"]
