"""Webhook endpoints created once per idempotency key (the routes stay thin)."""

from __future__ import annotations

import secrets

from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.apps.manage import create_once
from threadline.apps.service import utcnow
from threadline.audit import repository as audit
from threadline.core.access import CLI, Actor
from threadline.core.errors import NotFound
from threadline.core.idempotency import content_digest
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
    actor: Actor = CLI,
) -> tuple[repo.Endpoint, bool]:
    """A new endpoint, or the one the app's creation with the same key made, and whether
    it was made now; the creation is in the audit log under `actor`. A retry must ask for
    the same URL, events (as a set) and format (else `IdempotencyKeyReused`)."""
    digest = content_digest({"url": url, "events": sorted(set(events)), "format": format_})
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
        await audit.record(
            conn, app_id, actor, "webhook.create", "webhook", made[-1].id, utcnow(), url=url
        )
        return made[-1].id

    ident, created = await create_once(db, endpoints_t, app_id, random_id, create, digest)
    if created:
        return made[-1], True
    async with db.read() as conn:  # the first creation's, removed since or not
        return (await repo.endpoints_by_id(conn, [ident]))[ident], False


async def remove_endpoint(db: Database, app_id: int, endpoint_id: int, actor: Actor = CLI) -> None:
    """Nothing more is sent to the endpoint; the removal is in the audit log."""
    async with db.write() as conn:
        now = utcnow()
        if not await repo.remove_endpoint(conn, app_id, endpoint_id, now):
            raise NotFound("webhook", endpoint_id)
        await audit.record(conn, app_id, actor, "webhook.remove", "webhook", endpoint_id, now)
