"""The SMTP listener on loopback, fed by `smtplib`; and the same result through `/ext/`."""

from __future__ import annotations

import asyncio
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
    to = f"{world.app_id}@{DOMAIN}"
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
        f"reply+0123456789abcdef01234567@{DOMAIN}",
        "someone@elsewhere.example",
    ]
    for address in unknown:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            await asyncio.to_thread(send, listener, "jane@example.com", [address], raw)
        ((code, _),) = refused.value.recipients.values()
        assert code == 550
    # One known recipient among unknown ones: delivered for it, the others refused.
    mixed = [f"{world.app_id}@{DOMAIN}", f"999999@{DOMAIN}"]
    refused_some = await asyncio.to_thread(send, listener, "jane@example.com", mixed, raw)
    assert set(refused_some) == {f"999999@{DOMAIN}"}
    assert len(await conversations_of(app_db, world.app_id)) == 1
    assert await conversations_of(app_db, world.foreign_app_id) == []


async def test_a_malformed_message_is_refused_at_data(listener: int, world: World) -> None:
    to = f"{world.app_id}@{DOMAIN}"
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await asyncio.to_thread(
            send, listener, "x@example.com", [to], b"Subject: hi\r\n\r\nno from"
        )
    assert refused.value.smtp_code == 554


async def test_smtp_and_the_endpoint_give_the_same_result(
    listener: int, app_db: Database, world: World, api: httpx.AsyncClient
) -> None:
    to = f"{world.app_id}@{DOMAIN}"
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
        for varying in ("message_id", "original", "inline"):
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


async def test_managing_addresses(api: httpx.AsyncClient, world: World) -> None:
    path = "/ext/apps/$self_app/email/addresses"
    (default,) = ok(await api.get(path))
    assert default == {"id": None, "address": f"{world.app_id}@{DOMAIN}", "default": True}
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
