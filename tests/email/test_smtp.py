"""The SMTP listener on loopback, fed by `smtplib`; and the same result through `/ext/`."""

from __future__ import annotations

import asyncio
import re
import smtplib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.api.helpers import error, ok
from tests.conftest import World
from tests.email import corpus
from threadline.api.routes.email import mail_settings
from threadline.api.state import api_settings, storage_of
from threadline.attachments import service as files
from threadline.channels.email import inbound
from threadline.channels.email.smtp import InboundHandler, start_listener
from threadline.conversations import service
from threadline.db.engine import Database

DOMAIN = "threadline.localhost"


class Request:
    """What `storage_of` and `mail_settings` read: the app."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app


@pytest.fixture
async def listener(app: FastAPI, app_db: Database) -> AsyncIterator[int]:
    request: Any = Request(app)
    settings = api_settings(request)
    handler = InboundHandler(
        app_db,
        storage_of(request),
        files.Limits(settings.attachment_max_bytes, settings.attachment_types),
        mail_settings(request),
    )
    server = await start_listener(handler, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def send(port: int, sender: str, recipients: list[str], raw: bytes) -> dict[str, Any]:
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # SMTP's line ends
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        return dict(client.sendmail(sender, recipients, raw))


async def address_of(db: Database, app_id: int) -> str:
    """The app's default inbound address (`<key>@<domain>`)."""
    return f"{await inbound.app_key(db, app_id)}@{DOMAIN}"


def send_undeclared(port: int, sender: str, recipient: str, raw: bytes) -> tuple[int, bytes]:
    """MAIL FROM without SIZE, RCPT TO, then DATA: the answer to the data."""
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        assert client.mail(sender)[0] == 250
        assert client.rcpt(recipient)[0] == 250
        return client.data(raw)


async def conversations_of(db: Database, app_id: int) -> list[int]:
    from sqlalchemy import select

    from threadline.db.schema import conversations

    async with db.read() as conn:
        rows = await conn.execute(
            select(conversations.c.id)
            .where(conversations.c.app_id == app_id)
            .order_by(conversations.c.id)
        )
        return [int(r.id) for r in rows]


async def test_smtp_receives_for_the_apps_addresses(
    listener: int, app_db: Database, world: World, api: httpx.AsyncClient
) -> None:
    to = await address_of(app_db, world.app_id)
    raw = corpus.plain("By SMTP", message_id="smtp1@x", to=to)
    refused = await asyncio.to_thread(send, listener, "jane@example.com", [to], raw)
    assert refused == {}
    (cid,) = await conversations_of(app_db, world.app_id)
    (part,) = await service.get_parts(app_db, world.app_id, cid)
    assert part.body == "By SMTP"
    assert part.body_json is not None
    assert part.body_json["email"]["message_id"] == "smtp1@x"
    # The conversation's reply address and an address the owner added reach the app too.
    token = await inbound.reply_token(app_db, world.app_id, cid)
    reply = corpus.plain("Again", message_id="smtp2@x", in_reply_to=None)
    await asyncio.to_thread(send, listener, "jane@example.com", [f"reply+{token}@{DOMAIN}"], reply)
    assert len(await service.get_parts(app_db, world.app_id, cid)) == 2
    ok(await api.post("/ext/apps/$self_app/email/addresses", json={"address": "help@acme.test"}))
    other = corpus.plain("Via support@", message_id="smtp3@x", to="help@acme.test")
    await asyncio.to_thread(send, listener, "jane@example.com", ["HELP@acme.test"], other)
    assert len(await conversations_of(app_db, world.app_id)) == 2


