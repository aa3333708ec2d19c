"""Reading the audit log (entries are written by the changes themselves, see
`threadline.audit.repository.record`)."""

from __future__ import annotations

from typing import Any

from threadline.audit import repository
from threadline.audit.repository import Entry
from threadline.db.engine import Database

MAX_PAGE = 100
DEFAULT_PAGE = 50


async def page(
    db: Database, app_id: int, *, after: int | None, count: int
) -> tuple[list[Entry], int | None]:
    """Up to `count` entries older than entry `after` (all with None), newest first, and the
    cursor of the next page (None when this one is the last)."""
    async with db.read() as conn:
        entries = await repository.page(conn, app_id, before=after, limit=count + 1)
    more = len(entries) > count
    entries = entries[:count]
    return entries, entries[-1].id if more else None


def entry_out(entry: Entry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "created": entry.created,
        "actor_kind": entry.actor_kind,
        "actor_admin": entry.actor_admin_id,
        "actor_token": entry.actor_token_id,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "details": entry.details,
    }
