"""Bounces of sent replies and the delivery events, on both databases: replies go out to a
real SMTP sink (`aiosmtpd` on loopback), the bounce comes back by Threadline's own SMTP
listener or the inbound endpoint, and every change of a reply's delivery state is a
`conversation_delivery` log event, rendered for operators and webhooks, never for users.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select, update

from tests.api.helpers import ok
from tests.conftest import World
from tests.email import corpus
from tests.email.test_outbound import (  # noqa: F401 (fixtures)
    Sink,
    mailed_conversation,
    no_inline_worker,
    reply,
    running,
    settings_for,
    settled,
    sink,
)
from tests.email.test_smtp import address_of, listener, send  # noqa: F401 (fixture)
from tests.waiting import until
from tests.webhooks.test_worker import Receiver
from threadline.channels.email.parse import parse
from threadline.conversations import service
from threadline.core import eventlog
from threadline.core import events as ev
from threadline.core.enums import AuthorKind
from threadline.core.model import Author
from threadline.db.engine import Database
from threadline.db.schema import conversation_parts, conversations, users
from threadline.events import repository as log_store
from threadline.events.present import render, user_projection
from threadline.events.repository import StoredEvent
from threadline.webhooks.repository import Endpoint
from threadline.webhooks.worker import start_worker

DOMAIN = "threadline.localhost"


async def post_mail(api: httpx.AsyncClient, raw: bytes) -> dict[str, Any]:
    files_ = {"message": ("m.eml", raw, "message/rfc822")}
    got: dict[str, Any] = ok(await api.post("/ext/apps/$self_app/email/inbound", files=files_))
    return got


async def delivery_events(db: Database, cid: int) -> list[StoredEvent]:
    async with db.read() as conn:
        batch = await log_store.read_after(conn, 0, 100_000)
    return [e for e in batch.events if e.conversation_id == cid and e.type == eventlog.DELIVERY]


async def parts_and_state(db: Database, cid: int) -> tuple[int, Any]:
    async with db.read() as conn:
        count = (
            await conn.execute(
                select(func.count())
                .select_from(conversation_parts)
                .where(conversation_parts.c.conversation_id == cid)
            )
        ).scalar_one()
        row = (
            await conn.execute(
                select(conversations.c.closed, conversations.c.status).where(
                    conversations.c.id == cid
                )
            )
        ).one()
    return int(count), (row.closed, row.status)


# -- the report, read -----------------------------------------------------------------------


@pytest.mark.parametrize("carries", ["rfc822", "headers", "field"])
def test_a_report_names_the_message_it_returns(carries: str) -> None:
    mail = parse(corpus.dsn("out7@threadline.localhost", carries=carries))
    assert mail.bounce
    report = mail.bounce_report
    assert report is not None
    assert report.original_ids == ("out7@threadline.localhost",)
    assert report.failed
    assert (report.status, report.recipient) == ("5.1.1", "jane@example.com")
    assert report.diagnostic.startswith("smtp; 550 5.1.1")
    assert report.smtp_code() == 550


def test_a_delay_is_no_failure_and_other_reports_are_none() -> None:
    delayed = parse(
        corpus.dsn("o@x", action="delayed", status="4.4.1", diagnostic="")
    ).bounce_report
    assert delayed is not None
    assert not delayed.failed
    assert delayed.smtp_code() is None
    assert parse(corpus.plain("hello", message_id="p@x")).bounce_report is None
    receipt = corpus.dsn("o@x").replace(b"delivery-status;", b"disposition-notification;", 1)
    assert parse(receipt).bounce_report is None


# -- bounces and events, end to end ---------------------------------------------------------


async def test_a_bounce_by_smtp_marks_the_sent_reply_bounced_and_each_change_is_an_event(
    app_db: Database,
    world: World,
    api: httpx.AsyncClient,
    sink: Sink,  # noqa: F811
    listener: int,  # noqa: F811
) -> None:
    cid = await mailed_conversation(api, world, "bounce-me@example.com")
    async with running(app_db, settings_for(sink.port)):
        part_id = await reply(app_db, world, cid, "It left today.")
        (sent,) = await settled(app_db, 1, "sent")
    await service.perform(
        app_db, world.app_id, cid, ev.Close(Author(AuthorKind.ADMIN, world.admin_id))
    )
    before = await parts_and_state(app_db, cid)
    to = await address_of(app_db, world.app_id)
    raw = corpus.dsn(sent.message_id, message_id="dsn-smtp@mx.example.com")
    refused = await asyncio.to_thread(send, listener, "", [to], raw)
    assert refused == {}
    # The reply's state, served by the API: bounced with the report's code and diagnostic.
    (got,) = ok(await api.get(f"/ext/conversations/{cid}/deliveries"))
    assert (got["part"], got["status"], got["message_id"]) == (part_id, "bounced", sent.message_id)
    assert got["relay_code"] == 550
    assert got["relay_answer"].startswith("5.1.1 smtp; 550 5.1.1 <jane@example.com>")
    # No part was added, the conversation stays closed, and it was no message's.
    assert await parts_and_state(app_db, cid) == before
    assert before[1][0] is True
    # The log: sent, then bounced, each naming the part, in order.
    events = await delivery_events(app_db, cid)
    assert [(e.data["part"]["id"], e.data["delivery"]["status"]) for e in events] == [
        (part_id, "sent"),
        (part_id, "bounced"),
    ]
    assert events[0].data["delivery"]["relay_code"] == 250
    assert events[1].data["delivery"]["bounce"] == {
        "status": "5.1.1",
        "diagnostic": "smtp; 550 5.1.1 <jane@example.com>: Recipient address rejected",
        "recipient": "jane@example.com",
    }
    # The same report again (same Message-ID) changes nothing.
    assert (await post_mail(api, raw))["outcome"] == "duplicate"
    assert len(await delivery_events(app_db, cid)) == 2


async def test_a_refused_reply_is_one_failed_event(
    app_db: Database,
    world: World,
    api: httpx.AsyncClient,
    sink: Sink,  # noqa: F811
) -> None:
    cid = await mailed_conversation(api, world, "refuse-me@example.com")
    sink.mode = "refuse"
    async with running(app_db, settings_for(sink.port)):
        part_id = await reply(app_db, world, cid, "one")
        await settled(app_db, 1, "failed")
    (event,) = await delivery_events(app_db, cid)
    assert event.data["part"] == {"id": part_id, "type": "reply_admin"}
    assert event.data["delivery"]["status"] == "failed"
    assert event.data["delivery"]["relay_code"] == 550
    # A bounce of a failed (never sent) reply changes nothing.
    (failed,) = ok(await api.get(f"/ext/conversations/{cid}/deliveries"))
    got = await post_mail(api, corpus.dsn(failed["message_id"], message_id="dsn-f@mx.example"))
    assert (got["outcome"], got["part"]) == ("bounced", part_id)
    (still,) = ok(await api.get(f"/ext/conversations/{cid}/deliveries"))
    assert still["status"] == "failed"
    assert len(await delivery_events(app_db, cid)) == 1


async def test_bounces_that_name_no_sent_reply_or_report_a_delay_are_ignored(
    app_db: Database,
    world: World,
    api: httpx.AsyncClient,
    sink: Sink,  # noqa: F811
) -> None:
    cid = await mailed_conversation(api, world, "delay-me@example.com")
    async with running(app_db, settings_for(sink.port)):
        await reply(app_db, world, cid, "soon")
        (sent,) = await settled(app_db, 1, "sent")
    unknown = await post_mail(api, corpus.dsn("never-sent@elsewhere", message_id="dsn-u@mx"))
    assert (unknown["outcome"], unknown["reason"]) == ("ignored", "bounce")
    # The user's own message (received, not sent) is no reply of ours either.
    inbound = await post_mail(api, corpus.dsn("delay-me@example.com", message_id="dsn-i@mx"))
    assert (inbound["outcome"], inbound["reason"]) == ("ignored", "bounce")
    delayed = await post_mail(
        api,
        corpus.dsn(sent.message_id, message_id="dsn-d@mx", action="delayed", status="4.4.1"),
    )
    assert (delayed["outcome"], delayed["reason"]) == ("ignored", "bounce")
    (still,) = ok(await api.get(f"/ext/conversations/{cid}/deliveries"))
    assert still["status"] == "sent"
    assert [e.data["delivery"]["status"] for e in await delivery_events(app_db, cid)] == ["sent"]


async def test_a_bounced_email_message_sets_the_conversations_status(
    app_db: Database,
    world: World,
    api: httpx.AsyncClient,
    sink: Sink,  # noqa: F811
) -> None:
    async with app_db.write() as conn:
        await conn.execute(
            update(users)
            .where(users.c.id == world.user_id)
            .values(props={"$email": "jane@example.com", "$name": "Jane"})
        )
    async with running(app_db, settings_for(sink.port)):
        started = ok(
            await api.post(
                f"/users/{world.user_id}/sendmessage", data={"body": "Hi", "type": "email"}
            )
        )
        cid = int(started["conversation"])
        (sent,) = await settled(app_db, 1, "sent")
        later = await reply(app_db, world, cid, "and a reply")
        found = await settled(app_db, 2, "sent")
    assert [d.part_id for d in found][1] == later
    count, (closed, status) = await parts_and_state(app_db, cid)
    assert status != "bounced"
    # A bounce of the later reply leaves the message's status alone.
    got = await post_mail(api, corpus.dsn(found[1].message_id, message_id="dsn-later@mx"))
    assert got["outcome"] == "bounced"
    assert await parts_and_state(app_db, cid) == (count, (closed, status))
    # A bounce of the message itself: bounced, no part added, and the change is logged.
    raw = corpus.dsn(sent.message_id, message_id="dsn-msg@mx", carries="field")
    got = await post_mail(api, raw)
    assert (got["outcome"], got["part"]) == ("bounced", sent.part_id)
    assert await parts_and_state(app_db, cid) == (count, (closed, "bounced"))
    conversation = ok(await api.get(f"/conversations/{cid}"))
    assert conversation["status"] == "bounced"
    async with app_db.read() as conn:
        batch = await log_store.read_after(conn, 0, 100_000)
    assert [
        e.data["changes"]["status"]
        for e in batch.events
        if e.conversation_id == cid and "status" in e.data.get("changes", {})
    ][-1] == "bounced"
    bounced = [
        e for e in await delivery_events(app_db, cid) if e.data["part"]["id"] == sent.part_id
    ]
    assert [e.data["delivery"]["status"] for e in bounced] == ["sent", "bounced"]


async def test_a_delivery_event_is_rendered_for_operators_and_webhooks_not_users(
    app_db: Database,
    world: World,
    api: httpx.AsyncClient,
    sink: Sink,  # noqa: F811
) -> None:
    cid = await mailed_conversation(api, world, "render-me@example.com")
    async with running(app_db, settings_for(sink.port)):
        part_id = await reply(app_db, world, cid, "Rendered")
        await settled(app_db, 1, "sent")
    (event,) = await delivery_events(app_db, cid)
    async with app_db.read() as conn:
        (out,) = await render(conn, [event], "")
    assert out["type"] == "conversation_delivery"
    assert out["part"]["id"] == part_id
    assert out["part"]["body"] == "Rendered"
    assert out["delivery"]["status"] == "sent"
    assert out["changes"] == {}
    assert user_projection(out) is None

    def endpoint(fmt: str, events: list[str]) -> Endpoint:
        return Endpoint(
            0, world.app_id, "https://example.com/h", events, fmt, "s", "t", 0, event.created
        )

    assert endpoint("json", []).wants(event)
    assert endpoint("json", ["conversation_delivery"]).wants(event)
    assert not endpoint("json", ["conversation_reply"]).wants(event)
    assert not endpoint("vendor", []).wants(event)
    # A webhook endpoint may name the type among its events (they are checked against these).
    assert eventlog.DELIVERY in eventlog.EVENT_TYPES


@pytest.fixture(autouse=True)
def allow_private_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook receiver of the test is on loopback."""
    monkeypatch.setenv("THREADLINE_WEBHOOK_ALLOW_PRIVATE", "1")


