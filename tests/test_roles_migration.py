"""Revision 0014 (roles, token issuers, the audit log) on a database with data, down and up
again: in each app the first admin with a login (else the first admin) becomes the owner,
every other admin an operator; inbox sessions are tied to their admin, other tokens act
as the command line's."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import inspect, select

from tests.conftest import build_world
from threadline.apps import manage
from threadline.apps import service as apps
from threadline.apps.repository import AppRepository
from threadline.db.engine import Database
from threadline.db.migrate import downgrade, upgrade
from threadline.db.schema import admins, api_tokens


def _tables(url: str) -> set[str]:
    async def main() -> set[str]:
        db = Database(url)
        try:
            async with db.read() as conn:
                return await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        finally:
            await db.dispose()

    return asyncio.run(main())


def test_existing_admins_and_tokens_migrate(db_url: str) -> None:
    created = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)

    async def before() -> dict[str, int]:
        db = Database(db_url)
        try:
            world = await build_world(db)  # Acme: Ann and Bob, no logins; Other: Zed
            third = await apps.create_app(db, "Third")
            gone = await apps.create_admin(db, third.app_id, "Gone", password="pw-gone-123")
            await manage.remove_admin(db, third.app_id, gone)
            plain = await apps.create_admin(db, third.app_id, "Plain")
            login = await apps.create_admin(db, third.app_id, "Login", password="pw-login-123")
            later = await apps.create_admin(db, third.app_id, "Later", password="pw-later-123")
            async with db.write() as conn:
                repo = AppRepository(conn)
                session = await apps.issue_token(
                    repo,
                    third.app_id,
                    f"inbox session of admin {login}",
                    ["user-read"],
                    created,
                    created + timedelta(hours=1),
                )
                # Named like a session, made through the tokens API: no expiry.
                await apps.issue_token(
                    repo, third.app_id, f"inbox session of admin {later}", ["admin"], created
                )
                rows = await conn.execute(
                    select(api_tokens.c.id, api_tokens.c.token_hash).where(
                        api_tokens.c.app_id == third.app_id
                    )
                )
                ids = {r.token_hash: r.id for r in rows}
            return {
                "ann": world.admin_id,
                "bob": world.other_admin_id,
                "zed": world.foreign_admin_id,
                "gone": gone,
                "plain": plain,
                "login": login,
                "later": later,
                "session": ids[apps.hash_token(session)],
            }
        finally:
            await db.dispose()

    async def after() -> tuple[dict[int, str], dict[int, tuple[int | None, bool]]]:
        db = Database(db_url)
        try:
            async with db.read() as conn:
                roles = {
                    r.id: r.role for r in await conn.execute(select(admins.c.id, admins.c.role))
                }
                tokens = {
                    r.id: (r.issuer_admin_id, r.session)
                    for r in await conn.execute(
                        select(api_tokens.c.id, api_tokens.c.issuer_admin_id, api_tokens.c.session)
                    )
                }
            return roles, tokens
        finally:
            await db.dispose()

    made = asyncio.run(before())
    try:
        downgrade(db_url, "0013")  # with data present
        assert "audit_log" not in _tables(db_url)
    finally:
        upgrade(db_url)
    roles, tokens = asyncio.run(after())
    assert roles[made["ann"]] == "owner"  # no logins in Acme: its first admin
    assert roles[made["bob"]] == "operator"
    assert roles[made["zed"]] == "owner"
    assert roles[made["gone"]] == "operator"  # removed admins never become owners
    assert roles[made["plain"]] == "operator"
    assert roles[made["login"]] == "owner"  # the first with a login
    assert roles[made["later"]] == "operator"
    assert tokens[made["session"]] == (made["login"], True)
    others = [v for k, v in tokens.items() if k != made["session"]]
    assert others
    assert all(v == (None, False) for v in others)