async def test_unknown_recipients_are_refused_at_rcpt(
    listener: int, app_db: Database, world: World
) -> None:
    raw = corpus.plain("Nobody", message_id="nobody@x")
    unknown = [
        f"999999@{DOMAIN}",
        f"{world.app_id}@{DOMAIN}",  # an app's id is no address: it would be guessed
        f"{world.foreign_app_id}@{DOMAIN}",
        f"reply+0123456789abcdef01234567@{DOMAIN}",
        "someone@elsewhere.example",
    ]
    for address in unknown:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            await asyncio.to_thread(send, listener, "jane@example.com", [address], raw)
        ((code, _),) = refused.value.recipients.values()
        assert code == 550
    # One known recipient among unknown ones: delivered for it, the others refused.
    mixed = [await address_of(app_db, world.app_id), f"999999@{DOMAIN}"]
    refused_some = await asyncio.to_thread(send, listener, "jane@example.com", mixed, raw)
    assert set(refused_some) == {f"999999@{DOMAIN}"}
    assert len(await conversations_of(app_db, world.app_id)) == 1
    assert await conversations_of(app_db, world.foreign_app_id) == []


async def test_a_malformed_message_is_refused_at_data(
    listener: int, app_db: Database, world: World
) -> None:
    to = await address_of(app_db, world.app_id)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await asyncio.to_thread(
            send, listener, "x@example.com", [to], b"Subject: hi\r\n\r\nno from"
        )
    assert refused.value.smtp_code == 554


async def test_smtp_and_the_endpoint_give_the_same_result(
    listener: int, app_db: Database, world: World, api: httpx.AsyncClient
) -> None:
    to = await address_of(app_db, world.app_id)
    by_smtp = corpus.apple_mail(message_id="same1@x")
    by_http = by_smtp.replace(b"<same1@x>", b"<same2@x>")
    await asyncio.to_thread(send, listener, "ann.lee@icloud.com", [to], by_smtp)
    files_ = {"message": ("m.eml", by_http, "message/rfc822")}
    got = ok(await api.post("/ext/apps/$self_app/email/inbound", files=files_))
    assert got["outcome"] == "started"
    one, two = await conversations_of(app_db, world.app_id)
    assert got["conversation"] == two

    def shape(cid: int, parts: list[Any]) -> list[Any]:
        (part,) = parts
        email = dict(part.body_json["email"])
        # The SMTP envelope's recipient (the app's address) is among those it was sent to.
        for varying in ("message_id", "original", "inline", "to"):
            email.pop(varying)
        return [part.type, part.body, email, [(a.filename, a.size) for a in part.attachments]]

    first = await service.get_conversation(app_db, world.app_id, one)
    second = await service.get_conversation(app_db, world.app_id, two)
    assert first.user_id == second.user_id
    assert (first.type, first.reply_type) == (second.type, second.reply_type)
    assert shape(one, await service.get_parts(app_db, world.app_id, one)) == shape(
        two, await service.get_parts(app_db, world.app_id, two)
    )
    again = ok(await api.post("/ext/apps/$self_app/email/inbound", files=files_))
    assert (again["outcome"], again["conversation"]) == ("duplicate", two)


