"""The compatibility suite reuses the API fixtures: the real app, a real HTTP client."""

from tests.api.conftest import anon, api, app, app_db, world

__all__ = ["anon", "api", "app", "app_db", "world"]
