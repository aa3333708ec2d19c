"""Webhook endpoints created once per idempotency key (the routes stay thin)."""

from __future__ import annotations

import secrets

from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.apps.manage import create_once
from threadline.apps.service import utcnow
from threadline.db.engine import Database
from threadline.db.schema import webhook_endpoints as endpoints_t
from threadline.events import repository as log_store
from threadline.webhooks import repository as repo
from threadline.webhooks import signing


async def add_endpoint(
    db: Database,
    app_id: int,
    *,
    url: str,
    events: list[str],
    format_: str,
    random_id: int | None,
) -> tuple[repo.Endpoint, bool]:
    """A new endpoint, or the one the app's creation with the same key made; and whether
    it was made now."""
    made: list[repo.Endpoint] = []

    async def create(conn: AsyncConnection) -> int:
        made.append(
            await repo.add_endpoint(
                conn,
                app_id=app_id,
                url=url,
                events=events,
                format_=format_,
                secret=signing.new_secret(),
                token=secrets.token_urlsafe(24),
                start_after=await log_store.head(conn),
                now=utcnow(),
            )
        )
        return made[-1].id

    ident, created = await create_once(db, endpoints_t, app_id, random_id, create)
    if created:
        return made[-1], True
    async with db.read() as conn:  # the first creation's, removed since or not
        return (await repo.endpoints_by_id(conn, [ident]))[ident], False
