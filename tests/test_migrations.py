"""Alembic migrations on empty SQLite and PostgreSQL databases: up, again, down, up.

After every upgrade the database must match `threadline.db.schema.metadata` exactly, as
Alembic's autogenerate comparison sees it (the check that a model change without its
migration fails).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url

from tests.conftest import _admin_execute, _worker, postgres_base_url
from threadline.db.engine import create_engine
from threadline.db.migrate import downgrade, upgrade
from threadline.db.schema import include_object, metadata

EXPECTED_TABLES = {table.name for table in metadata.sorted_tables}


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    base = postgres_base_url()
    if not base:
        pytest.skip("THREADLINE_TEST_POSTGRES_URL is not set")
    # The process id too: another test run on the same server must not drop this one's database.
    name = f"threadline_migrations_{_worker()}_{os.getpid()}"
    drop = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    asyncio.run(_admin_execute(base, drop, f"CREATE DATABASE {name}"))
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin_execute(base, drop))


def _inspect(connection: Connection) -> tuple[set[str], list[Any]]:
    tables = set(inspect(connection).get_table_names())
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "render_as_batch": connection.dialect.name == "sqlite",
            "include_object": include_object,
        },
    )
    return tables, compare_metadata(context, metadata)


def tables_and_diff(url: str) -> tuple[set[str], list[Any]]:
    """The database's tables, and every difference autogenerate finds against the schema."""

    async def main() -> tuple[set[str], list[Any]]:
        engine = create_engine(url, write=True, pool_size=1)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(_inspect)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def assert_at_head(url: str) -> None:
    tables, diff = tables_and_diff(url)
    assert tables >= EXPECTED_TABLES, EXPECTED_TABLES - tables
    assert "alembic_version" in tables
    assert diff == []


def test_upgrade_on_an_empty_database_then_again(empty_url: str) -> None:
    upgrade(empty_url)
    assert_at_head(empty_url)
    upgrade(empty_url)
    assert_at_head(empty_url)


def test_downgrade_to_base_and_upgrade_again(empty_url: str) -> None:
    upgrade(empty_url)
    downgrade(empty_url, "base")
    tables, _ = tables_and_diff(empty_url)
    assert tables & EXPECTED_TABLES == set()
    upgrade(empty_url)
    assert_at_head(empty_url)
