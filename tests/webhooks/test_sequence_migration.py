"""Revision 0013 (webhook sequence numbers) on a database with deliveries: down, then up
again numbers each (endpoint, conversation)'s existing deliveries 1, 2, ... in queue order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import inspect, text

from tests.conftest import build_world
from threadline.db.engine import Database
from threadline.db.migrate import downgrade, upgrade
from threadline.db.schema import webhook_deliveries, webhook_endpoints

NOW = datetime(2026, 12, 21, 9, 0, tzinfo=UTC)


async def _app(url: str) -> int:
    """An app, made at the latest schema (the code that makes it writes today's columns)."""
    db = Database(url)
    try:
        return (await build_world(db)).app_id
    finally:
        await db.dispose()


async def _seed(url: str, app_id: int) -> None:
    """Two endpoints; deliveries of two conversations, queued interleaved."""
    db = Database(url)
    try:
        async with db.write() as conn:
            endpoints = []
            for n in range(2):
                values = {
                    "app_id": app_id,
                    "url": f"https://receiver.example/{n}",
                    "events": [],
                    "format": "json",
                    "secret": "whsec_x",
                    "token": "t",
                    "start_after": 0,
                    "created": NOW,
                }
                result = await conn.execute(
                    webhook_endpoints.insert().values(values).returning(webhook_endpoints.c.id)
                )
                endpoints.append(int(result.scalar_one()))
            event = 0
            for _ in range(3):
                for conversation in (101, 102):
                    for endpoint in endpoints:
                        event += 1
                        await conn.execute(
                            text(
                                "INSERT INTO webhook_deliveries (app_id, endpoint_id, event_id,"
                                " conversation_id, status, attempts, next_attempt_at, created)"
                                " VALUES (:app, :endpoint, :event, :conversation, 'delivered',"
                                " 1, :now, :now)"
                            ),
                            {
                                "app": app_id,
                                "endpoint": endpoint,
                                "event": event,
                                "conversation": conversation,
                                "now": NOW,
                            },
                        )
    finally:
        await db.dispose()


async def _rows(url: str) -> list[tuple[int, int, int, int]]:
    db = Database(url)
    try:
        async with db.read() as conn:
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("webhook_deliveries")}
            )
            assert "sequence" in columns
            query = webhook_deliveries.select().order_by(webhook_deliveries.c.id)
            return [
                (r.endpoint_id, r.conversation_id, r.event_id, r.sequence)
                for r in await conn.execute(query)
            ]
    finally:
        await db.dispose()


def test_upgrade_numbers_existing_deliveries_per_endpoint_and_conversation(db_url: str) -> None:
    app_id = asyncio.run(_app(db_url))
    downgrade(db_url, "0012")
    asyncio.run(_seed(db_url, app_id))
    upgrade(db_url)
    rows = asyncio.run(_rows(db_url))
    assert len(rows) == 12
    by_pair: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for endpoint, conversation, event, sequence in rows:
        by_pair.setdefault((endpoint, conversation), []).append((event, sequence))
    assert len(by_pair) == 4
    for numbered in by_pair.values():
        events = [e for e, _ in numbered]
        assert events == sorted(events)
        assert [s for _, s in numbered] == [1, 2, 3]
