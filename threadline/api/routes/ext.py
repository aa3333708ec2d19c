"""Threadline's `/ext/` endpoints: conversation writes the vendor API lacks, user erasure,
and managing the app (admins, channels, tokens)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from pydantic import Field, WithJsonSchema
from starlette.responses import Response

from threadline.api.auth import (
    AS_USER,
    READ,
    AdminCaller,
    Caller,
    ManagerCaller,
    OwnerCaller,
    WriteCaller,
)
from threadline.api.common import (
    DEFAULT_ADMIN,
    AppPath,
    ConversationId,
    Params,
    UserPath,
    admin_author,
    base_url,
    check_admin_form,
    part_ref,
    path_id,
    written_part,
)
from threadline.api.envelope import respond
from threadline.api.errors import InvalidParameter
from threadline.api.params import (
    ApiParams,
    Blank,
    FromUser,
    IdOrZero,
    IdParam,
    OptionalId,
    RandomId,
    StrList,
    TimestampOrZero,
    VBool,
    author,
    blank_choice,
    describe,
    text,
)
from threadline.api.present import Presenter, channel_out
from threadline.api.schemas import (
    AdminRecord,
    AuditEntryOut,
    ChannelOut,
    ConversationOut,
    Empty,
    Envelope,
    PartRef,
    TokenCreated,
    TokenOut,
)
from threadline.api.state import storage_of
from threadline.apps import manage
from threadline.apps import queries as app_q
from threadline.apps.manage import MAX_NAME_CHARS
from threadline.apps.repository import AppRepository
from threadline.apps.service import ALL_SCOPES
from threadline.attachments import service as files
from threadline.audit import service as audit
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.access import Role, parse_role
from threadline.core.enums import (
    AssistantType,
    AuthorKind,
    ChannelType,
    MessageStatus,
    PartType,
)
from threadline.core.model import ConversationState
from threadline.db.schema import admins
from threadline.users import service as users

router = APIRouter(prefix="/ext", tags=["extensions"])

ObjectId = Annotated[str, Path(alias="id", description="The object's id.")]


async def _conversation_answer(
    caller: Caller, state: ConversationState, request: Request
) -> Response:
    async with caller.db.read() as conn:
        (data,) = await Presenter(
            conn, caller.app_id, base_url(request), ids_as_strings=caller.id_as_string
        ).conversations([state], user=False, embeds=False)
    return respond(ConversationOut, data, context=caller.context)


class ReadParams(ApiParams):
    by: Literal["admin", "user"] = Field(
        description="`admin`: the operators read the user's parts; `user`: the reverse "
        "(needs `as-user`).",
        examples=["admin"],
    )


@router.post(
    "/conversations/{id}/read",
    response_model=Envelope[ConversationOut | Empty],
    summary="Mark read",
    openapi_extra=describe(ReadParams, body=True),
)
async def mark_read(
    conversation_id: ConversationId, caller: WriteCaller, p: Params[ReadParams], request: Request
) -> Response:
    """Marks the other side's parts read; answers the conversation's standard fields to a
    token that may read conversations (`conversations-read`), else `{}`."""
    cid = path_id("id", conversation_id)
    if p.by == "user":
        caller.need(AS_USER)
    event: ev.Event = ev.ReadByAdmin() if p.by == "admin" else ev.ReadByUser()
    outcome = await service.perform(caller.db, caller.app_id, cid, event)
    if READ not in caller.scopes:
        return respond(Empty, {}, context=caller.context)
    return await _conversation_answer(caller, outcome.state, request)


class ActorParams(ApiParams):
    from_admin: Annotated[str | None, author(DEFAULT_ADMIN, "the app's sender")] = Field(
        None, description="Who acts; the app's sender by default."
    )
    random_id: RandomId = Field(None, description="Idempotency key: a retry changes nothing.")


@router.post(
    "/conversations/{id}/reopen",
    response_model=Envelope[PartRef | Empty],
    summary="Reopen",
    openapi_extra=describe(ActorParams, body=True),
)
async def reopen(
    conversation_id: ConversationId, caller: WriteCaller, p: Params[ActorParams]
) -> Response:
    """`{id, part_group}` of the `opened` part, or empty data when it was open."""
    cid = path_id("id", conversation_id)
    by = await admin_author(caller, p.from_admin)
    outcome = await service.perform(
        caller.db, caller.app_id, cid, ev.Reopen(by, random_id=p.random_id)
    )
    return part_ref(caller, written_part(outcome, PartType.OPENED))


class DelayParams(ActorParams):
    until: TimestampOrZero = Field(
        description="Snooze until this Unix time (in the future); 0 clears the snooze.",
        examples=[4102444800],
    )


@router.post(
    "/conversations/{id}/delay",
    response_model=Envelope[PartRef | Empty],
    summary="Snooze, or clear the snooze",
    openapi_extra=describe(DelayParams, body=True),
)
async def delay(
    conversation_id: ConversationId, caller: WriteCaller, p: Params[DelayParams]
) -> Response:
    """`{id, part_group}` of the `delayed` part, or empty data when nothing changed."""
    cid = path_id("id", conversation_id)
    by = await admin_author(caller, p.from_admin)
    outcome = await service.perform(
        caller.db, caller.app_id, cid, ev.Delay(p.until, by, random_id=p.random_id)
    )
    return part_ref(caller, written_part(outcome, PartType.DELAYED))


class ChannelParams(ActorParams):
    channel: IdOrZero = Field(
        description="The channel's id; 0 takes it out of any channel.", examples=[0]
    )


@router.post(
    "/conversations/{id}/channel",
    response_model=Envelope[PartRef | Empty],
    summary="Move to a channel",
    openapi_extra=describe(ChannelParams, body=True),
)
async def change_channel(
    conversation_id: ConversationId, caller: WriteCaller, p: Params[ChannelParams]
) -> Response:
    """`{id, part_group}` of the `channel_changed` part, or empty data when nothing changed."""
    cid = path_id("id", conversation_id)
    by = await admin_author(caller, p.from_admin)
    outcome = await service.perform(
        caller.db,
        caller.app_id,
        cid,
        ev.ChangeChannel(p.channel or None, by, random_id=p.random_id),
    )
    return part_ref(caller, written_part(outcome, PartType.CHANNEL_CHANGED))


# A draft is a chat message in the making; the same bound as a body keeps it sane.
MAX_DRAFT_CHARS = 65_536


class TypingParams(ApiParams):
    body: str = Field(
        "", max_length=MAX_DRAFT_CHARS, description="The draft so far.", examples=["Hel"]
    )
    from_user: FromUser = Field(None, description="Typing as the user.")
    from_admin: Annotated[str | None, author(DEFAULT_ADMIN, "the app's sender")] = Field(
        None, description="Typing as this admin; the app's sender by default."
    )


@router.post(
    "/conversations/{id}/typing",
    response_model=Envelope[Empty],
    summary="Someone is typing",
    openapi_extra=describe(TypingParams, body=True),
)
async def typing(
    conversation_id: ConversationId, caller: WriteCaller, p: Params[TypingParams]
) -> Response:
    """Not stored: only streamed to the conversation's realtime channels."""
    cid = path_id("id", conversation_id)
    state = await service.get_conversation(caller.db, caller.app_id, cid)
    if state.removed is not None:
        raise InvalidParameter("id", f"conversation {cid} is removed")
    if p.from_user is not None:
        caller.need(AS_USER)
        if isinstance(p.from_user, int) and p.from_user != state.user_id:
            raise InvalidParameter("from_user", "is not the user of this conversation")
        check_admin_form(p.from_admin)
    else:
        author = await admin_author(caller, p.from_admin, record=False)
        if author.kind is AuthorKind.ADMIN and author.id is not None:
            async with caller.db.read() as conn:
                if not await AppRepository(conn).owned(admins, caller.app_id, author.id):
                    raise InvalidParameter("from_admin", f"admin {author.id} not found")
    return respond(Empty, {}, context=caller.context)


