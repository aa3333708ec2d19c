"""The widget's HTTP surface: `/widget.js`, the visitor API, the demo page, and the operators'
`GET /ext/apps/{app}/widget` (the secret a site signs its user ids with).

The visitor API (`/widget/api/...`) is the widget's own, not part of the documented API:
visitors authenticate with a session token (`Authorization: Bearer tlw_...`), never an
API token. Its answers use the API's `{"meta", "data"}` envelope and error names, and it
answers any origin (the widget runs on the customer's site), with no cookies involved.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, FastAPI, Request
from limits import parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.responses import HTMLResponse, Response
from typing_extensions import TypedDict

from threadline import demo_signin
from threadline.api.attachments import file_response, store_upload
from threadline.api.auth import ManagerCaller
from threadline.api.common import AppPath, base_url, path_id
from threadline.api.envelope import JSON, error_response, respond
from threadline.api.errors import AuthenticationFailed, DomainError, Throttled
from threadline.api.params import (
    ApiParams,
    IdParam,
    RandomId,
    bad_request_from,
    cached_raw_params,
    describe,
)
from threadline.api.schemas import Envelope, Id, error_responses
from threadline.api.state import api_settings, rate_limiter_of, storage_of
from threadline.attachments import service as files
from threadline.conversations.service import Outcome
from threadline.core.errors import NotFound
from threadline.core.model import Attachment
from threadline.core.rules import MAX_BODY_CHARS
from threadline.db.engine import Database
from threadline.events.realtime import Realtime
from threadline.widget import repository as repo
from threadline.widget import service
from threadline.widget.demo_site import demo_page, no_app_page
from threadline.widget.service import Visitor

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}

M = TypeVar("M", bound=BaseModel)


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _ok(data: Any) -> Response:
    return Response(orjson.dumps({"meta": {"status": 200}, "data": data}), media_type=JSON)


def _endpoint(
    handler: Callable[[Request], Awaitable[Any]],
) -> Callable[[Request], Awaitable[Response]]:
    """A visitor API endpoint: the envelope, errors rendered here (so they carry the CORS
    headers a page of another origin needs to read them)."""

    async def endpoint(request: Request) -> Response:
        try:
            result = await handler(request)
            response = result if isinstance(result, Response) else _ok(result)
        except DomainError as exc:
            response = error_response(exc.error_name, exc.message, exc.status)
            if isinstance(exc, Throttled):
                response.headers["Retry-After"] = str(exc.retry_after)
        response.headers.update(_CORS)
        return response

    return endpoint


async def _params(request: Request, model: type[M]) -> M:
    raw = await cached_raw_params(request)
    try:
        return model.model_validate(raw.values)
    except ValidationError as exc:
        raise bad_request_from(exc) from None


async def _visitor(request: Request) -> Visitor:
    header = request.headers.get("authorization", "").strip()
    scheme, _, token = header.partition(" ")
    if scheme.lower() not in ("bearer", "token") or not token.strip():
        raise AuthenticationFailed("no visitor token: send 'Authorization: Bearer <token>'")
    visitor = await service.authenticate(_db(request), token.strip())
    if visitor is None:
        raise AuthenticationFailed("the visitor token is not valid")
    limiter = rate_limiter_of(request)
    if limiter is not None:
        # Negative keys keep visitor sessions apart from API tokens of the same number.
        retry_after = await limiter.hit(-visitor.session_id)
        if retry_after is not None:
            raise Throttled(retry_after)
    return visitor


def _conversation_id(request: Request) -> int:
    return path_id("id", str(request.path_params["id"]))


class _VisitorParams(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)


class SessionParams(_VisitorParams):
    app: IdParam
    user_id: str | None = None
    user_hash: str | None = None


class WriteParams(_VisitorParams):
    body: str = Field("", max_length=MAX_BODY_CHARS)
    random_id: RandomId = None


class TypingParams(_VisitorParams):
    body: str = Field("", max_length=service.MAX_DRAFT_CHARS)


def _channels(visitor: Visitor) -> list[str]:
    a, u = visitor.app_id, visitor.user_id
    return [
        f"conversation.{a}.{u}",
        f"conversation_reply.{a}.{u}",
        f"conversation_typing.{a}.{u}",
        f"conversation_read.{a}.{u}",
    ]


class NewVisitorLimit:
    """Anonymous sessions create users: a few per client address, so a script cannot fill
    the app with them (`THREADLINE_WIDGET_NEW_VISITOR_LIMIT`, `limits` notation)."""

    def __init__(self, limit: str) -> None:
        self.items = parse_many(limit) if limit.strip() else []
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def hit(self, address: str) -> None:
        for item in self.items:
            if not await self.limiter.hit(item, "new-visitor", address):
                stats = await self.limiter.get_window_stats(item, "new-visitor", address)
                raise Throttled(max(1, math.ceil(stats.reset_time - time.time())))


async def open_session(request: Request) -> Any:
    """A session for an anonymous visitor, or for a signed user id (`user_id` + `user_hash`)."""
    p = await _params(request, SessionParams)
    if p.user_id is None:
        limit: NewVisitorLimit = request.app.state.new_visitor_limit
        await limit.hit(request.client.host if request.client else "")
    session = await service.open_session(
        _db(request), p.app, site_user_id=p.user_id, user_hash=p.user_hash
    )
    visitor = session.visitor
    return {
        "token": session.token,
        # Not the app's name: anyone may open a session, for any app id.
        "app": {"id": visitor.app_id},
        "user": visitor.user_id,
        "channels": _channels(visitor),
    }


async def list_conversations(request: Request) -> Any:
    return await service.list_conversations(_db(request), await _visitor(request))


async def _upload(
    request: Request, visitor: Visitor, conversation_id: int | None
) -> files.StoredFile | None:
    """The file sent in the multipart field `file`, checked against the size limit and the
    types of the settings, and stored; None without one."""
    raw = await cached_raw_params(request)
    return await store_upload(
        request, _db(request), visitor.app_id, raw, "file", None, conversation_id
    )


async def _written_with(
    request: Request,
    stored: files.StoredFile | None,
    write: Callable[[Attachment | None], Awaitable[tuple[Outcome, dict[str, Any]]]],
) -> dict[str, Any]:
    """`write` with the stored file; the file is forgotten when the write fails or was a
    retry (the first write has its own), and tied to a conversation it started."""
    try:
        outcome, out = await write(stored.attachment if stored is not None else None)
    except BaseException:
        if stored is not None:
            await files.discard(_db(request), storage_of(request), stored)
        raise
    if stored is not None:
        if outcome.duplicate:
            await files.discard(_db(request), storage_of(request), stored)
        elif stored.conversation_id is None:
            await files.link(_db(request), stored, outcome.state.id)
    return out


async def start_conversation(request: Request) -> Any:
    visitor = await _visitor(request)
    p = await _params(request, WriteParams)
    stored = await _upload(request, visitor, None)
    return await _written_with(
        request,
        stored,
        lambda file: service.start_with(
            _db(request), visitor, p.body, p.random_id, base_url(request), file
        ),
    )


async def get_conversation(request: Request) -> Any:
    visitor = await _visitor(request)
    cid = _conversation_id(request)
    return await service.conversation(_db(request), visitor, cid, base_url(request))


async def reply(request: Request) -> Any:
    visitor = await _visitor(request)
    cid = _conversation_id(request)
    p = await _params(request, WriteParams)
    await service.conversation_of(_db(request), visitor, cid)  # 404 before storing a file
    stored = await _upload(request, visitor, cid)
    return await _written_with(
        request,
        stored,
        lambda file: service.reply_with(
            _db(request), visitor, cid, p.body, p.random_id, base_url(request), file
        ),
    )


async def download(request: Request) -> Any:
    """A file of a part the visitor sees, fetched with the visitor's token."""
    visitor = await _visitor(request)
    cid = _conversation_id(request)
    attachment_id = path_id("attachment", str(request.path_params["attachment"]))
    stored = await service.visible_file(_db(request), visitor, cid, attachment_id)
    data = await storage_of(request).load(stored.storage_key)
    if data is None:
        raise NotFound("attachment", attachment_id)
    return file_response(stored, data)


