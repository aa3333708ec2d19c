"""E-mail tests use the API's fixtures (the real app with its lifespan and the world)."""

from tests.api.conftest import anon, api, app, app_db, world

__all__ = ["anon", "api", "app", "app_db", "world"]