class StatusParams(ApiParams):
    status: MessageStatus = Field(
        description="The starter message's delivery status.", examples=["delivered"]
    )


@router.post(
    "/conversations/{id}/status",
    response_model=Envelope[ConversationOut],
    summary="Delivery status of the starting message",
    openapi_extra=describe(StatusParams, body=True),
)
async def update_status(
    conversation_id: ConversationId, caller: WriteCaller, p: Params[StatusParams], request: Request
) -> Response:
    """Answers the conversation's standard fields."""
    cid = path_id("id", conversation_id)
    outcome = await service.perform(caller.db, caller.app_id, cid, ev.UpdateStatus(p.status))
    return await _conversation_answer(caller, outcome.state, request)


class AssistantParams(ApiParams):
    assistant_type: Annotated[AssistantType | None, Blank, blank_choice(AssistantType)] = Field(
        None,
        description="The bot that takes over; empty or absent hands off to operators.",
        examples=["lead_bot"],
    )
    admin: OptionalId = Field(None, description="On hand-off: assign to this admin.")
    from_admin: Annotated[str | None, author(DEFAULT_ADMIN, "the app's sender")] = Field(
        None, description="Who hands off; the app's sender by default."
    )


@router.post(
    "/conversations/{id}/assistant",
    response_model=Envelope[ConversationOut],
    summary="A bot takes over, or hands off",
    openapi_extra=describe(AssistantParams, body=True),
)
async def assistant(
    conversation_id: ConversationId,
    caller: WriteCaller,
    p: Params[AssistantParams],
    request: Request,
) -> Response:
    """Answers the conversation's standard fields."""
    cid = path_id("id", conversation_id)
    if p.assistant_type is not None:
        if p.admin is not None:
            raise InvalidParameter("admin", "only with a hand-off (no assistant_type)")
        check_admin_form(p.from_admin)
        event: ev.Event = ev.BotTakeOver(p.assistant_type)
    else:
        by = await admin_author(caller, p.from_admin)
        event = ev.BotHandOff(admin_id=p.admin, by=by)
    outcome = await service.perform(caller.db, caller.app_id, cid, event)
    return await _conversation_answer(caller, outcome.state, request)