async def mark_read(request: Request) -> Any:
    visitor = await _visitor(request)
    return await service.mark_read(_db(request), visitor, _conversation_id(request))


async def typing(request: Request) -> Any:
    visitor = await _visitor(request)
    cid = _conversation_id(request)
    p = await _params(request, TypingParams)
    realtime: Realtime = request.app.state.realtime
    await service.typing(_db(request), realtime, visitor, cid, p.body)
    return {}


async def preflight(_request: Request) -> Response:
    return Response(status_code=204, headers=_CORS)


@cache
def _script() -> tuple[bytes, str]:
    body = resources.files("threadline.widget").joinpath("static/widget.js").read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


async def widget_js(request: Request) -> Response:
    body, etag = _script()
    # Revalidated on every page load (a cheap 304), so a new version reaches sites at once.
    headers = {"ETag": etag, "Cache-Control": "no-cache", **_CORS}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)


async def demo_site(request: Request) -> Response:
    """A fake shop page with the widget, for the demo app: `?app=`, else the one `scripts/start`
    saved in the data directory, else the first app."""
    raw = request.query_params.get("app")
    db = _db(request)
    async with db.read() as conn:
        if raw is None:
            saved = demo_signin.load(api_settings(request).data_dir)
            app_id = None
            if saved is not None and await repo.app_widget(conn, saved.app) is not None:
                app_id = saved.app
            if app_id is None:
                app_id = await repo.first_app_id(conn)
        else:
            try:
                app_id = path_id("app", raw)
            except DomainError as exc:
                return HTMLResponse(no_app_page(exc.message), status_code=400)
            if await repo.app_widget(conn, app_id) is None:
                app_id = None
    if app_id is None:
        return HTMLResponse(no_app_page("No such app. Run `threadline demo` first."), 404)
    return HTMLResponse(demo_page(app_id))