async def test_a_webhook_receives_the_delivery_events_of_a_sent_and_bounced_reply(
    app_db: Database,
    world: World,
    api: httpx.AsyncClient,
    sink: Sink,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        hook = ok(
            await api.post(
                "/ext/apps/$self_app/webhooks",
                json={"url": receiver.url, "events": ["conversation_delivery"], "format": "json"},
            )
        )
        assert hook["events"] == ["conversation_delivery"]
        cid = await mailed_conversation(api, world, "hooked@example.com")
        for name, value in {
            "THREADLINE_WEBHOOK_WORKER": "inline",
            "THREADLINE_WEBHOOK_POLL_SECONDS": "0.1",
            "THREADLINE_SMTP_RELAY_HOST": "127.0.0.1",
            "THREADLINE_SMTP_RELAY_PORT": str(sink.port),
            "THREADLINE_SMTP_RELAY_SECURITY": "none",
        }.items():
            monkeypatch.setenv(name, value)
        worker = await start_worker(app_db)
        assert worker is not None
        try:
            part_id = await reply(app_db, world, cid, "Hooked")
            (sent,) = await settled(app_db, 1, "sent")
            await until(lambda: len(receiver.requests) >= 1, "the sent event delivered")
            got = await post_mail(api, corpus.dsn(sent.message_id, message_id="dsn-hook@mx"))
            assert got["outcome"] == "bounced"
            await until(lambda: len(receiver.requests) >= 2, "the bounced event delivered")
        finally:
            await worker.stop()
    finally:
        await receiver.stop()
    bodies = [orjson.loads(r["body"]) for r in receiver.requests]
    assert [(b["type"], b["conversation"], b["part"]["id"]) for b in bodies] == [
        ("conversation_delivery", cid, part_id),
        ("conversation_delivery", cid, part_id),
    ]
    assert [b["delivery"]["status"] for b in bodies] == ["sent", "bounced"]
    assert bodies[1]["delivery"]["bounce"]["status"] == "5.1.1"