# ---------------------------------------------------------------------------
# Users


class EraseParams(ApiParams):
    by_user_id: VBool = Field(None, description="The path's id is the site's own user id.")


@router.delete(
    "/users/{id}",
    response_model=Envelope[Empty],
    summary="Erase a user (GDPR)",
    openapi_extra=describe(EraseParams, body=True),
)
async def erase_user(
    user: UserPath, caller: ManagerCaller, p: Params[EraseParams], request: Request
) -> Response:
    """Every conversation of the user is removed (bodies and files erased), props wiped."""
    ref = users.parse_user_ref(user, bool(p.by_user_id))
    removed = await users.erase(caller.db, caller.app_id, ref)
    await files.purge(caller.db, storage_of(request), caller.app_id, removed)
    return respond(Empty, {}, context=caller.context)


# ---------------------------------------------------------------------------
# Managing the app


def _admin_record(row: app_q.AdminRow, role: str) -> dict[str, object]:
    return {
        "id": row.id,
        "name": row.name,
        "avatar": row.avatar or "",
        "type": "admin",
        "name_internal": row.name,
        "email": row.email,
        "created": row.created,
        "role": role,
    }


async def _admin_answer(caller: Caller, row: app_q.AdminRow) -> Response:
    async with caller.db.read() as conn:
        roles = await app_q.admin_roles(conn, caller.app_id, [row.id])
    return respond(AdminRecord, _admin_record(row, roles[row.id]), context=caller.context)


@router.get(
    "/apps/{app}/admins",
    response_model=Envelope[list[AdminRecord]],
    summary="The app's admins",
    openapi_extra=describe(ApiParams, body=False),
)
async def list_admins(app: AppPath, caller: AdminCaller) -> Response:
    app_id = caller.app(app)
    async with caller.db.read() as conn:
        rows = await app_q.list_admins(conn, app_id)
        roles = await app_q.admin_roles(conn, app_id, [r.id for r in rows])
    data = [_admin_record(r, roles[r.id]) for r in rows]
    return respond(list[AdminRecord], data, context=caller.context)


RoleParam = Annotated[
    str,
    WithJsonSchema({"type": "string", "enum": [r.value for r in Role]}),
]


