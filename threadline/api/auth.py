"""Who is calling: the token (three ways to send it), its app and scopes, and request flags."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from threadline.api.errors import (
    AuthenticationFailed,
    InvalidParameter,
    PermissionDenied,
    Throttled,
)
from threadline.api.params import (
    RawParams,
    cached_raw_params,
    parse_id,
    parse_version,
    vendor_bool,
)
from threadline.api.state import rate_limiter_of
from threadline.apps.service import authenticate
from threadline.core.access import Actor, ActorKind, Role, need
from threadline.core.errors import NotFound
from threadline.db.engine import Database

READ = "conversations-read"
WRITE = "conversations-write"
USER_READ = "user-read"
AS_USER = "as-user"
SEND_ONE = "messages-manual-send-one"
ADMIN = "admin"

SELF_APP = "$self_app"
SCOPES_ATTRIBUTE = "threadline_scopes"
ROLE_ATTRIBUTE = "threadline_role"
VERSION_SCOPE_KEY = "threadline.version"


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated token and the request's flags."""

    db: Database
    app_id: int
    token_id: int
    scopes: frozenset[str]
    version: int
    id_as_string: bool
    # The role the token acts with (its issuing admin's; owner for the command line's), the
    # issuing admin, and whether it is that admin's inbox session.
    role: Role = Role.OWNER
    issuer_admin_id: int | None = None
    session: bool = False
    precise_times: bool = False

    def need(self, scope: str) -> None:
        if scope not in self.scopes:
            raise PermissionDenied(f"the token lacks the {scope!r} scope")

    def need_role(self, role: Role) -> None:
        need(self.actor, role, "this")

    @property
    def session_admin(self) -> int | None:
        """The admin an inbox session acts as; None for any other token."""
        return self.issuer_admin_id if self.session else None

    @property
    def actor(self) -> Actor:
        kind = ActorKind.ADMIN if self.session else ActorKind.TOKEN
        return Actor(kind, self.role, self.issuer_admin_id, self.token_id)

    def app(self, app: str) -> int:
        """The app named in a path: `$self_app` or the token's own id; any other is unknown."""
        if app == SELF_APP:
            return self.app_id
        try:
            ident = parse_id(app)
        except ValueError as exc:
            raise InvalidParameter("app", str(exc)) from None
        if ident != self.app_id:
            raise NotFound("app", app)
        return ident

    @property
    def context(self) -> dict[str, Any]:
        """The serialisation context of this request's answer."""
        return {"id_as_string": self.id_as_string, "precise_times": self.precise_times}


def _header_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() not in ("token", "bearer") or not credentials.strip():
        raise AuthenticationFailed("Authorization: expected 'Token <token>' or 'Bearer <token>'")
    return credentials.strip()


def _flags(request: Request, raw: RawParams) -> tuple[int, bool, bool]:
    version = request.scope.get(VERSION_SCOPE_KEY)
    if version is None:
        try:
            version = parse_version(raw.values.get("version")) or 2
        except ValueError as exc:
            raise InvalidParameter("version", str(exc)) from None
    try:
        id_as_string = bool(vendor_bool(raw.values.get("id_as_string")))
    except ValueError as exc:
        raise InvalidParameter("id_as_string", str(exc)) from None
    try:
        precise_times = bool(vendor_bool(raw.values.get("precise_times")))
    except ValueError as exc:
        raise InvalidParameter("precise_times", str(exc)) from None
    return int(version), id_as_string, precise_times


def require(*scopes: str, role: Role | None = None) -> Callable[[Request], Awaitable[Caller]]:
    """A dependency: authenticate the request and check that the token has `scopes` and,
    with `role`, that it acts with that role or a higher one (a second, independent gate)."""

    async def dependency(request: Request) -> Caller:
        token = _header_token(request)
        if token is None:
            raw = await cached_raw_params(request)
            value = raw.values.get("auth_token")
            if value is None:
                raise AuthenticationFailed("no API token: send 'Authorization: Token <token>'")
            if not isinstance(value, str) or not value.strip():
                raise AuthenticationFailed("auth_token: must be a token")
            token = value.strip()
        db: Database = request.app.state.db
        record = await authenticate(db, token)
        if record is None:
            raise AuthenticationFailed("the API token is not valid")
        limiter = rate_limiter_of(request)
        if limiter is not None:
            retry_after = await limiter.hit(record.id)
            if retry_after is not None:
                raise Throttled(retry_after)
        raw = await cached_raw_params(request)
        version, id_as_string, precise_times = _flags(request, raw)
        caller = Caller(
            db,
            record.app_id,
            record.id,
            record.scopes,
            version,
            id_as_string,
            record.role,
            record.issuer_admin_id,
            record.session,
            precise_times,
        )
        for scope in scopes:
            caller.need(scope)
        if role is not None:
            caller.need_role(role)
        request.scope["threadline.caller"] = caller
        return caller

    setattr(dependency, SCOPES_ATTRIBUTE, scopes)  # read by the OpenAPI document
    setattr(dependency, ROLE_ATTRIBUTE, role)
    return dependency


ReadCaller = Annotated[Caller, Depends(require(READ))]
WriteCaller = Annotated[Caller, Depends(require(WRITE))]
SendCaller = Annotated[Caller, Depends(require(SEND_ONE))]
UserWriteCaller = Annotated[Caller, Depends(require(WRITE, AS_USER))]
# The `admin` scope with any role: the lists of admins and channels.
AdminCaller = Annotated[Caller, Depends(require(ADMIN))]
# Managing the app: the `admin` scope and the administrator (or owner) role.
ManagerCaller = Annotated[Caller, Depends(require(ADMIN, role=Role.ADMINISTRATOR))]
# The owner's own: the audit log.
OwnerCaller = Annotated[Caller, Depends(require(ADMIN, role=Role.OWNER))]
