"""The Carrot quest compatible REST API and Threadline's `/ext/` extensions."""

from __future__ import annotations

from fastapi import FastAPI

from threadline.api import attachments, openapi
from threadline.api.config import ApiSettings
from threadline.api.envelope import install_error_handlers
from threadline.api.errors import BadRequest
from threadline.api.ratelimit import parse_limits
from threadline.api.routes import apps, conversations, deliveries, email, ext, inbox, users
from threadline.api.schemas import error_responses
from threadline.api.versioning import VersionPrefix

_ERRORS = error_responses(f"{BadRequest.error_name}, LookupError, ReplyTooBig, tag errors")


def register(app: FastAPI) -> None:
    """Mount the API's routers and error handlers on `app`.

    Every route is also served under `/v1/` and `/v2/`, and a higher version's prefix
    (`/v3/`) as `/v2/` (see `VersionPrefix`).
    """
    settings = ApiSettings()
    parse_limits(settings.rate_limit)  # a bad THREADLINE_RATE_LIMIT fails at start, not later
    app.state.api_settings = settings
    install_error_handlers(app)
    for module in (conversations, users, apps, ext, email, deliveries, inbox, attachments):
        app.include_router(module.router, responses=_ERRORS)
    app.add_middleware(VersionPrefix)
    openapi.install(app)
