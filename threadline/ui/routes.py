"""The operators' inbox: the page at `/`, its static files, and signing in (`/ui/session`).

These are plain Starlette routes, outside the API's OpenAPI document: the page and its
sign-in are the inbox's own, and every API operation there is token-authenticated, which
signing in cannot be. Answers of `/ui/session` use the API's `{"meta", "data"}` envelope.

Static files are read once at start. Their URLs carry a digest of their contents
(`/ui/static/<digest>/app.js`), so a browser may keep them for a year and a new release
is fetched at once; the page itself is always revalidated.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from typing import Annotated, NotRequired

from fastapi import FastAPI, Request
from pydantic import Field
from starlette.responses import Response
from typing_extensions import TypedDict

from threadline.api.auth import require
from threadline.api.envelope import error_response, respond
from threadline.api.errors import InvalidParameter
from threadline.api.params import ApiParams, OptionalId, cached_raw_params, params
from threadline.api.schemas import Empty, Id, Ts
from threadline.api.state import api_settings
from threadline.db.engine import Database
from threadline.settings import Settings
from threadline.ui import second_factor as totp_service
from threadline.ui import service

# Extension -> Content-Type of what the inbox ships.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
ASSET_ROOT_MARK = "{{asset_root}}"
# Defence in depth against injected markup: no inline script, no plugin, no framing, and
# connections to this origin only (WebSocket included).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        # blob: the pictures of attachments, fetched with the session's token.
        "img-src 'self' data: blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
MAX_PASSWORD_CHARS = 1024
MAX_EMAIL_CHARS = 320
MAX_CODE_CHARS = 20


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


@dataclass(frozen=True, slots=True)
class Assets:
    """The page and the files it loads, with the digest their URLs carry."""

    page: StaticFile
    files: dict[str, StaticFile]
    digest: str


def load_assets() -> Assets:
    root = resources.files("threadline.ui") / "static"
    files: dict[str, StaticFile] = {}
    pending = [(root, "")]
    while pending:
        folder, prefix = pending.pop()
        for entry in folder.iterdir():
            name = prefix + entry.name
            if entry.is_dir():
                pending.append((entry, name + "/"))
                continue
            suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
            content_type = CONTENT_TYPES.get(suffix)
            if content_type is None:
                continue  # only what the page is made of is served
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            files[name] = StaticFile(body, content_type, etag)
    template = files.pop("index.html")
    digest = hashlib.sha256(
        b"".join(name.encode() + f.etag.encode() for name, f in sorted(files.items()))
    ).hexdigest()[:16]
    body = template.body.replace(ASSET_ROOT_MARK.encode(), f"/ui/static/{digest}".encode())
    page = StaticFile(
        body, template.content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    )
    return Assets(page, files, digest)


def _serve(request: Request, file: StaticFile, cache: str, extra: dict[str, str]) -> Response:
    headers = {"Cache-Control": cache, "ETag": file.etag, **extra}
    if request.headers.get("if-none-match") == file.etag:
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.content_type, headers=headers)


class LoginParams(ApiParams):
    email: Annotated[str, Field(min_length=1, max_length=MAX_EMAIL_CHARS)]
    password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_CHARS)]
    app: OptionalId = Field(None, description="The app, when the e-mail is an admin's of several.")
    code: Annotated[str | None, Field(max_length=MAX_CODE_CHARS)] = Field(
        None, description="The code of the admin's authenticator app, when they have one."
    )


class SessionOut(TypedDict):
    app: Id
    admin: Id
    name: str
    email: str | None
    # When the token stops working (Unix seconds, as every API time); null: never.
    expires: Ts | None
    # owner, administrator or operator: what the inbox offers to manage.
    role: str
    # Whether signing in needs a code of an authenticator app too.
    two_factor: bool
    # What a file sent with a reply may be (THREADLINE_ATTACHMENT_MAX_BYTES and
    # THREADLINE_ATTACHMENT_TYPES): the inbox refuses a file outside them before sending it.
    attachment_max_bytes: int
    attachment_types: list[str]
    token: NotRequired[str]


def _session_out(session: service.Session, request: Request) -> dict[str, object]:
    limits = api_settings(request)
    out: dict[str, object] = {
        "app": session.app_id,
        "admin": session.admin_id,
        "name": session.name,
        "email": session.email,
        "expires": session.expires,
        "role": session.role.value,
        "two_factor": session.two_factor,
        "attachment_max_bytes": limits.attachment_max_bytes,
        "attachment_types": list(limits.attachment_types),
    }
    if session.token is not None:
        out["token"] = session.token
    return out


_token_caller = require()


async def session(request: Request) -> Response:
    """POST: sign in ({email, password} in the body); GET: who is signed in; DELETE: sign out."""
    db: Database = request.app.state.db
    if request.method == "POST":
        for secret in ("password", "code"):
            if secret in request.query_params:
                raise InvalidParameter(secret, "send it in the request body, never in the URL")
        p = await params(LoginParams)(await cached_raw_params(request))
        settings: Settings = request.app.state.settings
        signed_in = await service.log_in(
            db,
            request.app.state.login_guard,
            email=p.email,
            password=p.password,
            app_id=p.app,
            address=request.client.host if request.client else "",
            lifetime=timedelta(hours=settings.inbox_session_hours),
            code=p.code,
        )
        # The session's own times keep their microseconds: `expires` is exact.
        context = {"id_as_string": bool(p.id_as_string), "precise_times": True}
        return respond(SessionOut, _session_out(signed_in, request), context=context)
    caller = await _token_caller(request)
    if request.method == "DELETE":
        await service.log_out(db, caller.app_id, caller.token_id)
        return respond(Empty, {}, context=caller.context)
    found = await service.current(db, caller.app_id, caller.token_id)
    return respond(
        SessionOut, _session_out(found, request), context={**caller.context, "precise_times": True}
    )


class PasswordParams(ApiParams):
    current_password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_CHARS)]
    new_password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_CHARS)]


async def password(request: Request) -> Response:
    """POST: the signed-in operator changes their password ({current_password,
    new_password} in the body); their other inbox sessions end."""
    if request.query_params.keys() & {"current_password", "new_password"}:
        raise InvalidParameter("new_password", "send it in the request body, never in the URL")
    caller = await _token_caller(request)
    p = await params(PasswordParams)(await cached_raw_params(request))
    await service.change_password(
        request.app.state.db,
        request.app.state.login_guard,
        app_id=caller.app_id,
        token_id=caller.token_id,
        current_password=p.current_password,
        new_password=p.new_password,
        address=request.client.host if request.client else "",
    )
    return respond(Empty, {}, context=caller.context)


class ResetParams(ApiParams):
    token: Annotated[str, Field(min_length=1, max_length=200)]
    new_password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_CHARS)]


async def password_reset(request: Request) -> Response:
    """POST: set a password with the one-time token of a `threadline password reset` link
    ({token, new_password} in the body); every inbox session of that admin ends."""
    if request.query_params.keys() & {"token", "new_password"}:
        raise InvalidParameter("token", "send it in the request body, never in the URL")
    p = await params(ResetParams)(await cached_raw_params(request))
    await service.reset_password(request.app.state.db, p.token, p.new_password)
    return respond(Empty, {}, context={"id_as_string": False})


class EnrolmentOut(TypedDict):
    # The base32 secret, to type into an authenticator app; shown this once.
    secret: str
    # The same as an `otpauth://` URI, and as a QR code of it (an SVG `data:` URI).
    uri: str
    qr: str


class CodeParams(ApiParams):
    code: Annotated[str, Field(min_length=1, max_length=MAX_CODE_CHARS)]


class DisableParams(ApiParams):
    code: Annotated[str | None, Field(max_length=MAX_CODE_CHARS)] = None
    password: Annotated[str | None, Field(max_length=MAX_PASSWORD_CHARS)] = None


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


async def second_factor(request: Request) -> Response:
    """The session's own second factor. POST: a new secret to enrol (shown once); DELETE:
    turn it off ({code} or {password} in the body)."""
    if request.query_params.keys() & {"code", "password"}:
        raise InvalidParameter("code", "send it in the request body, never in the URL")
    caller = await _token_caller(request)
    db: Database = request.app.state.db
    if request.method == "POST":
        await params(ApiParams)(await cached_raw_params(request))
        account = await service.session_account(db, caller.app_id, caller.token_id)
        enrolment = await totp_service.enrol(db, caller.app_id, account.admin_id)
        body = {"secret": enrolment.secret, "uri": enrolment.uri, "qr": enrolment.qr}
        return respond(EnrolmentOut, body, context=caller.context)
    p = await params(DisableParams)(await cached_raw_params(request))
    await service.disable_second_factor(
        db,
        request.app.state.login_guard,
        app_id=caller.app_id,
        token_id=caller.token_id,
        code=p.code,
        password=p.password,
        address=_address(request),
    )
    return respond(Empty, {}, context=caller.context)


async def second_factor_confirm(request: Request) -> Response:
    """POST {code}: turn the enrolled second factor on; the admin's other sessions end."""
    if "code" in request.query_params:
        raise InvalidParameter("code", "send it in the request body, never in the URL")
    caller = await _token_caller(request)
    p = await params(CodeParams)(await cached_raw_params(request))
    await service.confirm_second_factor(
        request.app.state.db,
        request.app.state.login_guard,
        app_id=caller.app_id,
        token_id=caller.token_id,
        code=p.code,
        address=_address(request),
    )
    return respond(Empty, {}, context=caller.context)


