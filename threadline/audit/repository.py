"""All SQL of the audit log. Entries are written in the transaction of the change they
record, so a change is never without its entry, nor an entry without its change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.core.access import Actor
from threadline.db.schema import audit_log


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    created: datetime
    actor_kind: str
    actor_admin_id: int | None
    actor_token_id: int | None
    action: str
    object_type: str
    object_id: int | None
    details: dict[str, Any]


async def record(
    conn: AsyncConnection,
    app_id: int,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: int | None,
    now: datetime,
    **details: Any,
) -> None:
    await conn.execute(
        audit_log.insert().values(
            app_id=app_id,
            created=now,
            actor_kind=actor.kind.value,
            actor_admin_id=actor.admin_id,
            actor_token_id=actor.token_id,
            action=action,
            object_type=object_type,
            object_id=object_id,
            details=details,
        )
    )


async def page(
    conn: AsyncConnection, app_id: int, *, before: int | None, limit: int
) -> list[Entry]:
    """The app's entries, newest first; with `before`, only those older than that entry."""
    a = audit_log.c
    query = select(audit_log).where(a.app_id == app_id)
    if before is not None:
        query = query.where(a.id < before)
    query = query.order_by(a.id.desc()).limit(limit)
    return [
        Entry(
            r.id,
            r.created,
            r.actor_kind,
            r.actor_admin_id,
            r.actor_token_id,
            r.action,
            r.object_type,
            r.object_id,
            dict(r.details or {}),
        )
        for r in await conn.execute(query)
    ]
