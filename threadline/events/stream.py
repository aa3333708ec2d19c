"""Realtime endpoints: `/websocket/<channels...>` and `/sse/<channels...>`, and typing.

Both take the token in the Authorization header or as `auth_token` (the vendor's way; it
lands in access logs, which redact it); a WebSocket also as the subprotocol
`token.<token>` next to `threadline` (what the inbox and the widget do: browsers cannot
set headers on a WebSocket, and the URL stays free of secrets). `tag` resumes after the
last message seen (SSE also reads the `Last-Event-ID` header); `id_as_string` as in the
API. A bad token is refused with code 3401, a
channel the token may not read with 3403 (WebSocket close codes; for SSE in the JSON
error of a 401 / 403 answer). Messages are `{"id", "channel", "message", "tag", "time"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import orjson
from fastapi import APIRouter, Request, WebSocket
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect, WebSocketState

from threadline.api.auth import Caller
from threadline.api.common import admin_author
from threadline.api.params import RawParams, parse_from_user, parse_id, vendor_bool
from threadline.apps.service import authenticate
from threadline.conversations import service
from threadline.db.engine import Database
from threadline.events.channels import Channel, ChannelRefused, parse, parse_for_user
from threadline.events.direct import direct_socket
from threadline.events.hub import Client
from threadline.events.realtime import Realtime
from threadline.events.slots import presence_key
from threadline.widget.service import authenticate as authenticate_visitor

router = APIRouter()
log = logging.getLogger("threadline.events.stream")

# Where the API's token dependency and parameter parsing leave their results in the
# request scope (threadline/api/auth.py, threadline/api/params.py).
CALLER_SCOPE_KEY = "threadline.caller"
RAW_PARAMS_SCOPE_KEY = "threadline.raw_params"

BAD_TOKEN = 3401
CHANNEL_NOT_ALLOWED = 3403
BAD_REQUEST = 3400
TOO_MANY_STREAMS = 3429
# The client's queue overflowed (WebSocket "try again later"): reconnect with the tag.
TOO_SLOW = 1013
GOING_AWAY = 1001


class Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Access:
    token: str
    app_id: int
    channels: list[Channel]
    after: int | None
    id_as_string: bool
    # The chat widget visitor whose session token opened the stream (None: an API token).
    visitor_user_id: int | None = None


# A browser cannot set headers on a WebSocket, yet a token in the URL ends up in access
# logs: the inbox and the widget offer two subprotocols instead, `threadline` and
# `token.<token>`; the server picks `threadline` (a browser drops a connection whose answer
# names no protocol it offered).
SUBPROTOCOL = "threadline"
TOKEN_SUBPROTOCOL_PREFIX = "token."  # noqa: S105  (a marker, not a secret)


def _offered_protocols(headers: Mapping[str, str]) -> list[str]:
    offered = headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in offered.split(",") if p.strip()]


def _protocol_token(headers: Mapping[str, str]) -> str | None:
    for protocol in _offered_protocols(headers):
        if protocol.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return protocol.removeprefix(TOKEN_SUBPROTOCOL_PREFIX) or None
    return None


def _chosen_protocol(headers: Mapping[str, str]) -> str | None:
    return SUBPROTOCOL if SUBPROTOCOL in _offered_protocols(headers) else None


def _token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    offered = _protocol_token(headers)
    if offered:
        return offered
    header = headers.get("authorization")
    if header:
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() in ("token", "bearer") and credentials.strip():
            return credentials.strip()
        return None
    value = query.get("auth_token", "").strip()
    return value or None


async def _access(
    db: Database,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    path: str,
    last_event_id: str | None = None,
) -> Access:
    token = _token(headers, query)
    record = await authenticate(db, token) if token else None
    # A chat widget visitor's session token: that one user's own channels only.
    visitor = await authenticate_visitor(db, token) if token and record is None else None
    if token is None or (record is None and visitor is None):
        raise Refused(BAD_TOKEN, "the API token is not valid")
    try:
        if visitor is not None:
            app_id = visitor.app_id
            channels = parse_for_user(path, app_id, visitor.user_id)
        else:
            assert record is not None
            app_id = record.app_id
            channels = parse(path, app_id, record.scopes)
    except ChannelRefused as exc:
        raise Refused(CHANNEL_NOT_ALLOWED, str(exc)) from None
    raw_tag = query.get("tag") or last_event_id
    try:
        after = parse_id(raw_tag.strip()) if raw_tag and raw_tag.strip() else None
        id_as_string = bool(vendor_bool(query.get("id_as_string")))
    except ValueError as exc:
        raise Refused(BAD_REQUEST, f"tag: {exc}") from None
    visitor_user_id = visitor.user_id if visitor is not None else None
    return Access(token, app_id, channels, after, id_as_string, visitor_user_id)


async def token_valid(db: Database, token: str) -> bool:
    """Whether `token` still opens streams: an API or inbox token, or a widget session."""
    return await authenticate(db, token) is not None or (
        await authenticate_visitor(db, token) is not None
    )


@contextlib.asynccontextmanager
async def _stream_slot(realtime: Realtime, access: Access, address: str) -> AsyncIterator[None]:
    """Count one open stream for the token and the client address while it lasts, across
    the deployment's processes (threadline.events.slots); refuse one over either limit
    (`Refused`, 3429). A widget visitor's stream also counts (uncapped) under the user's
    presence key: while it is open, the user is online."""
    token = access.token
    settings = realtime.settings
    limits = {
        "token:" + hashlib.sha256(token.encode()).hexdigest(): (
            settings.realtime_max_streams_per_token
        ),
        "address:" + address: settings.realtime_max_streams_per_address,
    }
    limits = {key: limit for key, limit in limits.items() if limit}  # 0: not counted
    if access.visitor_user_id is not None:
        limits[presence_key(access.app_id, access.visitor_user_id)] = 0  # counted, no cap
    if not limits:
        yield  # no caps: nothing to count
        return
    slot: str | None = None
    try:
        slot = await realtime.slots.take(limits)
        counted = True
    except Exception as exc:
        # Where the count lives is away (the database, Redis): the caps guard against abuse,
        # they must not end the streaming of a deployment in trouble. Served uncounted.
        log.warning("realtime: a stream's slot could not be counted (%s)", exc)
        counted = False
    if not counted:
        yield
        return
    if slot is None:
        raise Refused(TOO_MANY_STREAMS, "too many streams open at once")
    try:
        yield
    finally:
        try:
            await realtime.slots.release(slot)
        except Exception as exc:  # its lease runs out instead
            log.warning("realtime: a stream's slot was not released (%s)", exc)


def _realtime(app_state: object) -> Realtime:
    realtime = getattr(app_state, "realtime", None)
    assert isinstance(realtime, Realtime), "the realtime hub starts with the app's lifespan"
    return realtime


async def _subscribe(realtime: Realtime, access: Access) -> Client:
    client = await realtime.hub.subscribe(
        access.app_id, access.channels, after=access.after, id_as_string=access.id_as_string
    )
    client.token = access.token
    return client


@router.websocket("/websocket/{channels:path}")
async def websocket_stream(websocket: WebSocket, channels: str) -> None:
    realtime = _realtime(websocket.app.state)
    protocol = _chosen_protocol(websocket.headers)
    slot = contextlib.AsyncExitStack()
    try:
        access = await _access(realtime.db, websocket.headers, websocket.query_params, channels)
        address = websocket.client.host if websocket.client else ""
        await slot.enter_async_context(_stream_slot(realtime, access, address))
    except Refused as refused:
        # The vendor's codes are close codes, sent after the opening.
        await websocket.accept(subprotocol=protocol)
        await websocket.close(code=refused.code, reason=refused.reason[:120])
        return
    async with slot:
        await _serve_websocket(websocket, realtime, access, protocol)


async def _serve_websocket(
    websocket: WebSocket, realtime: Realtime, access: Access, protocol: str | None
) -> None:
    # Registered before the handshake completes: a client that sees the connection open
    # receives every change committed from then on.
    client = await _subscribe(realtime, access)
    try:
        await websocket.accept(subprotocol=protocol)
    except BaseException:
        realtime.hub.unsubscribe(client)
        raise
    heartbeat = realtime.settings.realtime_heartbeat_seconds
    client.direct = direct_socket(websocket.scope)

    async def send() -> None:
        stream = realtime.hub.stream(client, heartbeat, replay=access.after is not None)
        async for _tag, message in stream:
            if not message:
                message = client.ping() or b""
                if not message:
                    continue
            await websocket.send_text(message.decode())
        # The stream ended: the client was too slow, or the server is stopping.
        code = BAD_TOKEN if client.revoked else TOO_SLOW if client.dropped else GOING_AWAY
        await websocket.close(code=code)

    async def receive() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:  # what the client sends is ignored; this notices it leaving
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return

    tasks = [asyncio.create_task(send()), asyncio.create_task(receive())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        realtime.hub.unsubscribe(client)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task
        if websocket.client_state is WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError):
                await websocket.close(code=GOING_AWAY)


_SSE_ERRORS = {
    TOO_MANY_STREAMS: (429, "Throttled"),
    BAD_TOKEN: (401, "AuthenticationFailed"),
    CHANNEL_NOT_ALLOWED: (403, "PermissionDenied"),
    BAD_REQUEST: (400, "BadRequest"),
}


async def sse_stream(request: Request) -> Response:
    """Server-Sent Events: each message is one `data:` line, its `id:` the tag.

    A plain Starlette route (not an API operation): a stream has no envelope to document.
    """
    channels = str(request.path_params["channels"])
    realtime = _realtime(request.app.state)
    try:
        access = await _access(
            realtime.db,
            request.headers,
            request.query_params,
            channels,
            request.headers.get("last-event-id"),
        )
        address = request.client.host if request.client else ""
        slot = contextlib.AsyncExitStack()
        await slot.enter_async_context(_stream_slot(realtime, access, address))
    except Refused as refused:
        status, name = _SSE_ERRORS[refused.code]
        body = {
            "meta": {
                "status": status,
                "error": name,
                "error_message": f"{refused.code}: {refused.reason}",
                "code": refused.code,
            },
            "data": {},
        }
        return Response(orjson.dumps(body), status_code=status, media_type="application/json")
    try:
        client = await _subscribe(realtime, access)
    except BaseException:
        await slot.aclose()
        raise
    settings = realtime.settings

    async def events() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        ends = loop.time() + settings.sse_lifetime_seconds
        heartbeat = min(settings.realtime_heartbeat_seconds, settings.sse_lifetime_seconds)
        try:
            yield b"retry: 2000\n\n"
            stream = realtime.hub.stream(client, heartbeat, replay=access.after is not None)
            async for tag, message in stream:
                if message:
                    head = f"id: {tag}\n".encode() if tag else b""
                    yield head + b"data: " + message + b"\n\n"
                else:
                    ping = client.ping()
                    yield b": ping\n\n" + (b"data: " + ping + b"\n\n" if ping else b"")
                if loop.time() >= ends:
                    return  # EventSource reconnects with Last-Event-ID
        finally:
            realtime.hub.unsubscribe(client)
            await slot.aclose()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# `/ext/conversations/{id}/typing`, and the vendor's name `/conversations/{id}/settyping`.
_TYPING_PATH = re.compile(r"(?:/ext)?/conversations/([^/]+)/(?:typing|settyping)/?")


class TypingStream:
    """Pure ASGI middleware: after a successful `POST /ext/conversations/{id}/typing`, the
    draft goes to the conversation's typing channels.

    The endpoint (`threadline.api.routes.ext.typing`) validates and answers; this only
    observes a 200 and reads what the request's authentication and parameter parsing left
    in the scope, so the typing endpoint stays the API's own.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            _TYPING_PATH.fullmatch(scope["path"])
            if scope["type"] == "http" and scope.get("method") == "POST"
            else None
        )
        if match is None:
            await self.app(scope, receive, send)
            return
        status = 0

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, receive, observe)
        if status == 200:
            try:
                await _stream_typing(scope, match.group(1))
            except Exception:  # the answer is sent; a lost typing notice is harmless
                log.exception("typing: not streamed")


async def _stream_typing(scope: Scope, conversation: str) -> None:
    caller = scope.get(CALLER_SCOPE_KEY)
    raw = scope.get(RAW_PARAMS_SCOPE_KEY)
    if not isinstance(caller, Caller) or not isinstance(raw, RawParams):
        return
    realtime = _realtime(scope["app"].state)
    cid = parse_id(conversation)
    state = await service.get_conversation(caller.db, caller.app_id, cid)
    try:
        from_user = parse_from_user(raw.values.get("from_user"))
    except ValueError:  # refused by the endpoint already
        return
    if from_user is not None:
        author: dict[str, object] = {"kind": "user", "id": state.user_id}
    else:
        from_admin = raw.values.get("from_admin")
        who = await admin_author(
            caller, str(from_admin) if from_admin is not None else None, record=False
        )
        author = {"kind": who.kind.value, "id": who.id}
    body = raw.values.get("body")
    realtime.typing(
        app_id=caller.app_id,
        conversation_id=cid,
        user_id=state.user_id,
        author=author,
        body=body if isinstance(body, str) else "",
    )