def register(app: FastAPI) -> None:
    """Serve the inbox at `/` and its sign-in at `/ui/session`."""
    assets = load_assets()
    app.state.login_guard = service.LoginGuard()

    async def page(request: Request) -> Response:
        return _serve(request, assets.page, REVALIDATE, PAGE_HEADERS)

    async def static(request: Request) -> Response:
        file = assets.files.get(str(request.path_params["path"]))
        if file is None:
            return error_response("NotFound", "no such file", 404)
        fresh = request.path_params["digest"] == assets.digest
        cache = IMMUTABLE if fresh else REVALIDATE
        return _serve(request, file, cache, {"X-Content-Type-Options": "nosniff"})

    app.add_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_route(
        "/ui/static/{digest}/{path:path}", static, methods=["GET"], include_in_schema=False
    )
    app.add_route(
        "/ui/session", session, methods=["GET", "POST", "DELETE"], include_in_schema=False
    )
    app.add_route("/ui/password", password, methods=["POST"], include_in_schema=False)
    app.add_route("/ui/password/reset", password_reset, methods=["POST"], include_in_schema=False)
    app.add_route(
        "/ui/two-factor", second_factor, methods=["POST", "DELETE"], include_in_schema=False
    )
    app.add_route(
        "/ui/two-factor/confirm", second_factor_confirm, methods=["POST"], include_in_schema=False
    )
