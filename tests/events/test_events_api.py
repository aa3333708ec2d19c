"""`GET /ext/apps/{app}/events`: envelope, cursor paging, id_as_string, scopes, tenancy, and
the client's contract (Zulip's `verify_action` idea): the state fetched at a position plus
the events after that position equals the state fetched now, even with writes racing the
fetch.
"""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import client_for
from tests.api.helpers import admin, error, ok, started
from tests.conftest import World
from threadline.apps import service as apps
from threadline.apps.repository import AppRepository
from threadline.apps.service import issue_token, utcnow
from threadline.conversations import service
from threadline.core import eventlog
from threadline.core import events as ev
from threadline.core.enums import HIDDEN_FROM_USER, AssistantType, AuthorKind, MessageStatus
from threadline.core.errors import DomainError
from threadline.core.model import Author
from threadline.db.engine import Database
from threadline.users import service as users

EVENTS = "/ext/apps/$self_app/events"


async def catch_up(
    api: httpx.AsyncClient, after: Any = 0, count: int = 7, **params: Any
) -> tuple[list[dict[str, Any]], Any]:
    """Every event after `after`, page by page; and the position at the end."""
    found: list[dict[str, Any]] = []
    while True:
        r = await api.get(EVENTS, params={"after": after, "count": count, **params})
        page = ok(r)
        found.extend(page)
        after = r.json()["meta"]["next_after"]
        if len(page) < count:
            return found, after


async def test_pages_in_order_with_a_cursor(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world, "Hi")
    for i in range(5):
        await service.perform(
            app_db, world.app_id, cid, ev.AdminReply(author=admin(world), body=f"{i}")
        )
    r = await api.get(EVENTS, params={"count": 3})
    first = ok(r)
    assert [e["type"] for e in first] == [
        "conversation_started",
        "conversation_reply",
        "conversation_reply",
    ]
    assert r.json()["meta"]["next_after"] == first[-1]["id"]
    everything, position = await catch_up(api, 0, 3)
    assert [e["id"] for e in everything][:3] == [e["id"] for e in first]
    assert len(everything) == 7
    assert [e["id"] for e in everything] == sorted(e["id"] for e in everything)
    reply = everything[1]
    assert reply["conversation"] == cid
    assert reply["user"] == world.user_id
    assert reply["part"]["body"] == "Hi"
    assert reply["part"]["type"] == "reply_user"
    assert reply["part"]["from"] == world.user_id
    assert everything[2]["read_by"] == "admin"
    assert everything[2]["part"]["from"]["id"] == world.admin_id
    assert everything[-1]["changes"]["replies_count"] == 6
    assert position >= everything[-1]["id"]
    # Caught up: nothing after the position, and the position holds.
    r = await api.get(EVENTS, params={"after": position})
    assert ok(r) == []
    assert r.json()["meta"]["next_after"] >= position
    await service.perform(app_db, world.app_id, cid, ev.Close(admin(world)))
    (closed,) = ok(await api.get(EVENTS, params={"after": position}))
    assert closed["type"] == "conversation_closed"
    assert closed["changes"] == {
        "closed": True,
        "parts_count": 7,
        "part_last": closed["part"]["id"],
    }


