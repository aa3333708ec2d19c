"""The ASGI application: one `Database` per process, opened and closed by the lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from threadline import __version__, api
from threadline.db.engine import Database
from threadline.events import routes as events
from threadline.events import stream
from threadline.events.realtime import start_realtime
from threadline.events.slots import RedisSlots
from threadline.settings import Settings, get_settings
from threadline.ui import routes as ui
from threadline.ui.attempts_redis import RedisAttempts
from threadline.web import docs, health
from threadline.web.failures import RequestGuard
from threadline.web.headers import HtmlSecurityHeaders
from threadline.web.logs import install_redaction
from threadline.web.shared import SharedRedis, open_shared_redis
from threadline.webhooks import routes as webhooks
from threadline.webhooks.worker import start_worker
from threadline.widget import routes as widget


async def start_smtp(app: FastAPI, shared: SharedRedis | None) -> asyncio.Server | None:
    """The SMTP listener, in the server's own loop, when THREADLINE_SMTP_PORT is set."""
    from threadline.api.state import app_storage
    from threadline.channels.email.inbound import MailSettings
    from threadline.channels.email.smtp import handler_from_settings, start_listener

    mail = MailSettings()
    if mail.smtp_port is None:
        return None
    handler = handler_from_settings(app.state.db, app_storage(app), shared)
    return await start_listener(handler, mail.smtp_host, mail.smtp_port)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    install_redaction()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database(
            settings.database_url,
            pool_size=settings.pool_size,
            batch_writes=settings.write_batch,
            sqlite_synchronous=settings.sqlite_synchronous,
            timeouts=settings.db_timeouts(),
            sqlite_busy_timeout=settings.sqlite_busy_timeout,
        )
        try:
            app.state.realtime = await start_realtime(
                app.state.db, settings.database_url, settings.redis_url, stream.token_valid
            )
            app.state.webhooks = await start_worker(app.state.db, app.state.realtime)
            shared = await open_shared_redis(app.state.db, settings.redis_url)
            app.state.shared_redis = shared
            if shared is not None:
                app.state.login_guard.redis = RedisAttempts(shared.client, shared.namespace)
                app.state.realtime.slots = RedisSlots(shared.client, shared.namespace)
            smtp = await start_smtp(app, shared)
            try:
                yield
            finally:
                if smtp is not None:
                    smtp.close()
                    await smtp.wait_closed()
                if app.state.webhooks is not None:
                    await app.state.webhooks.stop()
                await app.state.realtime.stop()
                if shared is not None:
                    await shared.close()
        finally:
            await app.state.db.dispose()

    # Swagger UI comes from the package itself (docs.register), never from a CDN.
    app = FastAPI(
        title="Threadline",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings

    health.register(app)

    docs.register(app)
    events.register_first(app)
    api.register(app)
    events.register(app)
    webhooks.register(app)
    widget.register(app)
    ui.register(app)
    app.add_middleware(HtmlSecurityHeaders)
    # Outermost: a request id for every request, and an answer for every failure.
    app.add_middleware(RequestGuard)
    return app
