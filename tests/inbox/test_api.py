"""`/ext/apps/{app}/inbox` and `/ext/apps/{app}/search` over HTTP."""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.inbox.conftest import client
from tests.inbox.scene import (
    TAGS,
    Scene,
    reference_counts,
    reference_page,
    reference_search,
)
from threadline.apps import service as apps
from threadline.apps.repository import AppRepository
from threadline.apps.service import issue_token, utcnow
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.errors import DomainError
from threadline.db.engine import Database
from threadline.inbox.views import View


def data(response: httpx.Response, status: int = 200) -> Any:
    body = response.json()
    assert response.status_code == status, body
    assert body["meta"]["status"] == status
    return body


def at(answer: dict[str, Any]) -> datetime:
    seconds = Decimal(str(answer["data"]["at"]))
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(seconds * 1_000_000))


@pytest.fixture
async def scene(app_db: Database) -> Scene:
    scene = Scene(app_db, random.Random(21))
    # Written days ago: the random snoozes (of minutes) are over, only these two run now,
    # so that no snooze ends while a test walks its pages.
    scene.now = utcnow() - timedelta(days=3)
    await scene.setup(conversations=20)
    for _ in range(70):
        await scene.step()
    for ident in scene.conversations[:2]:
        until = utcnow() + timedelta(days=1)
        event = ev.Delay(until, scene.admin())
        with contextlib.suppress(DomainError):
            await service.perform(app_db, scene.app_id, ident, event, now=scene.tick())
    return scene


def counts_of(view: View, states: list[Any], when: datetime) -> dict[str, Any]:
    ref = reference_counts(states, view, when)
    return {
        "view": ref.view,
        **ref.statuses,
        "total": ref.total,
        "unassigned": ref.unassigned,
        "important": ref.important,
        "assignees": [{"id": k, "count": v} for k, v in ref.assignees.items()],
        "channels": [{"id": k, "count": v} for k, v in ref.channels.items()],
        "tags": [{"tag": k, "count": v} for k, v in ref.tags.items()],
    }


def params_of(view: View) -> dict[str, Any]:
    params: dict[str, Any] = {"status": view.status or "all"}
    for name in ("assignee", "channel", "tag", "important"):
        value = getattr(view, name)
        if value is not None:
            params[name] = str(value).lower() if isinstance(value, bool) else value
    return params


async def test_inbox_pages_and_counts(app: FastAPI, scene: Scene) -> None:
    states = await scene.states()
    app_id = scene.app_id
    token = await _token(scene.db, app_id, ["conversations-read"])
    views = [
        View("open"), View("delayed"), View("closed"), View(None),
        View("open", assignee=0), View("open", assignee=scene.admins[0]),
        View("open", channel=0), View("closed", channel=scene.channels[1], important=True),
        View("open", tag=TAGS[0]), View(None, tag=TAGS[1], assignee=0),
    ]  # fmt: skip
    async with client(app, token) as api:
        for view in views:
            seen: list[int] = []
            position = None
            first_at = None
            while True:
                params = {**params_of(view), "paginate_count": 3}
                if position is not None:
                    params["paginate_position"] = f"[{position[0]}, {position[1]}]"
                answer = data(await api.get(f"/ext/apps/{app_id}/inbox", params=params))
                first_at = first_at or at(answer)
                if position is None:
                    assert answer["data"]["counts"] == counts_of(view, states, at(answer)), view
                seen.extend(c["id"] for c in answer["data"]["conversations"])
                position = answer["meta"]["next_before_position"]
                if position is None:
                    break
            assert seen == reference_page(states, view, first_at), view