class AdminParams(ApiParams):
    name: Annotated[str, text(MAX_NAME_CHARS, blank=False)] = Field(
        description="Shown to users next to the admin's replies.", examples=["Ann"]
    )
    email: str | None = Field(None, max_length=320, description="Unique in the app.")
    avatar: str | None = Field(
        None, max_length=1024, description="An image URL.", examples=["https://example.com/a.png"]
    )
    password: str | None = Field(
        None,
        max_length=1024,
        description="For the operators' UI: at least 10 characters, not one of the most "
        "common passwords, not the admin's e-mail or name.",
    )
    role: RoleParam = Field(
        "operator",
        description="operator (inbox work), administrator (manages the app and its "
        "operators; needs an administrator or owner) or owner (needs an owner).",
    )
    random_id: RandomId = Field(
        None, description="Idempotency key: a retry adds nothing and answers the first admin."
    )


@router.post(
    "/apps/{app}/admins",
    response_model=Envelope[AdminRecord],
    summary="Add an admin",
    openapi_extra=describe(AdminParams, body=True),
)
async def add_admin(app: AppPath, caller: ManagerCaller, p: Params[AdminParams]) -> Response:
    """With `random_id`, a retry (the same key, per app) adds nothing and answers the first
    request's admin, even if that admin was removed since (it stays removed). The retry must
    send the same name, email, avatar and role (the password is not compared): the key
    reused for another admin is refused (409 IdempotencyKeyReused)."""
    app_id = caller.app(app)
    row = await manage.add_admin(
        caller.db,
        app_id,
        name=p.name,
        email=p.email,
        avatar=p.avatar,
        password=p.password,
        random_id=p.random_id,
        role=parse_role(p.role),
        actor=caller.actor,
    )
    return await _admin_answer(caller, row)


class RoleParams(ApiParams):
    role: RoleParam = Field(description="The admin's new role.", examples=["administrator"])


@router.post(
    "/apps/{app}/admins/{id}/role",
    response_model=Envelope[AdminRecord],
    summary="Change an admin's role",
    openapi_extra=describe(RoleParams, body=True),
)
async def set_role(
    app: AppPath, admin_id: ObjectId, caller: ManagerCaller, p: Params[RoleParams]
) -> Response:
    """Administrators promote and demote operators; owners anyone. The app's last owner
    cannot be demoted. The admin's sessions and tokens act with the new role at once."""
    row = await manage.set_role(
        caller.db, caller.app(app), path_id("id", admin_id), parse_role(p.role), caller.actor
    )
    return await _admin_answer(caller, row)


@router.delete(
    "/apps/{app}/admins/{id}/two-factor",
    response_model=Envelope[AdminRecord],
    summary="Turn an admin's two-step sign-in off",
    openapi_extra=describe(ApiParams, body=False),
)
async def reset_second_factor(app: AppPath, admin_id: ObjectId, caller: ManagerCaller) -> Response:
    """For an admin who lost their authenticator app: they sign in with the password alone
    again, and may enrol anew. Administrators do it for operators; owners for anyone. It is
    in the audit log."""
    row = await manage.reset_second_factor(
        caller.db, caller.app(app), path_id("id", admin_id), caller.actor
    )
    return await _admin_answer(caller, row)


class RemoveParams(ApiParams):
    id: IdParam = Field(description="The object's id.")


@router.delete(
    "/apps/{app}/admins/{id}",
    response_model=Envelope[Empty],
    summary="Remove an admin",
    openapi_extra=describe(ApiParams, body=False),
)
async def remove_admin(app: AppPath, admin_id: ObjectId, caller: ManagerCaller) -> Response:
    """The admin can no longer act or be assigned; past parts keep their name. The tokens
    they issued and their inbox sessions are revoked. Administrators remove operators;
    owners anyone but the app's last owner."""
    await manage.remove_admin(caller.db, caller.app(app), path_id("id", admin_id), caller.actor)
    return respond(Empty, {}, context=caller.context)


@router.delete(
    "/apps/{app}/admins",
    response_model=Envelope[Empty],
    summary="Remove an admin (id as a parameter)",
    openapi_extra=describe(RemoveParams, body=True),
)
async def remove_admin_by_param(
    app: AppPath, caller: ManagerCaller, p: Params[RemoveParams]
) -> Response:
    await manage.remove_admin(caller.db, caller.app(app), p.id, caller.actor)
    return respond(Empty, {}, context=caller.context)


