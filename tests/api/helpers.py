"""Shortcuts for API tests: seeding conversations through the engine, reading envelopes."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import World
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AuthorKind
from threadline.core.model import Author
from threadline.db.engine import Database


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The `data` of a successful answer, after checking the envelope."""
    body = response.json()
    assert response.status_code == status, body
    assert body["meta"]["status"] == status
    return body["data"]


def error(response: httpx.Response, status: int, name: str) -> str:
    """The error message of a refused request, after checking the envelope."""
    body = response.json()
    assert response.status_code == status, body
    assert body["meta"]["status"] == status
    assert body["meta"]["error"] == name, body
    assert body["data"] == {}
    message: str = body["meta"]["error_message"]
    assert message
    return message


def admin(world: World) -> Author:
    return Author(AuthorKind.ADMIN, world.admin_id)


async def started(
    db: Database, world: World, body: str = "Hello", user_id: int | None = None
) -> int:
    """A conversation the user started (so it is in the inbox, unassigned)."""
    outcome = await service.start_by_user(
        db, world.app_id, user_id or world.user_id, ev.UserReply(body=body)
    )
    return outcome.state.id


async def assigned(db: Database, world: World, body: str = "Hello") -> int:
    """A user-started conversation assigned to the world's first admin."""
    cid = await started(db, world, body)
    await service.perform(db, world.app_id, cid, ev.Assign(world.admin_id, admin(world)))
    return cid


async def foreign_conversation(db: Database, world: World) -> int:
    outcome = await service.start_by_user(
        db, world.foreign_app_id, world.foreign_user_id, ev.UserReply(body="Theirs")
    )
    return outcome.state.id