async def test_the_endpoint_refuses_bad_input_and_changes_nothing(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    assert "message" in error(
        await api.post("/ext/apps/$self_app/email/inbound"), 400, "BadRequest"
    )
    text_field = await api.post("/ext/apps/$self_app/email/inbound", data={"message": "x"})
    error(text_field, 400, "BadRequest")
    bad = {"message": ("m.eml", b"not a message", "message/rfc822")}
    message = error(
        await api.post("/ext/apps/$self_app/email/inbound", files=bad), 400, "BadRequest"
    )
    assert "sender" in message
    assert await conversations_of(app_db, world.app_id) == []


async def test_managing_addresses(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    path = "/ext/apps/$self_app/email/addresses"
    (default,) = ok(await api.get(path))
    assert default == {"id": None, "address": default["address"], "default": True}
    # `<key>@<domain>`: a random key of the app's own, not its id; the same every time.
    key, _, domain = default["address"].partition("@")
    assert domain == DOMAIN
    assert re.fullmatch(r"[0-9a-f]{20}", key)
    assert ok(await api.get(path)) == [default]
    assert await inbound.app_of_recipient(app_db, default["address"], DOMAIN) == world.app_id
    assert key != await inbound.app_key(app_db, world.foreign_app_id)
    added = ok(await api.post(path, json={"address": " Support@Acme.TEST "}))
    assert added["address"] == "support@acme.test"
    assert added["default"] is False
    assert ok(await api.get(path))[1] == added
    again = ok(await api.post(path, json={"address": "support@acme.test"}))
    assert again == added  # adding it twice is one address
    before = ok(await api.get(path))
    for bad in ("", "no-at-sign", "a@b", f"x@{DOMAIN}", "a b@c.example", "x" * 400 + "@a.b"):
        error(await api.post(path, json={"address": bad}), 400, "BadRequest")
    assert ok(await api.get(path)) == before
    error(await api.delete(f"{path}/999999"), 404, "NotFound")
    error(await api.delete(f"{path}/abc"), 400, "BadRequest")
    ok(await api.delete(f"{path}/{added['id']}"))
    assert ok(await api.get(path)) == [default]


async def test_an_address_of_another_app_is_refused(
    app: FastAPI, app_db: Database, api: httpx.AsyncClient, world: World
) -> None:
    await inbound.add_address(app_db, world.foreign_app_id, "theirs@acme.test", DOMAIN)
    path = "/ext/apps/$self_app/email/addresses"
    message = error(await api.post(path, json={"address": "theirs@acme.test"}), 400, "BadRequest")
    assert "another app" in message
    assert len(ok(await api.get(path))) == 1


# ---------------------------------------------------------------------------
# A 20 MB attachment, by SMTP and by the endpoint.

TWENTY_MB = 20 * 1000 * 1000


async def test_a_20_mb_attachment_arrives_both_ways(
    listener: int, app_db: Database, world: World, api: httpx.AsyncClient, app: FastAPI
) -> None:
    to = await address_of(app_db, world.app_id)
    by_smtp = corpus.with_attachment(message_id="big1@x", size=TWENTY_MB)
    by_http = by_smtp.replace(b"<big1@x>", b"<big2@x>")
    # Base64 makes the message a third larger than the file: more than the 25 MiB an
    # attachment may be, within what a message may be.
    settings = api_settings(Request(app))
    assert (
        settings.attachment_max_bytes
        < len(by_smtp)
        < mail_settings(Request(app)).mail_max_message_bytes
    )
    refused = await asyncio.to_thread(send, listener, "max@example.org", [to], by_smtp)
    assert refused == {}
    files_ = {"message": ("big.eml", by_http, "message/rfc822")}
    got = ok(await api.post("/ext/apps/$self_app/email/inbound", files=files_))
    assert got["outcome"] == "started"
    one, two = await conversations_of(app_db, world.app_id)
    assert got["conversation"] == two
    storage = storage_of(Request(app))
    for cid in (one, two):
        (part,) = await service.get_parts(app_db, world.app_id, cid)
        assert part.body == "The log is attached."
        (pdf,) = part.attachments
        assert (pdf.filename, pdf.mime_type, pdf.size) == (
            "report.pdf",
            "application/pdf",
            TWENTY_MB + 9,
        )
        stored = await files.find(app_db, world.app_id, pdf.id)
        data = await storage.load(stored.storage_key)
        assert data[:9] == b"%PDF-1.4 "
        assert len(data) == TWENTY_MB + 9
        email = part.body_json["email"]
        assert "refused_files" not in email
        # The whole message stays a download.
        original = await files.find(app_db, world.app_id, email["original"])
        assert original.size > TWENTY_MB
        assert original.mime_type == "message/rfc822"


async def test_what_is_too_large_is_refused_or_named(
    app: FastAPI, app_db: Database, world: World, api: httpx.AsyncClient
) -> None:
    # The same rules at a smaller scale: messages up to 300 kB, files up to 100 kB.
    request: Any = Request(app)
    small = inbound.MailSettings(mail_max_message_bytes=300_000, mail_sender_limit="")
    api_before = api_settings(request)
    handler = InboundHandler(
        app_db, storage_of(request), files.Limits(100_000, api_before.attachment_types), small
    )
    server = await start_listener(handler, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    app.state.mail_settings = small
    app.state.api_settings = api_before.model_copy(update={"attachment_max_bytes": 100_000})
    try:
        to = await address_of(app_db, world.app_id)
        # A message over the limit: SMTP refuses it (552; the sending server tells its
        # sender): at MAIL FROM when the client declares its size (SIZE), else at DATA.
        # The endpoint refuses it with a clear error. Nothing is stored.
        huge = corpus.with_attachment(message_id="huge@x", size=300_000)
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            await asyncio.to_thread(send, port, "max@example.org", [to], huge)
        assert refused.value.smtp_code == 552
        undeclared = await asyncio.to_thread(send_undeclared, port, "max@example.org", to, huge)
        assert undeclared[0] == 552
        files_ = {"message": ("huge.eml", huge, "message/rfc822")}
        message = error(
            await api.post("/ext/apps/$self_app/email/inbound", files=files_), 400, "BadRequest"
        )
        assert "larger than 300000 bytes" in message
        assert await conversations_of(app_db, world.app_id) == []
        # A file over the attachment limit in a message within its own: the message arrives,
        # the file is left out and named for the operator, the original keeps it.
        over = corpus.with_attachment(message_id="over@x", size=150_000)
        assert len(over) <= 300_000
        assert await asyncio.to_thread(send, port, "max@example.org", [to], over) == {}
        (cid,) = await conversations_of(app_db, world.app_id)
        (part,) = await service.get_parts(app_db, world.app_id, cid)
        assert part.body == "The log is attached."
        assert part.attachments == ()
        email = part.body_json["email"]
        assert email["refused_files"] == ["report.pdf"]
        original = await files.find(app_db, world.app_id, email["original"])
        assert original.size == len(over.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    finally:
        app.state.mail_settings = None
        app.state.api_settings = api_before
        server.close()
        await server.wait_closed()


async def test_the_endpoint_answers_429_to_a_flooding_sender(
    app: FastAPI, app_db: Database, api: httpx.AsyncClient
) -> None:
    app.state.mail_sender_limiter = inbound.SenderLimiter("1/minute", app_db)
    try:
        first = {"message": ("a.eml", corpus.plain("one", message_id="fl1@x"), "message/rfc822")}
        assert ok(await api.post("/ext/apps/$self_app/email/inbound", files=first))["outcome"] == (
            "started"
        )
        second = {"message": ("b.eml", corpus.plain("two", message_id="fl2@x"), "message/rfc822")}
        response = await api.post("/ext/apps/$self_app/email/inbound", files=second)
        error(response, 429, "Throttled")
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    finally:
        del app.state.mail_sender_limiter


async def test_the_sender_limit_holds_across_ways_in_and_processes(
    app: FastAPI, app_db: Database, world: World, api: httpx.AsyncClient
) -> None:
    # The listener and the endpoint each with a limiter of their own (as two processes
    # have): the counts are the database's, so the second message is refused either way.
    request: Any = Request(app)
    settings = api_settings(request)
    handler = InboundHandler(
        app_db,
        storage_of(request),
        files.Limits(settings.attachment_max_bytes, settings.attachment_types),
        mail_settings(request),
        inbound.SenderLimiter("1/minute", app_db),
    )
    server = await start_listener(handler, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    app.state.mail_sender_limiter = inbound.SenderLimiter("1/minute", app_db)
    try:
        to = await address_of(app_db, world.app_id)
        first = corpus.plain("one", message_id="way1@x", to=to)
        assert await asyncio.to_thread(send, port, "jane@example.com", [to], first) == {}
        second = {"message": ("b.eml", corpus.plain("two", message_id="way2@x"), "message/rfc822")}
        response = await api.post("/ext/apps/$self_app/email/inbound", files=second)
        error(response, 429, "Throttled")
        third = corpus.plain("three", message_id="way3@x", to=to)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(send, port, "jane@example.com", [to], third)
        assert refused.value.smtp_code == 451  # the sending server retries later
        assert len(await conversations_of(app_db, world.app_id)) == 1
    finally:
        del app.state.mail_sender_limiter
        server.close()
        await server.wait_closed()