async def test_ids_as_strings(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    cid = await started(app_db, world)
    await service.perform(app_db, world.app_id, cid, ev.Assign(world.admin_id, admin(world)))
    await service.perform(
        app_db, world.app_id, cid, ev.ChangeChannel(world.channel_id, admin(world))
    )
    r = await api.get(EVENTS, params={"id_as_string": "true"})
    events = ok(r)
    moved = events.pop()
    assert moved["part"]["body_json"] == {"channel": str(world.channel_id)}
    assert moved["changes"]["channel"] == str(world.channel_id)
    assert isinstance(r.json()["meta"]["next_after"], str)
    assert all(isinstance(e["id"], str) and e["conversation"] == str(cid) for e in events)
    assert events[0]["changes"]["channel"] == str(world.default_channel_id)
    assert events[1]["part"]["id"] == str(events[1]["part"]["id"])
    assert events[-1]["changes"]["assignee"] == str(world.admin_id)
    assert events[-1]["part"]["assignee"]["id"] == str(world.admin_id)
    again = ok(await api.get(EVENTS, params={"after": r.json()["meta"]["next_after"]}))
    assert again == []


async def test_bad_cursors_and_counts(api: httpx.AsyncClient) -> None:
    for params in ({"after": "x"}, {"after": -1}, {"count": 0}, {"count": 501}, {"after": 2**64}):
        error(await api.get(EVENTS, params=params), 400, "BadRequest")
    assert ok(await api.get(EVENTS, params={"after": 2**63 - 1})) == []


async def test_scopes_and_tenancy(
    app: FastAPI, api: httpx.AsyncClient, anon: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    await started(app_db, world)
    theirs = await service.start_by_user(
        app_db, world.foreign_app_id, world.foreign_user_id, ev.UserReply(body="theirs")
    )
    error(await anon.get(EVENTS), 401, "AuthenticationFailed")
    async with app_db.write() as conn:
        repo = AppRepository(conn)
        writer = await issue_token(repo, world.app_id, "w", ["conversations-write"], utcnow())
        foreign = await issue_token(
            repo, world.foreign_app_id, "f", ["conversations-read"], utcnow()
        )
    async with client_for(app, writer) as client:
        error(await client.get(EVENTS), 403, "PermissionDenied")
    async with client_for(app, foreign) as client:
        error(await client.get(f"/ext/apps/{world.app_id}/events"), 404, "NotFound")
        seen, _ = await catch_up(client)
        assert {e["conversation"] for e in seen} == {theirs.state.id}
    mine, _ = await catch_up(api)
    assert theirs.state.id not in {e["conversation"] for e in mine}


async def test_a_rolled_back_write_has_no_event(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    _, position = await catch_up(api)
    r = await api.post(f"/conversations/{cid}/tag", data={"tag": ""})
    error(r, 400, "BadRequest")
    with pytest.raises(DomainError):
        await service.perform(
            app_db, world.app_id, cid, ev.Close(admin(world)), ev.AddTag("", admin(world))
        )
    assert ok(await api.get(EVENTS, params={"after": position})) == []


# --- state at T + events after T == state now ------------------------------------------


def _id(value: Any) -> Any:
    return value["id"] if isinstance(value, dict) else value


def fields_of(conversation: dict[str, Any]) -> dict[str, Any]:
    """A conversation answer reduced to the fields the events carry (objects by id)."""
    return {name: _id(conversation[name]) for name in eventlog.FIELD_NAMES}


class Mirror:
    """A client that fetched some state once and from then on applies events only."""

    def __init__(self) -> None:
        self.conversations: dict[int, dict[str, Any]] = {}
        self.parts: dict[int, dict[int, dict[str, Any]]] = {}

    def load(self, conversation: dict[str, Any], parts: list[dict[str, Any]]) -> None:
        self.conversations[conversation["id"]] = fields_of(conversation)
        self.parts[conversation["id"]] = {p["id"]: p for p in parts}

    def apply(self, event: dict[str, Any]) -> None:
        cid = event["conversation"]
        self.conversations.setdefault(cid, {}).update(event["changes"])
        parts = self.parts.setdefault(cid, {})
        if "part" in event:
            parts[event["part"]["id"]] = dict(event["part"])
        read_by = event.get("read_by")
        for p in parts.values():
            if read_by == "admin" and p["type"] == "reply_user":
                p["read"] = True
            if read_by == "user" and p["type"] not in HIDDEN_FROM_USER | {"reply_user"}:
                p["read"] = True
            if event["type"] == eventlog.REMOVED:
                p.update(
                    body="", body_html="", body_json=None, attachments=[], removed=event["created"]
                )


async def fetch(api: httpx.AsyncClient, cid: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    conversation = ok(await api.get(f"/conversations/{cid}"))
    parts = ok(await api.get(f"/conversations/{cid}/parts", params={"count": 50}))
    return conversation, parts


async def random_writes(db: Database, world: World, cids: list[int], rng: random.Random) -> None:
    a, sender = admin(world), Author(AuthorKind.SENDER, world.sender_id)
    later = datetime.now(UTC) + timedelta(hours=1)
    choices: list[Any] = [
        lambda: ev.UserReply(body=f"user {rng.random():.3f}"),
        lambda: ev.AdminReply(author=a, body="operator"),
        lambda: ev.ContentPart(type=eventlog.PartType.NOTE, author=a, body="note"),
        ev.ReadByAdmin,
        ev.ReadByUser,
        lambda: ev.Assign(rng.choice([None, world.admin_id, world.other_admin_id]), a),
        lambda: ev.AddTag(rng.choice(["vip", "bug"]), a, strict=False),
        lambda: ev.RemoveTag(rng.choice(["vip", "bug"]), a, strict=False),
        lambda: ev.ChangeChannel(rng.choice([None, world.channel_id]), a),
        lambda: ev.Delay(rng.choice([None, later]), a),
        lambda: ev.Close(a),
        lambda: ev.Reopen(a),
        lambda: ev.BotTakeOver(AssistantType.ROUTING_BOT),
        lambda: ev.BotHandOff(admin_id=world.other_admin_id, by=a),
        lambda: ev.UpdateStatus(rng.choice(list(MessageStatus))),
    ]
    for _ in range(12):
        cid = rng.choice(cids)
        with contextlib.suppress(DomainError):  # e.g. a status nobody's message has
            await service.perform(db, world.app_id, cid, rng.choice(choices)())
    if rng.random() < 0.5:
        out = await service.start_by_message(
            db, world.app_id, world.user_id, body="Offer", sender=sender
        )
        cids.append(out.outcome.state.id)


async def test_state_at_a_position_plus_the_events_after_it_is_the_state_now(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    rng = random.Random(7)
    doomed = await apps.create_user(app_db, world.app_id, site_user_id="doomed")
    cids = [await started(app_db, world, f"c{i}") for i in range(3)]
    cids.append(await started(app_db, world, "bye", user_id=doomed))
    await random_writes(app_db, world, cids, rng)

    _, position = await catch_up(api)
    # A write lands between taking the position and fetching the state: its event comes
    # after the position while the state already holds it (events must apply idempotently).
    await service.perform(app_db, world.app_id, cids[0], ev.UserReply(body="racing"))
    mirror = Mirror()
    for cid in cids:
        mirror.load(*await fetch(api, cid))

    for round_ in range(3):
        await random_writes(app_db, world, cids, rng)
        if round_ == 1:
            await users.erase(app_db, world.app_id, doomed)
        cids.append(await started(app_db, world, f"new {round_}"))
        events, position = await catch_up(api, position, count=5)
        for event in events:
            mirror.apply(event)

    assert set(mirror.conversations) == set(cids)
    for cid in cids:
        conversation, parts = await fetch(api, cid)
        assert mirror.conversations[cid] == fields_of(conversation), cid
        assert sorted(mirror.parts[cid].values(), key=lambda p: p["id"]) == sorted(
            parts, key=lambda p: p["id"]
        )


async def test_the_cursor_moves_with_the_apps_own_events_only(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    """Other apps' writes leave it where it was (on PostgreSQL the log's horizon moved with
    every app's writes, and the cursor with it, which told of their activity)."""
    cid = await started(app_db, world)
    r = await api.get(EVENTS)
    mine = ok(r)
    position = r.json()["meta"]["next_after"]
    assert position == mine[-1]["id"]
    for n in range(3):
        await service.start_by_user(
            app_db, world.foreign_app_id, world.foreign_user_id, ev.UserReply(body=f"theirs {n}")
        )
    r = await api.get(EVENTS, params={"after": position})
    assert ok(r) == []
    assert r.json()["meta"]["next_after"] == position
    await service.perform(app_db, world.app_id, cid, ev.Close(admin(world)))
    (closed,) = ok(await api.get(EVENTS, params={"after": position}))
    assert closed["type"] == "conversation_closed"
