"""A first end-to-end pass through the engine on both databases."""

from __future__ import annotations

from tests.conftest import World
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AuthorKind, PartType
from threadline.core.model import Author
from threadline.db.engine import Database


async def test_user_then_admin_reply(db: Database, world: World) -> None:
    started = await service.start_by_user(
        db, world.app_id, world.user_id, ev.UserReply(body="Hello", random_id=7)
    )
    cid = started.state.id
    assert started.state.parts_count == 1
    assert started.state.admin_unread_count == 1
    again = await service.start_by_user(
        db, world.app_id, world.user_id, ev.UserReply(body="Hello", random_id=7)
    )
    assert again.duplicate
    assert again.state.id == cid
    admin = Author(AuthorKind.ADMIN, world.admin_id)
    out = await service.perform(db, world.app_id, cid, ev.AdminReply(author=admin, body="Hi"))
    assert out.state.admin_unread_count == 0
    assert out.state.user_unread_count == 1
    assert out.parts[0].type is PartType.REPLY_ADMIN
    assert out.parts[0].part_group == started.parts[0].id
    assert await service.check(db) == []
