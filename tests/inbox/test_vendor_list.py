"""The vendor's conversation list (`GET /apps/{app}/conversations`) on the inbox's index
walks: every combination of its filters against a brute-force answer while conversations
change, over the v2 keyset and the v1 cursor, and over HTTP."""

from __future__ import annotations

import itertools
import random
from datetime import datetime

from fastapi import FastAPI

from tests.inbox.conftest import client
from tests.inbox.scene import TAGS, Scene, in_inbox, newest_first
from threadline.apps import service as apps
from threadline.conversations.queries import InboxFilter, PageRequest
from threadline.core.enums import AssistantType, PartType
from threadline.core.model import ConversationState
from threadline.db.engine import Database
from threadline.inbox import views
from threadline.inbox.service import snapshot


def matches(s: ConversationState, f: InboxFilter) -> bool:
    """The list's filters as api.md states them, in plain Python."""
    if not in_inbox(s):
        return False
    if f.closed is not None and s.closed != f.closed:
        return False
    answered = s.reply_last_type == PartType.REPLY_ADMIN
    if f.answered is not None and answered != f.answered:
        return False
    delayed = s.delayed_until is not None and s.delayed_until > f.now
    if f.delayed is not None and delayed != f.delayed:
        return False
    if f.assigned is not None:
        mine = s.assignee_id is None if f.assigned == 0 else s.assignee_id == f.assigned
        if not (mine or (f.include_not_assigned and s.assignee_id is None)):
            return False
    if not f.include_not_assigned and s.assignee_id is None:
        return False
    if f.tags:
        has_all = all(t in s.tags for t in f.tags)
        if not (has_all or (f.include_no_tags and not s.tags)):
            return False
    elif f.include_no_tags and s.tags:
        return False  # alone: only the conversations without tags
    if f.channel is not None and (s.channel_id or 0) != f.channel:
        return False
    return f.assistant_type is None or (
        s.assistant_type is not None and s.assistant_type.value == f.assistant_type
    )


def filters(scene: Scene, now: datetime, sample: int, seed: int) -> list[InboxFilter]:
    combos = list(
        itertools.product(
            (None, True, False),  # closed
            (None, True, False),  # answered
            (None, True, False),  # delayed
            (None, 0, scene.admins[0]),  # assigned
            (False, True),  # include_not_assigned
            ((), (TAGS[0],), (TAGS[0], TAGS[1])),  # tags
            (False, True),  # include_no_tags
            (None, 0, scene.channels[1]),  # channel
            (None, AssistantType.LEAD_BOT.value),  # assistant_type
        )
    )
    chosen = random.Random(seed).sample(combos, sample)
    # The list's defaults and the spec's own example always.
    chosen += [
        (None, None, None, None, False, (), False, None, None),
        (None, None, None, 0, True, (), False, None, None),
        (None, None, None, None, True, (), False, None, None),
    ]
    return [InboxFilter(now, *combo) for combo in chosen]  # type: ignore[arg-type]


async def walk_v2(db: Database, app_id: int, f: InboxFilter) -> list[int]:
    ids: list[int] = []
    position = None
    for _ in range(1000):
        async with snapshot(db) as conn:
            page = await views.vendor_page(conn, app_id, f, PageRequest(4, "before", position))
        ids.extend(s.id for s in page.states)
        if page.next_before is None:
            return ids
        position = page.next_before
    raise AssertionError("the walk did not end")


async def walk_v1(db: Database, app_id: int, f: InboxFilter) -> list[int]:
    ids: list[int] = []
    after = None
    for _ in range(1000):
        async with snapshot(db) as conn:
            page = await views.vendor_page(conn, app_id, f, v1=(after, 3))
        ids.extend(s.id for s in page.states)
        if page.next_after_v1 is None:
            return ids
        after = page.next_after_v1
    raise AssertionError("the walk did not end")


async def test_every_filter_combination_matches_the_reference(db: Database) -> None:
    scene = Scene(db, random.Random(21))
    await scene.setup(conversations=30)
    non_empty = 0
    for round_ in range(3):
        for _ in range(70):
            await scene.step()
        states = await scene.states()
        for f in filters(scene, scene.now, sample=45, seed=round_):
            expected = newest_first([s for s in states if matches(s, f)])
            non_empty += bool(expected)
            assert await walk_v2(db, scene.app_id, f) == expected, f
            assert await walk_v1(db, scene.app_id, f) == expected, f
    assert non_empty > 20  # the comparisons are not all of empty lists


async def test_the_list_over_http(app: FastAPI, app_db: Database) -> None:
    created = await apps.create_app(app_db, "Acme")
    scene = Scene(app_db, random.Random(6))
    scene.app_id = created.app_id
    scene.channels = [created.default_channel_id]
    scene.channels.append(await apps.create_channel(app_db, scene.app_id, "Sales"))
    scene.admins = [await apps.create_admin(app_db, scene.app_id, n) for n in ("Ann", "Bob")]
    scene.users = [
        await apps.create_user(app_db, scene.app_id, site_user_id=f"u{i}") for i in range(3)
    ]
    for _ in range(12):
        await scene.start()
    for _ in range(60):
        await scene.step()
    states = await scene.states()
    cases = [
        ({}, InboxFilter(scene.now)),
        ({"assigned": 0, "include_not_assigned": "true"},
         InboxFilter(scene.now, assigned=0, include_not_assigned=True)),
        ({"assigned": scene.admins[0], "include_not_assigned": "true", "closed": "false"},
         InboxFilter(scene.now, closed=False, assigned=scene.admins[0],
                     include_not_assigned=True)),
        ({"tags": TAGS[0], "include_no_tags": "true", "include_not_assigned": "true"},
         InboxFilter(scene.now, tags=(TAGS[0],), include_no_tags=True,
                     include_not_assigned=True)),
        ({"channel": scene.channels[1], "include_not_assigned": "true"},
         InboxFilter(scene.now, channel=scene.channels[1], include_not_assigned=True)),
    ]  # fmt: skip
    async with client(app, created.token) as http:
        for params, f in cases:
            ids: list[int] = []
            position = None
            while True:
                query = {**params, "paginate_count": 5}
                if position is not None:
                    query["paginate_position"] = position
                answer = await http.get(f"/apps/{scene.app_id}/conversations", params=query)
                assert answer.status_code == 200, answer.text
                body = answer.json()
                ids.extend(c["id"] for c in body["data"])
                found = body["meta"]["next_before_position"]
                if found is None:
                    break
                position = f"[{found[0]}, {found[1]}]"
            expected = newest_first([s for s in states if matches(s, f)])
            assert ids == expected, params
            assert expected or params == {}  # the cases are not all empty
