"""Fields of the vendor's objects that Threadline stores: the reply's `bot_name`, the
part's `sent_via` (the vendor's list), a user-started conversation's `type` /
`reply_type`, and whole-second times in the widget's API. Both databases.

Expected values are written from the vendor's pages: the v1 reply page's `bot_name` ("the
name of the bot from which the message is sent. Default name is Bot"), the ConversationPart
page's `sent_via` list, and the example of a user-started chat (`popup_chat` / `text`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update

from tests.api.helpers import error, ok, started
from tests.compat.forms import FORMS, send
from tests.conftest import World, build_world
from tests.test_migrations import empty_url
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AuthorKind, ConversationType, PartType, ReplyType, SentVia
from threadline.core.model import Author
from threadline.db.engine import Database
from threadline.db.migrate import downgrade, upgrade
from threadline.db.schema import conversation_parts, conversations
from threadline.widget import service as widget

__all__ = ["empty_url"]

# The ConversationPart page: "Can obtain values: web_user, web_panel, email_user,
# email_admin, app_android, app_chrome, app_desktop, message_auto, message_manual. Can be
# empty or missing (could not define)."
VENDOR_SENT_VIA = {
    "web_user",
    "web_panel",
    "email_user",
    "email_admin",
    "app_android",
    "app_chrome",
    "app_desktop",
    "message_auto",
    "message_manual",
    "",
}
VERSIONS = ("/v1", "/v2", "")


def bot(name: str) -> dict[str, Any]:
    """How a bot's part names its author: the bot of that name, without an id or avatar."""
    return {"id": None, "name": name, "avatar": "", "type": "bot"}


async def stored_bot_name(db: Database, part_id: int) -> str | None:
    async with db.read() as conn:
        query = select(conversation_parts.c.bot_name).where(conversation_parts.c.id == part_id)
        value: str | None = (await conn.execute(query)).scalar_one()
    return value


async def parts_count(api: httpx.AsyncClient, cid: int) -> int:
    count: int = ok(await api.get(f"/conversations/{cid}"))["parts_count"]
    return count


# --- bot_name ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("form", FORMS)
async def test_reply_bot_name_is_the_parts_author_in_every_form_and_version(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str, version: str
) -> None:
    cid = await started(app_db, world)
    url = f"{version}/conversations/{cid}/reply"
    part = ok(
        await send(api, "POST", url, {"body": "Your order ships today", "bot_name": "Ada"}, form)
    )
    assert part["from"] == bot("Ada")
    assert part["type"] == "reply_admin"
    assert await stored_bot_name(app_db, part["id"]) == "Ada"
    # Read back the way each reader sees it: the parts list, the conversation's embeds.
    listed = ok(await api.get(f"{version}/conversations/{cid}/parts"))
    assert [p["from"] for p in listed if p["id"] == part["id"]] == [bot("Ada")]
    got = ok(await api.get(f"{version}/conversations/{cid}"))
    assert got["reply_last"]["from"] == bot("Ada")
    assert got["last_admin"] is None  # a bot is not an operator
    # A note may be the bot's too.
    note = ok(
        await send(api, "POST", url, {"body": "seen", "bot_name": "Ada", "type": "note"}, form)
    )
    assert (note["type"], note["from"]) == ("note", bot("Ada"))


