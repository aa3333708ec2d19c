"""The widget's tests use the API fixtures: the real app and its world."""

from tests.api.conftest import anon, api, app, app_db, world

__all__ = ["anon", "api", "app", "app_db", "world"]
