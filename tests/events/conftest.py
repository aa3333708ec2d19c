"""Event log, realtime and webhook tests use the API fixtures: the real app and its world;
`live` is a real server whose streams beat and poll quickly."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api.conftest import anon, api, app, app_db, world
from tests.events.live import Live, serve


@pytest.fixture
async def live(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Live]:
    monkeypatch.setenv("THREADLINE_REALTIME_HEARTBEAT_SECONDS", "0.3")
    monkeypatch.setenv("THREADLINE_REALTIME_POLL_SECONDS", "0.5")
    monkeypatch.setenv("THREADLINE_REALTIME_TOKEN_CHECK_SECONDS", "0.2")
    async with serve(db_url, tmp_path) as server:
        yield server


__all__ = ["anon", "api", "app", "app_db", "live", "world"]