# ---------------------------------------------------------------------------
# The operators' side: what a site needs to embed the widget.

router = APIRouter(prefix="/ext", tags=["widget"])


class WidgetSettings(TypedDict):
    app: Id
    secret: str
    script: str
    snippet: str


@router.get(
    "/apps/{app}/widget",
    response_model=Envelope[WidgetSettings],
    summary="The chat widget: its snippet and the secret for signed user ids",
    openapi_extra=describe(ApiParams, body=False),
)
async def widget_settings(app: AppPath, caller: ManagerCaller, request: Request) -> Response:
    """`snippet` embeds the widget for anonymous visitors. To tie a visitor to the site's
    own user, add `data-user-id="<id>"` and `data-user-hash="<hex HMAC-SHA256 of the id,
    keyed with secret>"`, computed on the site's server; keep `secret` there."""
    app_id = caller.app(app)
    secret = await service.widget_secret(caller.db, app_id)
    return respond(WidgetSettings, _settings(request, app_id, secret), context=caller.context)


def _settings(request: Request, app_id: int, secret: str) -> dict[str, Any]:
    script = base_url(request).rstrip("/") + "/widget.js"
    return {
        "app": app_id,
        "secret": secret,
        "script": script,
        "snippet": f'<script src="{script}" data-app="{app_id}" async></script>',
    }


@router.post(
    "/apps/{app}/widget/secret",
    response_model=Envelope[WidgetSettings],
    summary="Rotate the widget secret",
    openapi_extra=describe(ApiParams, body=True),
)
async def rotate_widget_secret(app: AppPath, caller: ManagerCaller, request: Request) -> Response:
    """A new `secret`: user hashes signed with the old one are refused from now on, and the
    widget sessions of signed-in site users end (they sign in again with a new hash);
    anonymous visitors keep theirs. Answers as `GET .../widget` does."""
    app_id = caller.app(app)
    secret = await service.rotate_widget_secret(caller.db, app_id, caller.actor)
    return respond(WidgetSettings, _settings(request, app_id, secret), context=caller.context)


_API = "/widget/api"


class VisitorLimits(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="THREADLINE_", extra="ignore")

    # New anonymous visitors per client address; a shop's busiest page view rate from one
    # office NAT stays well below it. Empty: no limit.
    widget_new_visitor_limit: str = "20/minute;200/hour"


def register(app: FastAPI) -> None:
    """Mount the widget's routes on `app` (after `threadline.api.register`)."""
    app.include_router(router, responses=error_responses())
    app.state.new_visitor_limit = NewVisitorLimit(VisitorLimits().widget_new_visitor_limit)
    # Plain Starlette routes: the visitor API is not an API-token operation to document.
    app.add_route("/widget.js", widget_js, methods=["GET"])
    app.add_route("/demo/site", demo_site, methods=["GET"])
    for path, handler, method in (
        ("/session", open_session, "POST"),
        ("/conversations", list_conversations, "GET"),
        ("/conversations", start_conversation, "POST"),
        ("/conversations/{id}", get_conversation, "GET"),
        ("/conversations/{id}/reply", reply, "POST"),
        ("/conversations/{id}/read", mark_read, "POST"),
        ("/conversations/{id}/typing", typing, "POST"),
        ("/conversations/{id}/attachments/{attachment}", download, "GET"),
    ):
        app.add_route(_API + path, _endpoint(handler), methods=[method])
    app.add_route(_API + "/{path:path}", preflight, methods=["OPTIONS"])