@router.get(
    "/apps/{app}/channels",
    response_model=Envelope[list[ChannelOut]],
    summary="The app's channels",
    openapi_extra=describe(ApiParams, body=False),
)
async def list_channels(app: AppPath, caller: AdminCaller) -> Response:
    app_id = caller.app(app)
    async with caller.db.read() as conn:
        rows = await app_q.list_channels(conn, app_id)
    return respond(list[ChannelOut], [channel_out(r) for r in rows], context=caller.context)


class NewChannelParams(ApiParams):
    name: Annotated[str, text(MAX_NAME_CHARS, blank=False)] = Field(
        description="The channel's name.", examples=["Support"]
    )
    type: Annotated[ChannelType | None, Blank, blank_choice(ChannelType)] = Field(
        None,
        description="The kind of channel, one of the vendor's channel types (`manual`, the "
        "default: a channel the app makes for itself).",
    )
    avatar: str | None = Field(None, max_length=1024, description="An image URL.")
    random_id: RandomId = Field(
        None, description="Idempotency key: a retry adds nothing and answers the first channel."
    )


@router.post(
    "/apps/{app}/channels",
    response_model=Envelope[ChannelOut],
    summary="Add a channel",
    openapi_extra=describe(NewChannelParams, body=True),
)
async def add_channel(app: AppPath, caller: ManagerCaller, p: Params[NewChannelParams]) -> Response:
    """With `random_id`, a retry (the same key, per app) adds nothing and answers the first
    request's channel, even if that channel was removed since (it stays removed). The retry
    must send the same name, type and avatar: the key reused for another channel is refused
    (409 IdempotencyKeyReused)."""
    row = await manage.add_channel(
        caller.db,
        caller.app(app),
        name=p.name,
        type_=(p.type or ChannelType.MANUAL).value,
        avatar=p.avatar,
        random_id=p.random_id,
    )
    return respond(ChannelOut, channel_out(row), context=caller.context)


@router.delete(
    "/apps/{app}/channels/{id}",
    response_model=Envelope[Empty],
    summary="Remove a channel",
    openapi_extra=describe(ApiParams, body=False),
)
async def remove_channel(app: AppPath, channel_id: ObjectId, caller: ManagerCaller) -> Response:
    """Its conversations keep naming it; the app's default channel cannot be removed."""
    await manage.remove_channel(caller.db, caller.app(app), path_id("id", channel_id))
    return respond(Empty, {}, context=caller.context)


@router.delete(
    "/apps/{app}/channels",
    response_model=Envelope[Empty],
    summary="Remove a channel (id as a parameter)",
    openapi_extra=describe(RemoveParams, body=True),
)
async def remove_channel_by_param(
    app: AppPath, caller: ManagerCaller, p: Params[RemoveParams]
) -> Response:
    await manage.remove_channel(caller.db, caller.app(app), p.id)
    return respond(Empty, {}, context=caller.context)


def _token_out(row: app_q.TokenRow) -> dict[str, object]:
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "scopes": row.scopes,
        "created": row.created,
        "expires": row.expires,
        "issuer_admin": row.issuer_admin_id,
        "session": row.session,
    }


@router.get(
    "/apps/{app}/tokens",
    response_model=Envelope[list[TokenOut]],
    summary="The app's tokens (never their text)",
    openapi_extra=describe(ApiParams, body=False),
)
async def list_tokens(app: AppPath, caller: ManagerCaller) -> Response:
    app_id = caller.app(app)
    async with caller.db.read() as conn:
        rows = await app_q.list_tokens(conn, app_id, datetime.now(UTC))
    return respond(list[TokenOut], [_token_out(r) for r in rows], context=caller.context)


class NewTokenParams(ApiParams):
    name: Annotated[str, text(MAX_NAME_CHARS, blank=False)] = Field(
        description="What the token is for.", examples=["CRM integration"]
    )
    scopes: Annotated[
        StrList,
        WithJsonSchema(
            {
                "type": "array",
                "items": {"type": "string", "enum": list(ALL_SCOPES)},
                "minItems": 1,
                "x-tl-list": True,
                "x-tl-note": "A JSON array, or comma-separated (`a,b`).",
            }
        ),
    ] = Field(description="What the token may do.", examples=[["conversations-read"]])
    random_id: RandomId = Field(
        None,
        description="Idempotency key: a retry creates nothing and answers the first token "
        "(its `token` null).",
    )


