"""Per-process objects of the API kept on `app.state`, built on first use from the settings."""

from __future__ import annotations

from fastapi import FastAPI, Request

from threadline.api.config import ApiSettings
from threadline.api.present import PresenceSource
from threadline.api.ratelimit import TokenRateLimiter
from threadline.attachments.storage import LocalStorage, Storage
from threadline.settings import RedisSettings


def api_settings(request: Request) -> ApiSettings:
    settings = getattr(request.app.state, "api_settings", None)
    if settings is None:
        settings = request.app.state.api_settings = ApiSettings()
    assert isinstance(settings, ApiSettings)
    return settings


def storage_of(request: Request) -> Storage:
    return app_storage(request.app)


def app_storage(app: FastAPI) -> Storage:
    storage = getattr(app.state, "attachment_storage", None)
    if storage is None:
        settings = getattr(app.state, "api_settings", None)
        if not isinstance(settings, ApiSettings):
            settings = app.state.api_settings = ApiSettings()
        storage = app.state.attachment_storage = LocalStorage(settings.data_dir / "attachments")
    return storage


def rate_limiter_of(request: Request) -> TokenRateLimiter | None:
    """The app's limiter, (re)built when the settings name another limit or storage."""
    settings = api_settings(request)
    if not settings.rate_limit.strip():
        return None
    limiter = getattr(request.app.state, "rate_limiter", None)
    if (
        not isinstance(limiter, TokenRateLimiter)
        or limiter.spec != settings.rate_limit
        or limiter.storage_uri != settings.rate_limit_storage
    ):
        limiter = TokenRateLimiter(
            settings.rate_limit,
            settings.rate_limit_storage,
            settings.rate_limit_key_prefix,
            RedisSettings().client_options(),
        )
        request.app.state.rate_limiter = limiter
    return limiter


def presence_of(request: Request) -> PresenceSource | None:
    """Who tells which users are on the site: the realtime hub's open widget streams, shared
    by the deployment's processes (None before the app's lifespan started it)."""
    realtime = getattr(request.app.state, "realtime", None)
    online: PresenceSource | None = getattr(realtime, "online_users", None)
    return online