async def test_inbox_default_view_is_open_and_v1_walks(app: FastAPI, scene: Scene) -> None:
    states = await scene.states()
    token = await _token(scene.db, scene.app_id, ["conversations-read"])
    async with client(app, token) as api:
        answer = data(await api.get("/ext/apps/$self_app/inbox", params={"id_as_string": "1"}))
        ids = [int(c["id"]) for c in answer["data"]["conversations"]]
        assert ids == reference_page(states, View("open"), at(answer))[:20]
        assert all(isinstance(a["id"], str) for a in answer["data"]["counts"]["assignees"])
        seen: list[int] = []
        after = None
        while True:
            params: dict[str, Any] = {"count": 4}
            if after is not None:
                params["after"] = after
            page = data(await api.get("/v1/ext/apps/$self_app/inbox", params=params))
            seen.extend(c["id"] for c in page["data"]["conversations"])
            after = page["meta"]["next_after"]
            if after is None:
                break
        assert seen == reference_page(states, View("open"), at(page))


async def test_search_over_http(app: FastAPI, scene: Scene) -> None:
    states = await scene.states()
    parts = await scene.parts()
    token = await _token(scene.db, scene.app_id, ["conversations-read"])
    async with client(app, token) as api:
        for q, view in (
            ("invoice", View(None)),
            ("ok thanks", View("open")),
            ("ord", View(None, channel=scene.channels[0])),
        ):
            seen: list[tuple[int, int]] = []
            position = None
            while True:
                params = {**params_of(view), "q": q, "paginate_count": 2}
                if position is not None:
                    params["paginate_position"] = f"[{position[0]}, {position[1]}]"
                answer = data(await api.get(f"/ext/apps/{scene.app_id}/search", params=params))
                for hit in answer["data"]:
                    assert "<mark>" in hit["match"]["snippet"]
                    seen.append((hit["id"], hit["match"]["part"]))
                position = answer["meta"]["next_before_position"]
                if position is None:
                    break
            assert seen == reference_search(states, parts, q, view, utcnow()), (q, view)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("inbox", {"status": "snoozed"}),
        ("inbox", {"assignee": "x"}),
        ("inbox", {"tag": "t" * 256}),
        ("inbox", {"paginate_position": "[1]"}),
        ("search", {}),
        ("search", {"q": "!!"}),
        ("search", {"q": "a b c d e f g h i"}),
        ("search", {"q": "x" * 201}),
        ("search", {"q": "ok\x00"}),
    ],
)
async def test_bad_parameters_are_bad_requests(
    app: FastAPI, app_db: Database, path: str, params: dict[str, str]
) -> None:
    created = await apps.create_app(app_db, "Acme")
    async with client(app, created.token) as api:
        answer = data(await api.get(f"/ext/apps/{created.app_id}/{path}", params=params), 400)
        assert answer["meta"]["error"] == "BadRequest"


async def test_another_apps_inbox_is_not_found_and_reading_needs_the_scope(
    app: FastAPI, app_db: Database
) -> None:
    mine = await apps.create_app(app_db, "Mine")
    theirs = await apps.create_app(app_db, "Theirs")
    async with client(app, mine.token) as api:
        for path in ("inbox", "search?q=hello"):
            answer = data(await api.get(f"/ext/apps/{theirs.app_id}/{path}"), 404)
            assert answer["meta"]["error"] == "NotFound"
    token = await _token(app_db, mine.app_id, ["conversations-write"])
    async with client(app, token) as api:
        for path in ("inbox", "search?q=hello"):
            answer = data(await api.get(f"/ext/apps/{mine.app_id}/{path}"), 403)


async def _token(db: Database, app_id: int, scopes: list[str]) -> str:
    async with db.write() as conn:
        return await issue_token(AppRepository(conn), app_id, "test", scopes, utcnow())


async def test_inbox_without_counts(app: FastAPI, scene: Scene) -> None:
    token = await _token(scene.db, scene.app_id, ["conversations-read"])
    async with client(app, token) as api:
        bare = data(await api.get("/ext/apps/$self_app/inbox", params={"counts": "false"}))
        full = data(await api.get("/ext/apps/$self_app/inbox"))
    assert bare["data"]["counts"] is None
    assert full["data"]["counts"]["view"] >= len(full["data"]["conversations"])
    assert bare["data"]["conversations"] == full["data"]["conversations"]