@router.post(
    "/apps/{app}/tokens",
    response_model=Envelope[TokenCreated],
    summary="Create a token",
    openapi_extra=describe(NewTokenParams, body=True),
)
async def add_token(app: AppPath, caller: ManagerCaller, p: Params[NewTokenParams]) -> Response:
    """The answer's `token` (the token's text) is shown once: only a hash is stored.

    With `random_id`, a retry (the same key, per app) creates nothing and answers the first
    request's token, even if it was revoked since (it stays revoked), with `token` null: its
    text cannot be shown again. If the first answer was lost,
    revoke this token and create another.
    The retry must send the same name and scopes: the key reused for another token is
    refused (409 IdempotencyKeyReused).

    The token is issued by the caller: it acts with the role of the caller's admin (the
    session's, or the one who issued the calling token) and is revoked with that admin.
    """
    row, token = await manage.add_token(
        caller.db,
        caller.app(app),
        name=p.name,
        scopes=p.scopes,
        random_id=p.random_id,
        actor=caller.actor,
    )
    return respond(TokenCreated, {**_token_out(row), "token": token}, context=caller.context)


@router.delete(
    "/apps/{app}/tokens/{id}",
    response_model=Envelope[Empty],
    summary="Revoke a token",
    openapi_extra=describe(ApiParams, body=False),
)
async def revoke_token(app: AppPath, token_id: ObjectId, caller: ManagerCaller) -> Response:
    """Not a token that acts with a higher role than the caller's (an administrator cannot
    revoke an owner's or the command line's tokens)."""
    await manage.revoke_token(caller.db, caller.app(app), path_id("id", token_id), caller.actor)
    return respond(Empty, {}, context=caller.context)


@router.delete(
    "/apps/{app}/tokens",
    response_model=Envelope[Empty],
    summary="Revoke a token (id as a parameter)",
    openapi_extra=describe(RemoveParams, body=True),
)
async def revoke_token_by_param(
    app: AppPath, caller: ManagerCaller, p: Params[RemoveParams]
) -> Response:
    await manage.revoke_token(caller.db, caller.app(app), p.id, caller.actor)
    return respond(Empty, {}, context=caller.context)


class OwnerParams(ApiParams):
    admin: IdParam = Field(description="The admin who owns the token from now on.")


@router.post(
    "/apps/{app}/tokens/{id}/owner",
    response_model=Envelope[TokenOut],
    summary="Re-own a token",
    openapi_extra=describe(OwnerParams, body=True),
)
async def reown_token(
    app: AppPath, token_id: ObjectId, caller: ManagerCaller, p: Params[OwnerParams]
) -> Response:
    """The token acts with `admin`'s role from now on and is revoked with `admin`, not with
    its former issuer: re-own an integration's token before removing its issuer. Neither
    the token's present role nor `admin`'s may be above the caller's; inbox sessions cannot
    be re-owned."""
    row = await manage.reown_token(
        caller.db, caller.app(app), path_id("id", token_id), p.admin, caller.actor
    )
    return respond(TokenOut, _token_out(row), context=caller.context)


class AuditParams(ApiParams):
    after: IdOrZero = Field(
        0, description="Entries older than this one: `meta.next_after` of the previous page."
    )
    count: Annotated[int, Field(ge=1, le=audit.MAX_PAGE)] = Field(
        audit.DEFAULT_PAGE, description=f"Entries per answer, 1-{audit.MAX_PAGE}, newest first."
    )


@router.get(
    "/apps/{app}/audit",
    response_model=Envelope[list[AuditEntryOut]],
    summary="The audit log",
    openapi_extra=describe(AuditParams, body=False),
)
async def audit_log(app: AppPath, caller: OwnerCaller, p: Params[AuditParams]) -> Response:
    """Who created or removed tokens, admins and webhooks, changed roles, re-owned tokens,
    or wrote as another admin with a token, and when; newest first. `meta.next_after` is
    the cursor of the next page (null on the last). Owners only."""
    entries, next_after = await audit.page(
        caller.db, caller.app(app), after=p.after or None, count=p.count
    )
    return respond(
        list[AuditEntryOut],
        [audit.entry_out(e) for e in entries],
        context=caller.context,
        next_after=next_after,
    )
