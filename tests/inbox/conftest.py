"""The inbox's HTTP tests use the API fixtures: the real ASGI app on the test database."""

from tests.api.conftest import app, app_db
from tests.api.conftest import client_for as client

__all__ = ["app", "app_db", "client"]