async def test_reply_without_bot_name_is_not_a_bots_and_an_empty_one_is_none(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    plain = ok(await api.post(f"/conversations/{cid}/reply", data={"body": "hi"}))
    assert plain["from"]["type"] == "message_sender"
    assert await stored_bot_name(app_db, plain["id"]) is None
    empty = ok(await api.post(f"/conversations/{cid}/reply", data={"body": "hi", "bot_name": " "}))
    assert empty["from"]["type"] == "message_sender"
    assert await stored_bot_name(app_db, empty["id"]) is None


async def test_reply_bot_name_refusals_change_nothing(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/reply"
    before = await parts_count(api, cid)
    message = error(
        await api.post(
            url, data={"body": "x", "bot_name": "Ada", "from_admin": str(world.admin_id)}
        ),
        400,
        "BadRequest",
    )
    assert message.startswith("bot_name:")
    message = error(
        await api.post(url, data={"body": "x", "bot_name": "Ada", "from_user": "true"}),
        400,
        "BadRequest",
    )
    assert message.startswith("bot_name:")
    message = error(
        await api.post(url, data={"body": "x", "bot_name": "A" * 256}), 400, "BadRequest"
    )
    assert "bot_name" in message
    assert await parts_count(api, cid) == before


async def test_reply_bot_name_retry_and_reuse_of_the_key(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/reply"
    sent = {"body": "On its way", "bot_name": "Ada", "random_id": "77"}
    first = ok(await api.post(url, data=sent))
    again = ok(await api.post(url, data=sent))
    assert again == first
    # The same key for another bot is another write: refused, nothing written.
    error(await api.post(url, data={**sent, "bot_name": "Bob"}), 409, "IdempotencyKeyReused")
    assert await parts_count(api, cid) == 2


async def test_bot_name_in_another_apps_conversation_is_not_found(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    theirs = (
        await service.start_by_user(
            app_db, world.foreign_app_id, world.foreign_user_id, ev.UserReply(body="Theirs")
        )
    ).state.id
    error(
        await api.post(f"/conversations/{theirs}/reply", data={"body": "x", "bot_name": "Ada"}),
        404,
        "NotFound",
    )


async def test_bot_name_in_the_event_log_as_streams_and_webhooks_carry_it(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    part = ok(await api.post(f"/conversations/{cid}/reply", data={"body": "hi", "bot_name": "Ada"}))
    events = ok(await api.get(f"/ext/apps/{world.app_id}/events", params={"count": 500}))
    [carried] = [e["part"] for e in events if e.get("part") and e["part"]["id"] == part["id"]]
    assert carried["from"] == bot("Ada")


# --- sent_via ---------------------------------------------------------------------------


async def test_sent_via_is_one_of_the_vendors_values(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    # Every kind of part the API can make, by every path.
    cid = await started(app_db, world)
    ok(await api.post(f"/conversations/{cid}/reply", data={"body": "a"}))
    ok(await api.post(f"/conversations/{cid}/reply", data={"body": "n", "type": "note"}))
    ok(await api.post(f"/conversations/{cid}/reply", data={"body": "u", "from_user": "true"}))
    ok(await api.post(f"/conversations/{cid}/assign", data={"admin": world.admin_id}))
    ok(await api.post(f"/conversations/{cid}/tag", data={"tag": "t"}))
    ok(await api.post(f"/conversations/{cid}/close", data={}))
    sent = ok(await api.post(f"/users/{world.user_id}/sendmessage", data={"body": "Offer"}))
    started_by_api = ok(
        await api.post(f"/users/{world.user_id}/startconversation", data={"body": "q"})
    )
    seen: dict[str, str] = {}
    for conversation in (cid, sent["conversation"], started_by_api["id"]):
        for part in ok(await api.get(f"/conversations/{conversation}/parts", params={"count": 50})):
            assert part["sent_via"] in VENDOR_SENT_VIA, part
            seen[f"{conversation}:{part['body'] or part['type']}"] = part["sent_via"]
    # The vendor's own examples: a user's chat reply is `web_user`; a manual message's
    # first part `message_manual`.
    assert seen[f"{cid}:Hello"] == "web_user"
    assert seen[f"{sent['conversation']}:Offer"] == "message_manual"
    # Parts the vendor's list has no value for are empty ("could not define").
    assert seen[f"{cid}:closed"] == ""
    assert len(seen) >= 9


async def test_sent_via_of_a_chat_bot_message_is_an_automatic_one(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    await service.perform(
        app_db,
        world.app_id,
        cid,
        ev.ContentPart(
            type=PartType.CHAT_BOT_ADMIN,
            author=Author(AuthorKind.BOT),
            body="Pick one",
            sent_via=SentVia.MESSAGE_CHAT_BOT,
        ),
    )
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    assert [(p["type"], p["sent_via"], p["from"]) for p in parts if p["body"] == "Pick one"] == [
        ("chat_bot_admin", "message_auto", bot("Bot"))
    ]


# --- type / reply_type of a user-started conversation ----------------------------------


async def test_user_started_conversations_store_popup_chat_and_text(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    by_api = ok(
        await api.post(f"/users/{world.user_id}/startconversation", data={"body": "From the API"})
    )["id"]
    visitor = widget.Visitor(session_id=0, app_id=world.app_id, user_id=world.user_id)
    by_widget = (await widget.start(app_db, visitor, "From the chat", None, ""))["conversation"][
        "id"
    ]
    by_messenger = (
        await service.start_by_user(
            app_db,
            world.app_id,
            world.user_id,
            ev.UserReply(body="From Telegram"),
            external_service="telegram",
            external_id="chat-1",
        )
    ).state.id
    for cid in (by_api, by_widget, by_messenger):
        async with app_db.read() as conn:
            row = (
                await conn.execute(
                    select(conversations.c.type, conversations.c.reply_type).where(
                        conversations.c.id == cid
                    )
                )
            ).one()
        assert tuple(row) == ("popup_chat", "text"), cid
        got = ok(await api.get(f"/conversations/{cid}"))
        assert (got["type"], got["reply_type"]) == ("popup_chat", "text")
    # A message's conversation keeps the message's, also once the user answers.
    sent = ok(
        await api.post(f"/users/{world.user_id}/sendmessage", data={"body": "Hi", "type": "email"})
    )
    ok(
        await api.post(
            f"/conversations/{sent['conversation']}/reply",
            data={"body": "Thanks", "from_user": "true"},
        )
    )
    got = ok(await api.get(f"/conversations/{sent['conversation']}"))
    assert (got["type"], got["reply_type"]) == ("email", "email")


def test_the_migration_fills_type_and_reply_type_of_user_started_conversations(
    empty_url: str,
) -> None:
    upgrade(empty_url)

    async def make() -> tuple[int, int]:
        db = Database(empty_url)
        try:
            world = await build_world(db)
            mine = await started(db, world)
            sent = await service.start_by_message(
                db,
                world.app_id,
                world.user_id,
                body="Offer",
                type_=ConversationType.POPUP_SMALL,
                reply_type=ReplyType.BUTTON,
                sender=Author(AuthorKind.SENDER, world.sender_id),
            )
            async with db.write() as conn:
                # As stored before this revision: NULL for a conversation its user started.
                await conn.execute(
                    update(conversations)
                    .where(conversations.c.id == mine)
                    .values(type=None, reply_type=None)
                )
            return mine, sent.outcome.state.id
        finally:
            await db.dispose()

    mine, sent = asyncio.run(make())
    downgrade(empty_url, "0016")
    upgrade(empty_url)

    async def read() -> dict[int, tuple[str | None, str | None]]:
        db = Database(empty_url)
        try:
            async with db.read() as conn:
                rows = await conn.execute(text("SELECT id, type, reply_type FROM conversations"))
                return {r[0]: (r[1], r[2]) for r in rows}
        finally:
            await db.dispose()

    assert asyncio.run(read()) == {mine: ("popup_chat", "text"), sent: ("popup_small", "button")}


# --- the widget's API: whole seconds -----------------------------------------------------


async def test_widget_times_are_whole_seconds(app_db: Database, world: World) -> None:
    visitor = widget.Visitor(session_id=0, app_id=world.app_id, user_id=world.user_id)
    written = await widget.start(app_db, visitor, "Hi", None, "")
    cid = written["conversation"]["id"]
    await service.perform(
        app_db, world.app_id, cid, ev.AdminReply(Author(AuthorKind.ADMIN, world.admin_id), "Yes")
    )
    shown = await widget.conversation(app_db, visitor, cid, "")
    listed = await widget.list_conversations(app_db, visitor)
    times = [
        written["part"]["created"],
        written["conversation"]["created"],
        written["conversation"]["last_update"],
        shown["created"],
        shown["last_update"],
        *(p["created"] for p in shown["parts"]),
        *(c[key] for c in listed for key in ("created", "last_update")),
    ]
    assert len(times) >= 8
    for value in times:
        assert type(value) is int, times
    # Parts stay in their order (by id) whatever their times.
    assert [p["body"] for p in shown["parts"]] == ["Hi", "Yes"]
