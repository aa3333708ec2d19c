"""The widget's tests use the API fixtures (the real app and its world) and the realtime
tests' live server."""

from tests.api.conftest import anon, api, app, app_db, world
from tests.events.conftest import live

__all__ = ["anon", "api", "app", "app_db", "live", "world"]
